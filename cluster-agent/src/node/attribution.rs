//! Which pod a process, network namespace or cgroup belongs to, from the kubelet's cgroup
//! layout: `.../kubepods/<qos>/pod<uid>/<container>` with the cgroupfs driver and
//! `.../kubepods-<qos>-pod<uid_with_underscores>.slice/<runtime>-<id>.scope` with the systemd
//! driver.
//!
//! The mapper gets the pod UID as a hint, so it need not guess from IPs alone (NAT, reused IPs).

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use model::observation::PodHint;

use super::proc_scan;

/// The pod UID in one cgroup path, if it is a pod's cgroup or below one.
pub fn pod_uid_from_cgroup_path(path: &str) -> Option<String> {
    if !path.contains("kubepods") {
        return None;
    }
    path.split('/').find_map(pod_uid_from_segment)
}

/// The pod UID in the contents of `/proc/<pid>/cgroup` (`hierarchy:controllers:path` lines,
/// cgroup v1, v2 or both).
pub fn pod_uid_from_cgroup_file(contents: &str) -> Option<String> {
    contents
        .lines()
        .filter_map(|line| line.splitn(3, ':').nth(2))
        .find_map(pod_uid_from_cgroup_path)
}

/// The pod of process `pid` under `proc_root`, if it runs in one.
pub fn pod_of_pid(proc_root: &Path, pid: u32) -> Option<PodHint> {
    let contents = std::fs::read_to_string(proc_root.join(pid.to_string()).join("cgroup")).ok()?;
    pod_uid_from_cgroup_file(&contents).map(pod_hint)
}

fn pod_hint(uid: String) -> PodHint {
    PodHint { uid: Some(uid), namespace: None, name: None }
}

fn pod_uid_from_segment(segment: &str) -> Option<String> {
    if let Some(slice) = segment.strip_suffix(".slice") {
        // systemd: kubepods-besteffort-pod<uid>.slice, with '-' in the UID written as '_'.
        let (_, uid) = slice.rsplit_once("-pod")?;
        return valid_uid(&uid.replace('_', "-"));
    }
    valid_uid(segment.strip_prefix("pod")?)
}

/// A pod UID: a UUID, or the 32 hex digits the kubelet gives static pods.
fn valid_uid(uid: &str) -> Option<String> {
    let bytes = uid.as_bytes();
    let uuid = bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, b)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                *b == b'-'
            } else {
                b.is_ascii_hexdigit()
            }
        });
    let static_hash = bytes.len() == 32 && bytes.iter().all(u8::is_ascii_hexdigit);
    (uuid || static_hash).then(|| uid.to_ascii_lowercase())
}

// === Index ===

/// Pod UIDs by network-namespace inode and by cgroup id, built from `/proc` and the cgroup2
/// mount.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodIndex {
    by_netns: HashMap<u64, String>,
    by_cgroup_id: HashMap<u64, String>,
    /// The node's own addresses, on every interface (a CNI bridge's, a tunnel's), which the
    /// node object does not list: a connection from one of them is the node's, not the internet's.
    host_ips: HashSet<IpAddr>,
}

impl PodIndex {
    /// Scans every process under `proc_root` and, when given, the cgroup2 hierarchy mounted at
    /// `cgroup2_root` (see [`cgroup2_mount`]).
    pub fn build(proc_root: &Path, cgroup2_root: Option<&Path>) -> Self {
        PodIndex {
            by_netns: netns_pods(proc_root),
            by_cgroup_id: cgroup2_root.map(cgroup_id_pods).unwrap_or_default(),
            host_ips: host_addresses(proc_root),
        }
    }

    /// Whether `ip` is one of the node's own addresses.
    pub fn is_host_address(&self, ip: IpAddr) -> bool {
        self.host_ips.contains(&ip.to_canonical())
    }

    pub fn pod_for_netns(&self, netns: u64) -> Option<PodHint> {
        self.by_netns.get(&netns).cloned().map(pod_hint)
    }

    /// `cgroup_id` as `bpf_get_current_cgroup_id` returns it: the inode of the cgroup2 directory.
    pub fn pod_for_cgroup_id(&self, cgroup_id: u64) -> Option<PodHint> {
        self.by_cgroup_id.get(&cgroup_id).cloned().map(pod_hint)
    }

    pub fn netns_count(&self) -> usize {
        self.by_netns.len()
    }

    pub fn cgroup_count(&self) -> usize {
        self.by_cgroup_id.len()
    }
}

/// The addresses of the node's own network namespace (pid 1's), from `net/fib_trie` (IPv4:
/// the `/32 host LOCAL` entries) and `net/if_inet6` (IPv6). Empty when unreadable.
pub fn host_addresses(proc_root: &Path) -> HashSet<IpAddr> {
    let net = proc_root.join("1/net");
    let mut found = HashSet::new();
    if let Ok(trie) = std::fs::read_to_string(net.join("fib_trie")) {
        let mut last: Option<IpAddr> = None;
        for line in trie.lines() {
            let line = line.trim();
            if let Some(address) = line.strip_prefix("|-- ").or_else(|| line.strip_prefix("+-- ")) {
                last = address.split('/').next().and_then(|a| a.parse().ok());
            } else if line.contains("host LOCAL") {
                found.extend(last);
            }
        }
    }
    if let Ok(inet6) = std::fs::read_to_string(net.join("if_inet6")) {
        for hex in inet6.lines().filter_map(|l| l.split_whitespace().next()) {
            if let Ok(bits) = u128::from_str_radix(hex, 16) {
                found.insert(IpAddr::V6(std::net::Ipv6Addr::from(bits)).to_canonical());
            }
        }
    }
    found
}

/// Network-namespace inode → pod UID, for namespaces whose processes all belong to one pod.
///
/// The namespace of pid 1 is the node's own, shared by every hostNetwork pod: it never names a
/// pod, nor does a namespace holding processes of two pods. Processes outside any pod (a debug
/// shell entered into the namespace) do not change the answer.
pub fn netns_pods(proc_root: &Path) -> HashMap<u64, String> {
    let Ok(dir) = std::fs::read_dir(proc_root) else { return HashMap::new() };
    let host_netns = proc_scan::netns_inode(proc_root, 1).ok();
    let mut seen: HashMap<u64, Option<String>> = HashMap::new();
    for pid in dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok()) {
        let Ok(netns) = proc_scan::netns_inode(proc_root, pid) else { continue };
        if Some(netns) == host_netns {
            continue;
        }
        let Some(uid) = std::fs::read_to_string(proc_root.join(pid.to_string()).join("cgroup"))
            .ok()
            .and_then(|c| pod_uid_from_cgroup_file(&c))
        else {
            continue;
        };
        seen.entry(netns)
            .and_modify(|known| {
                if known.as_deref() != Some(uid.as_str()) {
                    *known = None
                }
            })
            .or_insert(Some(uid));
    }
    seen.into_iter().filter_map(|(netns, uid)| Some((netns, uid?))).collect()
}

/// Cgroup id (directory inode) → pod UID for every cgroup at or below a pod's, under the
/// cgroup2 hierarchy mounted at `root`. Symlinks are not followed.
pub fn cgroup_id_pods(root: &Path) -> HashMap<u64, String> {
    const MAX_DEPTH: usize = 16;
    let mut pods = HashMap::new();
    let mut stack: Vec<(PathBuf, String, usize)> = vec![(root.to_path_buf(), String::new(), 0)];
    while let Some((dir, relative, depth)) = stack.pop() {
        if let Some(uid) = pod_uid_from_cgroup_path(&relative) {
            if let Ok(meta) = std::fs::symlink_metadata(&dir) {
                pods.insert(meta.ino(), uid);
            }
        }
        if depth == MAX_DEPTH {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let Some(name) = entry.file_name().to_str().map(str::to_string) else { continue };
            stack.push((entry.path(), format!("{relative}/{name}"), depth + 1));
        }
    }
    pods
}

/// Where the cgroup2 hierarchy is mounted, from `<proc_root>/mounts` (on a hybrid-v1 node,
/// e.g. `/sys/fs/cgroup/unified`).
pub fn cgroup2_mount(proc_root: &Path) -> Option<PathBuf> {
    let mounts = std::fs::read_to_string(proc_root.join("mounts")).ok()?;
    mounts.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (_source, target, fstype) = (fields.next()?, fields.next()?, fields.next()?);
        (fstype == "cgroup2").then(|| PathBuf::from(unescape_mount_path(target)))
    })
}

/// `/proc/mounts` writes space, tab, newline and backslash in paths as `\ooo` octal escapes.
pub(crate) fn unescape_mount_path(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match octal.and_then(|d| u8::from_str_radix(std::str::from_utf8(d).ok()?, 8).ok()) {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_nodes_own_addresses_come_from_fib_trie_and_if_inet6() {
        let root = std::env::temp_dir().join(format!("host-addrs-{}", std::process::id()));
        std::fs::create_dir_all(root.join("1/net")).unwrap();
        let trie = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n     +-- 10.213.1.0/24 2 0 2\n        |-- 10.213.1.0\n           /24 link UNICAST\n        |-- 10.213.1.1\n           /32 host LOCAL\n        |-- 10.213.1.255\n           /32 link BROADCAST\nLocal:\n     |-- 127.0.0.1\n        /32 host LOCAL\n";
        std::fs::write(root.join("1/net/fib_trie"), trie).unwrap();
        std::fs::write(
            root.join("1/net/if_inet6"),
            "fd000000000000000000000000000001 03 40 00 80 cni0\n",
        )
        .unwrap();
        let found = host_addresses(&root);
        let expected: HashSet<IpAddr> =
            ["10.213.1.1", "127.0.0.1", "fd00::1"].iter().map(|a| a.parse().unwrap()).collect();
        assert_eq!(found, expected);
        std::fs::remove_dir_all(&root).unwrap();
        // This machine's own /proc: its loopback address at least.
        let real = host_addresses(Path::new("/proc"));
        assert!(real.contains(&"127.0.0.1".parse::<IpAddr>().unwrap()), "{real:?}");
    }

    use std::os::unix::fs::symlink;

    use super::*;

    const UID_A: &str = "3f2a6b1c-0d4e-4f5a-8b6c-7d8e9f0a1b2c";
    const UID_B: &str = "a1b2c3d4-e5f6-4789-abcd-ef0123456789";
    const UID_C: &str = "0badc0de-0000-4000-8000-000000000001";
    const STATIC_UID: &str = "6f1e6e1c2bd8b9b8d2e5f1a7f5b0c2e3";

    fn underscored(uid: &str) -> String {
        uid.replace('-', "_")
    }

    #[test]
    fn cgroupfs_driver_paths() {
        assert_eq!(
            pod_uid_from_cgroup_path(&format!("/kubepods/burstable/pod{UID_A}/0123abcd")),
            Some(UID_A.into())
        );
        assert_eq!(
            pod_uid_from_cgroup_path(&format!("/kubepods/pod{UID_A}/0123abcd")),
            Some(UID_A.into())
        );
        assert_eq!(
            pod_uid_from_cgroup_path(&format!("/kubepods/besteffort/pod{STATIC_UID}")),
            Some(STATIC_UID.into())
        );
        assert_eq!(
            pod_uid_from_cgroup_path(&format!("/kubepods/burstable/pod{}/x", UID_A.to_uppercase())),
            Some(UID_A.into())
        );
    }

    #[test]
    fn systemd_driver_paths() {
        let u = underscored(UID_B);
        assert_eq!(
            pod_uid_from_cgroup_path(&format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice/cri-containerd-5e6f.scope")),
            Some(UID_B.into())
        );
        assert_eq!(
            pod_uid_from_cgroup_path(&format!(
                "/kubepods.slice/kubepods-pod{u}.slice/crio-5e6f.scope"
            )),
            Some(UID_B.into())
        );
        // kind and other nested kubelets prefix the slices.
        assert_eq!(
            pod_uid_from_cgroup_path(&format!(
                "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{u}.slice/cri-containerd-1.scope"
            )),
            Some(UID_B.into())
        );
    }

    #[test]
    fn paths_that_are_not_a_pod() {
        for path in [
            "/",
            "/init.scope",
            "/system.slice/containerd.service",
            "/kubepods.slice/kubepods-burstable.slice",
            "/kubepods/burstable",
            // A UID-looking name outside the kubelet's tree.
            &format!("/user.slice/pod{UID_A}"),
            "/kubepods/burstable/podnot-a-uid/x",
            "/kubepods.slice/kubepods-burstable-pod1234.slice",
        ] {
            assert_eq!(pod_uid_from_cgroup_path(path), None, "{path}");
        }
    }

    #[test]
    fn cgroup_files_of_v1_v2_and_hybrid_hosts() {
        let v2 = format!("0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-9a.scope\n", underscored(UID_A));
        assert_eq!(pod_uid_from_cgroup_file(&v2), Some(UID_A.into()));
        let hybrid = format!("12:memory:/kubepods/burstable/pod{UID_B}/abc\n11:cpu,cpuacct:/kubepods/burstable/pod{UID_B}/abc\n0::/\n");
        assert_eq!(pod_uid_from_cgroup_file(&hybrid), Some(UID_B.into()));
        assert_eq!(pod_uid_from_cgroup_file("9:name=systemd:/\n0::/\n"), None);
        assert_eq!(pod_uid_from_cgroup_file("garbage"), None);
    }

    // === Fake /proc and cgroup trees ===

    struct TempTree(PathBuf);

    impl TempTree {
        fn new(tag: &str) -> Self {
            let root =
                std::env::temp_dir().join(format!("attribution-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&root);
            std::fs::create_dir_all(&root).unwrap();
            TempTree(root)
        }

        fn process(&self, pid: u32, netns: u64, cgroup: &str) {
            let dir = self.0.join(pid.to_string());
            std::fs::create_dir_all(dir.join("ns")).unwrap();
            symlink(format!("net:[{netns}]"), dir.join("ns/net")).unwrap();
            std::fs::write(dir.join("cgroup"), cgroup).unwrap();
        }

        fn dir(&self, relative: &str) -> u64 {
            let path = self.0.join(relative);
            std::fs::create_dir_all(&path).unwrap();
            std::fs::metadata(&path).unwrap().ino()
        }
    }

    impl Drop for TempTree {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn netns_index_from_a_fake_proc() {
        let proc = TempTree::new("proc");
        let systemd_b = format!("0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-77.scope\n", underscored(UID_B));
        proc.process(1, 4026531840, "0::/init.scope\n");
        // Pod A (cgroupfs driver): its sandbox and a container share namespace 500.
        proc.process(10, 500, &format!("4:memory:/kubepods/burstable/pod{UID_A}/sandbox\n0::/\n"));
        proc.process(11, 500, &format!("4:memory:/kubepods/burstable/pod{UID_A}/app\n0::/\n"));
        // Someone ran a shell inside pod A's namespace: it does not belong to another pod.
        proc.process(12, 500, "0::/user.slice/session-1.scope\n");
        // Pod B (systemd driver).
        proc.process(20, 600, &systemd_b);
        // Pod C uses the host network: the node's namespace is nobody's pod.
        proc.process(30, 4026531840, &format!("0::/kubepods/besteffort/pod{UID_C}/c\n"));
        // Two pods in one namespace: ambiguous, so no answer.
        proc.process(40, 700, &format!("0::/kubepods/pod{UID_A}/x\n"));
        proc.process(41, 700, &format!("0::/kubepods/pod{UID_C}/y\n"));
        // No pod at all.
        proc.process(50, 800, "0::/system.slice/sshd.service\n");

        let index = PodIndex::build(&proc.0, None);
        assert_eq!(index.pod_for_netns(500).and_then(|p| p.uid), Some(UID_A.into()));
        assert_eq!(index.pod_for_netns(600).and_then(|p| p.uid), Some(UID_B.into()));
        for netns in [4026531840, 700, 800, 999] {
            assert_eq!(index.pod_for_netns(netns), None, "netns {netns}");
        }
        assert_eq!(index.netns_count(), 2);
        assert_eq!(
            pod_of_pid(&proc.0, 20),
            Some(PodHint { uid: Some(UID_B.into()), namespace: None, name: None })
        );
        assert_eq!(pod_of_pid(&proc.0, 30).and_then(|p| p.uid), Some(UID_C.into()));
        assert_eq!(pod_of_pid(&proc.0, 1), None);
        assert_eq!(pod_of_pid(&proc.0, 4242), None);
    }

    #[test]
    fn cgroup_ids_from_a_fake_cgroup2_tree_with_both_drivers() {
        let tree = TempTree::new("cgroup2");
        let u = underscored(UID_B);
        let systemd_pod = tree.dir(&format!(
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice"
        ));
        let systemd_container = tree.dir(&format!("kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice/cri-containerd-abc.scope"));
        let qos = tree.dir("kubepods.slice/kubepods-burstable.slice");
        let cgroupfs_pod = tree.dir(&format!("kubepods/besteffort/pod{UID_A}"));
        let cgroupfs_container = tree.dir(&format!("kubepods/besteffort/pod{UID_A}/0123456789ab"));
        let system = tree.dir("system.slice/containerd.service");
        std::fs::write(tree.0.join("kubepods/besteffort/cgroup.procs"), "").unwrap();
        // A symlink into a pod is not a cgroup and is not followed.
        symlink(
            tree.0.join(format!("kubepods/besteffort/pod{UID_A}")),
            tree.0.join("system.slice/link"),
        )
        .unwrap();

        let pods = cgroup_id_pods(&tree.0);
        assert_eq!(pods.len(), 4, "{pods:?}");
        let index = PodIndex { by_netns: HashMap::new(), by_cgroup_id: pods, ..Default::default() };
        for (id, uid) in [
            (systemd_pod, UID_B),
            (systemd_container, UID_B),
            (cgroupfs_pod, UID_A),
            (cgroupfs_container, UID_A),
        ] {
            assert_eq!(index.pod_for_cgroup_id(id).and_then(|p| p.uid).as_deref(), Some(uid));
        }
        assert_eq!(index.pod_for_cgroup_id(qos), None);
        assert_eq!(index.pod_for_cgroup_id(system), None);
    }

    #[test]
    fn cgroup2_mount_from_mounts() {
        let proc = TempTree::new("mounts");
        std::fs::write(
            proc.0.join("mounts"),
            "tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0\ncgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0\ncgroup2 /sys/fs/cgroup/my\\040unified cgroup2 rw,relatime 0 0\n",
        )
        .unwrap();
        assert_eq!(cgroup2_mount(&proc.0), Some(PathBuf::from("/sys/fs/cgroup/my unified")));
        std::fs::write(proc.0.join("mounts"), "proc /proc proc rw 0 0\n").unwrap();
        assert_eq!(cgroup2_mount(&proc.0), None);
        assert_eq!(unescape_mount_path("a\\134b\\011c\\9"), "a\\b\tc\\9");
    }
}
