//! `./scripts/demo.sh --real-cluster` as a user runs it (the real `intentmap-demo` binary, with
//! `--exit`): a real cluster of its own, both charts installed with Helm from our images, the
//! seeds' shop as real pods, and what it prints is what a user checks — every pod Running in
//! `kubectl get pods -A`, `intentmap list` of the shop exactly as the seeds' README, the page's
//! address with its token. Afterwards nothing of it is left: no cluster directory, no link of
//! the cluster, no process of the cluster, no working directory. Its own test binary.

use std::process::Command;

use tests::{binary, seeds_list, SHOP_NAMESPACE, SHOP_SERVICES};

#[test]
#[cfg_attr(
    unprivileged,
    ignore = "needs root: a real Kubernetes cluster (network links, mounts, cgroups, iptables)"
)]
fn the_demo_runs_the_product_on_a_real_cluster_and_leaves_nothing() {
    testkit::need::root("a real Kubernetes cluster");
    let out = testkit::process::TempDir::new("e2e-demo-real");
    let root = tests::kube::workspace();
    let run = Command::new(binary("intentmap-demo"))
        .args(["--real-cluster", "--exit", "--out"])
        .arg(out.path())
        .current_dir(&root)
        .env_remove("DATABASE_URL")
        .output()
        .expect("running intentmap-demo");
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
    assert!(run.status.success(), "the demo failed: {}\n{stdout}\n{stderr}", run.status);

    // `kubectl get pods -A`: the cloud, the mapper, the node agent and every shop pod, Running.
    let pods = stdout
        .split("== kubectl get pods -A ==\n")
        .nth(1)
        .and_then(|rest| rest.split("\n\n").next())
        .unwrap_or_else(|| panic!("no pod listing in:\n{stdout}"));
    for (namespace, name) in [
        ("intentmap-cloud", "intentmap-cloud-"),
        ("intentmap-agent", "intentmap-mapper-"),
        ("intentmap-agent", "intentmap-node-"),
    ]
    .into_iter()
    .chain(SHOP_SERVICES.iter().map(|s| (SHOP_NAMESPACE, *s)))
    {
        assert!(
            pods.lines().any(|l| {
                let cells: Vec<&str> = l.split_whitespace().collect();
                cells.len() > 3
                    && cells[0] == namespace
                    && cells[1].starts_with(name)
                    && cells[3] == "Running"
            }),
            "{namespace}/{name}… is not Running:\n{pods}"
        );
    }
    // `intentmap list` of the shop, as the seeds' README prints it.
    assert!(stdout.contains(&seeds_list()), "the seeds' list is not in:\n{stdout}");
    assert!(stdout.contains("access graph page: http://127.0.0.1:"), "{stdout}");
    assert!(stdout.contains("#token=imt_"), "{stdout}");
    assert!(stdout.contains("Stopped; nothing of the demo is left running."), "{stdout}");

    // Nothing left: the cluster's directory and links, its processes, the working directory.
    let clusters = std::fs::read_dir(testkit::cluster::BASE_DIR)
        .map(|dir| dir.filter_map(|e| e.ok()).count())
        .unwrap_or(0);
    assert_eq!(clusters, 0, "a cluster directory is left in {}", testkit::cluster::BASE_DIR);
    let links = Command::new("ip").args(["-o", "link"]).output().unwrap();
    let links = String::from_utf8_lossy(&links.stdout);
    assert!(!links.contains("imk8s"), "a link of the cluster is left:\n{links}");
    let processes = Command::new("ps").args(["-eo", "cmd"]).output().unwrap();
    let processes = String::from_utf8_lossy(&processes.stdout);
    for program in ["kube-apiserver", "containerd --config", "etcd --data-dir", "kubelet"] {
        assert!(
            !processes.lines().any(|l| l.contains(program) && l.contains("intentmap-test")),
            "{program} is still running:\n{processes}"
        );
    }
    assert!(!out.path().join("work/real-cluster").exists(), "the working directory is left");
}
