//! A real cluster starts, and nothing is left behind when it is stopped or when the process that
//! started it is killed (its watchdog cleans up).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use testkit::cluster::{Cluster, BRIDGE, NODE_NAME};

/// One cluster at a time runs on a machine: the tests here take turns.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const KILLED_REPORT: &str = "TESTKIT_CLUSTER_KILLED_REPORT";

#[test]
#[cfg_attr(
    unprivileged,
    ignore = "needs root: a real Kubernetes cluster (network links, mounts, cgroups, iptables)"
)]
fn a_cluster_starts_and_stopping_it_leaves_nothing_behind() {
    testkit::need::root("a real Kubernetes cluster");
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let sockets = shim_sockets();
    let cluster =
        Cluster::start().unwrap_or_else(|e| panic!("the test cluster did not start: {e:#}"));
    let nodes = cluster.kubectl(&["get", "nodes", "-o", "name"]).unwrap();
    assert_eq!(nodes.trim(), format!("node/{NODE_NAME}"));
    let dir = cluster.dir().to_path_buf();
    assert!(
        Path::new("/sys/class/net").join(BRIDGE).exists(),
        "CoreDNS's pod hangs off the CNI bridge"
    );
    cluster.stop();
    assert_nothing_left(&dir, &sockets);
}

/// Run by `a_killed_process_leaves_nothing_behind` in a child process: starts a cluster, says
/// where, and is killed with SIGKILL (no destructor, no clean-up of its own).
#[test]
#[ignore = "helper run in a child process by a_killed_process_leaves_nothing_behind"]
fn killed_cluster_helper() {
    let Some(report) = std::env::var_os(KILLED_REPORT) else {
        return;
    };
    let cluster =
        Cluster::start().unwrap_or_else(|e| panic!("the test cluster did not start: {e:#}"));
    std::fs::write(report, cluster.dir().display().to_string()).unwrap();
    let _ = Command::new("kill").args(["-KILL", &std::process::id().to_string()]).status();
    unreachable!("SIGKILL ends this process");
}

#[test]
#[cfg_attr(
    unprivileged,
    ignore = "needs root: a real Kubernetes cluster (network links, mounts, cgroups, iptables)"
)]
fn a_killed_process_leaves_nothing_behind() {
    testkit::need::root("a real Kubernetes cluster");
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let sockets = shim_sockets();
    let report = std::env::temp_dir()
        .join(format!("testkit-cluster-killed-{}", uuid::Uuid::new_v4().simple()));
    let status = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "killed_cluster_helper", "--nocapture"])
        .env(KILLED_REPORT, &report)
        .stdin(Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success(), "the helper is killed");
    let dir = PathBuf::from(
        std::fs::read_to_string(&report)
            .unwrap_or_else(|e| panic!("the helper did not start a cluster ({status}): {e}")),
    );
    let _ = std::fs::remove_file(&report);
    let deadline = Instant::now() + Duration::from_secs(60);
    while dir.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_nothing_left(&dir, &sockets);
}

/// The containerd shims' sockets on this machine (a system containerd has some too).
fn shim_sockets() -> Vec<String> {
    let entries = std::fs::read_dir("/run/containerd/s")
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect());
    entries.unwrap_or_default()
}

fn assert_nothing_left(dir: &Path, sockets_before: &[String]) {
    assert!(!dir.exists(), "{} is left", dir.display());
    assert!(!Path::new("/sys/class/net").join(BRIDGE).exists(), "the bridge {BRIDGE} is left");
    for save in ["iptables-save", "ip6tables-save"] {
        let rules = Command::new(save).output().unwrap();
        let rules = String::from_utf8_lossy(&rules.stdout);
        let ours: Vec<&str> =
            rules.lines().filter(|l| l.contains("KUBE-") || l.contains("CNI-")).collect();
        assert!(ours.is_empty(), "{save} still has: {ours:#?}");
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&dir.display().to_string()),
        "mounts are left under {}",
        dir.display()
    );
    let pod_cgroups: Vec<PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .flatten()
        .map(|e| e.path().join("kubepods"))
        .filter(|p| p.exists())
        .collect();
    assert!(pod_cgroups.is_empty(), "pod cgroups are left: {pod_cgroups:?}");
    let processes: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&format!("{}/", dir.display())))
        .collect();
    assert!(processes.is_empty(), "processes of the cluster are left: {processes:#?}");
    let new_sockets: Vec<String> =
        shim_sockets().into_iter().filter(|s| !sockets_before.contains(s)).collect();
    assert!(
        new_sockets.is_empty(),
        "containerd shim sockets are left in /run/containerd/s: {new_sockets:?}"
    );
}
