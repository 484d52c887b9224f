//! Helpers for the tests on the real cluster (`testkit::cluster`), over the ones the product
//! installs with ([`demo::on_cluster`]): they panic with what went wrong, off the async threads.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use testkit::cluster::Cluster;

use crate::SHOP_NAMESPACE;

pub use demo::on_cluster::{port_forward, shop, READINESS};

/// The workspace's root (tests/ is inside it).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is inside the workspace").into()
}

/// `helm <args>` against the cluster, with its caches in `home`; its stdout.
pub fn helm(cluster: &Cluster, home: &Path, args: &[&str]) -> String {
    demo::on_cluster::helm(cluster, &workspace(), home, args).unwrap_or_else(|e| panic!("{e:#}"))
}

/// Waits (off the async threads) until `namespace` holds exactly `count` pods matching
/// `selector` (all pods when empty), every one Ready; their `READINESS` lines.
pub fn ready_pods(
    cluster: &Cluster,
    namespace: &str,
    selector: &str,
    count: usize,
    timeout: Duration,
) -> String {
    tokio::task::block_in_place(|| {
        demo::on_cluster::ready_pods(cluster, namespace, selector, count, timeout)
    })
    .unwrap_or_else(|e| panic!("{e:#}"))
}

/// One row of `kubectl auth can-i --list`: resource (or non-resource URL), resource names, verbs.
pub type Grant = (String, String, String);

/// What `account` in `namespace` may do beyond what every ServiceAccount may (the namespace's
/// `default` ServiceAccount's list), from `kubectl auth can-i --list`.
pub fn granted(cluster: &Cluster, namespace: &str, account: &str) -> BTreeSet<Grant> {
    let list = |account: &str| -> BTreeSet<Grant> {
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
pub fn documented_grants(release: &str, component: &str) -> BTreeSet<Grant> {
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

/// Workloads whose names come from elsewhere than their Deployment, each calling the shop's
/// frontend: a pod with Otterize's workload-name annotation, a pod with the
/// `otterize/service-name` label, a CronJob's pods (Pod -> Job -> CronJob), and a hostNetwork
/// DaemonSet (`host-agent`, serving on the node's address at [`HOST_AGENT_PORT`]), itself called
/// there by `node-scraper`.
pub const NAMING_NS: &str = "naming";

pub const HOST_AGENT_PORT: u16 = 19180;

pub fn named_workloads(image: &str) -> String {
    let call = format!(
        "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 frontend.{SHOP_NAMESPACE} 8080 >/dev/null 2>&1"
    );
    let deployment = |name: &str, pod_meta: &str| {
        format!(
            r#"---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  namespace: {NAMING_NS}
spec:
  replicas: 1
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      {pod_meta}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: {image}
        imagePullPolicy: Never
        command: [/bin/sh, -c, "while true; do {call}; sleep 2; done"]
"#
        )
    };
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata:
  name: {NAMING_NS}
{}{}---
apiVersion: batch/v1
kind: CronJob
metadata:
  name: nightly-report
  namespace: {NAMING_NS}
spec:
  schedule: "* * * * *"
  successfulJobsHistoryLimit: 1
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          terminationGracePeriodSeconds: 1
          containers:
          - name: main
            image: {image}
            imagePullPolicy: Never
            command: [/bin/sh, -c, "for i in 1 2 3; do {call}; sleep 1; done"]
---
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: host-agent
  namespace: {NAMING_NS}
spec:
  selector:
    matchLabels: {{app: host-agent}}
  template:
    metadata:
      labels: {{app: host-agent}}
    spec:
      hostNetwork: true
      # Cluster names from the node's network need the cluster's DNS asked for.
      dnsPolicy: ClusterFirstWithHostNet
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: {image}
        imagePullPolicy: Never
        command:
        - /bin/sh
        - -c
        - mkdir -p /www && hostname > /www/index.html && httpd -p {HOST_AGENT_PORT} -h /www && while true; do {call}; sleep 2; done
        ports: [{{containerPort: {HOST_AGENT_PORT}}}]
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: node-scraper
  namespace: {NAMING_NS}
spec:
  replicas: 1
  selector:
    matchLabels: {{app: node-scraper}}
  template:
    metadata:
      labels: {{app: node-scraper}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: {image}
        imagePullPolicy: Never
        env:
        - name: HOST_IP
          valueFrom: {{fieldRef: {{fieldPath: status.hostIP}}}}
        command:
        - /bin/sh
        - -c
        - while true; do printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 2 $HOST_IP {HOST_AGENT_PORT} >/dev/null 2>&1; sleep 2; done
"#,
        deployment(
            "annotated-7f",
            "labels: {app: annotated-7f}\n      annotations: {intents.otterize.com/workload-name: billing}",
        ),
        deployment(
            "labelled-9c",
            "labels: {app: labelled-9c, otterize/service-name: invoices}",
        ),
    )
}
