//! Network namespaces standing in for pods, as root: two joined by a veth pair, pods on a
//! bridge, and threads that run inside one.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;

/// Runs `ip <args>` (iproute2), panicking with its stderr if it fails.
pub fn ip(args: &[&str]) {
    if let Err(e) = try_ip(args) {
        panic!("{e:#}");
    }
}

/// Runs `f` on a new thread that has entered network namespace `ns` (from `ip netns add`);
/// sockets it opens stay there. The thread is unnamed: its comm is the test process's.
pub fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> JoinHandle<T> {
    in_netns_with(std::thread::Builder::new(), ns, f)
}

/// [`in_netns`] on a thread named `name`, which becomes its comm (what the kernel reports as
/// the process name of the sockets it opens).
pub fn in_netns_named<T: Send + 'static>(
    ns: &str,
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> JoinHandle<T> {
    in_netns_with(std::thread::Builder::new().name(name.into()), ns, f)
}

fn in_netns_with<T: Send + 'static>(
    thread: std::thread::Builder,
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    thread
        .spawn(move || {
            let netns = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET)
                .unwrap_or_else(|e| panic!("setns {path}: {e}"));
            f()
        })
        .expect("starting a thread")
}

/// The inode of network namespace `ns`: the id the kernel (and eBPF) reports for it.
pub fn netns_inode(ns: &str) -> u64 {
    std::fs::metadata(format!("/run/netns/{ns}"))
        .unwrap_or_else(|e| panic!("/run/netns/{ns}: {e}"))
        .ino()
}

/// Two network namespaces `a` and `b` joined by a veth pair, `veth0` in each, with it and `lo`
/// up. Dropping it kills and reaps [`children`](Self::children), removes the cgroups handed to
/// [`remove_on_drop`](Self::remove_on_drop) and deletes the namespaces, also when a test fails.
pub struct NetnsPair {
    pub a: String,
    pub b: String,
    /// Processes running in the namespaces (they keep a namespace alive).
    pub children: Vec<Child>,
    cgroups: Vec<PathBuf>,
}

impl NetnsPair {
    /// Namespaces named `a` and `b` (unique on the machine) with the addresses `a_addrs` and
    /// `b_addrs` (`address/prefix`; IPv6 ones without duplicate address detection, so they are
    /// usable at once).
    pub fn new(a: &str, b: &str, a_addrs: &[&str], b_addrs: &[&str]) -> NetnsPair {
        let pair = NetnsPair {
            a: a.to_owned(),
            b: b.to_owned(),
            children: Vec::new(),
            cgroups: Vec::new(),
        };
        ip(&["netns", "add", a]);
        ip(&["netns", "add", b]);
        ip(&[
            "link", "add", "veth0", "netns", a, "type", "veth", "peer", "name", "veth0", "netns", b,
        ]);
        for (ns, addrs) in [(a, a_addrs), (b, b_addrs)] {
            for addr in addrs {
                let mut args = vec!["-n", ns, "addr", "add", addr, "dev", "veth0"];
                if addr.contains(':') {
                    args.push("nodad");
                }
                ip(&args);
            }
            ip(&["-n", ns, "link", "set", "veth0", "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        pair
    }

    /// Starts `command` in namespace `ns` with no stdio, through `ip netns exec` (which execs
    /// it: the pid is the command's); it runs until the pair is dropped.
    pub fn spawn(&mut self, ns: &str, command: &[&str]) -> u32 {
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(command)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?} in {ns}: {e}"));
        let pid = child.id();
        self.children.push(child);
        pid
    }

    /// Removes the (empty, by then) cgroup directory `dir` on drop, after the children are gone;
    /// directories are removed in the order given.
    pub fn remove_on_drop(&mut self, dir: PathBuf) {
        self.cgroups.push(dir);
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for dir in &self.cgroups {
            let _ = std::fs::remove_dir(dir);
        }
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).stderr(Stdio::null()).status();
        }
    }
}

/// Pods on one bridge, as a CNI makes them: a bridge `<tag>-br`, and per pod a namespace
/// `<tag>-<n>` whose `eth0` is a veth `<tag>-<n>v` on the bridge. Dropping it removes the veths,
/// the namespaces and the bridge (the processes in them must be gone first). Errors name the
/// command that failed; creating anything needs root and iproute2.
pub struct Bridge {
    tag: String,
    pods: Vec<String>,
}

impl Bridge {
    /// The longest tag: interface names are at most 15 characters, `<tag>-<n>v` among them.
    pub const MAX_TAG: usize = 11;
    /// The most pods a bridge holds (one digit in the names).
    pub const MAX_PODS: usize = 10;

    /// The bridge's name for `tag`.
    pub fn bridge_name(tag: &str) -> String {
        format!("{tag}-br")
    }

    /// The namespace and host-side veth of pod `n` on bridge `tag`.
    pub fn pod_names(tag: &str, n: usize) -> (String, String) {
        let ns = format!("{tag}-{n}");
        let veth = format!("{ns}v");
        (ns, veth)
    }

    /// A bridge for `tag` (unique on the machine: whatever already carries its names is removed
    /// first).
    pub fn new(tag: &str) -> anyhow::Result<Bridge> {
        anyhow::ensure!(
            tag.len() <= Self::MAX_TAG,
            "bridge tag {tag} is longer than {} characters",
            Self::MAX_TAG
        );
        let bridge = Self::bridge_name(tag);
        let _ = quiet_ip(&["link", "del", &bridge]);
        try_ip(&["link", "add", &bridge, "type", "bridge"])?;
        let made = Bridge { tag: tag.to_owned(), pods: Vec::new() };
        try_ip(&["link", "set", &bridge, "up"])?;
        Ok(made)
    }

    /// A watchdog ([`crate::process::spawn_watchdog`], named `name`) for a test that makes
    /// `pods` pods on bridge `tag` and keeps its files in `dir`: should the test's process die
    /// without unwinding (SIGTERM, SIGKILL), it kills what runs in the pods and the process
    /// whose id is in `<dir>/mapper.pid`, removes the pods and the bridge, then `dir`.
    pub fn spawn_watchdog(
        name: &str,
        dir: &std::path::Path,
        tag: &str,
        pods: usize,
        what: &str,
    ) -> anyhow::Result<()> {
        let pods: Vec<String> = (0..pods).map(|n| Self::pod_names(tag, n).0).collect();
        crate::process::spawn_watchdog(
            name,
            dir,
            r#"for ns in $TK_PODS; do for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid"; done; done
[ -f "$TK_DIR/mapper.pid" ] && kill -9 "$(cat "$TK_DIR/mapper.pid")" 2>/dev/null
for ns in $TK_PODS; do ip link del "${ns}v" 2>/dev/null; ip netns del "$ns" 2>/dev/null; done
ip link del "$TK_BRIDGE" 2>/dev/null
rm -rf "$TK_DIR"
"#,
            &[("TK_PODS", pods.join(" ").as_ref()), ("TK_BRIDGE", Self::bridge_name(tag).as_ref())],
            what,
        )
    }

    /// The number of the next pod [`add_pod`](Self::add_pod) makes (for names noted beforehand).
    pub fn next_pod(&self) -> usize {
        self.pods.len()
    }

    /// A pod namespace with address `cidr` (`10.1.0.2/16`) on `eth0`, `lo` up; returns its name.
    pub fn add_pod(&mut self, cidr: &str) -> anyhow::Result<String> {
        anyhow::ensure!(self.pods.len() < Self::MAX_PODS, "a bridge holds at most 10 pods");
        let (ns, veth) = Self::pod_names(&self.tag, self.pods.len());
        let _ = quiet_ip(&["link", "del", &veth]);
        let _ = quiet_ip(&["netns", "del", &ns]);
        try_ip(&["netns", "add", &ns])?;
        self.pods.push(ns.clone());
        try_ip(&["link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns])?;
        try_ip(&["link", "set", &veth, "master", &Self::bridge_name(&self.tag), "up"])?;
        try_ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        try_ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        let mut addr = vec!["-n", &ns, "addr", "add", cidr, "dev", "eth0"];
        if cidr.contains(':') {
            addr.push("nodad");
        }
        try_ip(&addr)?;
        Ok(ns)
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        // Deleting a veth's host end deletes the pair at once; a namespace's own cleanup is lazy.
        for (n, ns) in self.pods.iter().enumerate() {
            let _ = quiet_ip(&["link", "del", &Self::pod_names(&self.tag, n).1]);
            let _ = quiet_ip(&["netns", "del", ns]);
        }
        let _ = quiet_ip(&["link", "del", &Self::bridge_name(&self.tag)]);
    }
}

/// Runs `ip <args>`; an error carries the command and its stderr.
pub fn try_ip(args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| anyhow::anyhow!("running ip (iproute2; install it): {e}"))?;
    anyhow::ensure!(
        output.status.success(),
        "ip {} failed (needs root): {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}

fn quiet_ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
