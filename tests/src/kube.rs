//! Helpers for the tests on the real cluster (`testkit::cluster`), over the ones the product
//! installs with ([`demo::on_cluster`]): they panic with what went wrong, off the async threads.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use testkit::cluster::{Cluster, Workload};

use crate::SHOP_NAMESPACE;

pub use demo::on_cluster::{port_forward, shop, READINESS};

/// The workspace's root (tests/ is inside it).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is inside the workspace").into()
}

/// Installs the published ClientIntents CRD (`reference/clientintents-crd.yaml`) server-side
/// and waits until the API server serves it.
pub fn install_clientintents_crd(cluster: &Cluster) {
    let crd = testkit::need::shared_file("reference/clientintents-crd.yaml");
    let crd = crd.to_str().expect("a UTF-8 path to the CRD");
    cluster.kubectl(&["apply", "--server-side", "-f", crd]).unwrap_or_else(|e| panic!("{e:#}"));
    cluster
        .kubectl(&[
            "wait",
            "--for=condition=established",
            "crd/clientintents.k8s.otterize.com",
            "--timeout=60s",
        ])
        .unwrap_or_else(|e| panic!("{e:#}"));
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
    let calling = format!("while true; do {call}; sleep 2; done");
    let deployment = |name| Workload::deployment(NAMING_NS, name, image, &calling);
    let serving = format!(
        "mkdir -p /www && hostname > /www/index.html && httpd -p {HOST_AGENT_PORT} -h /www && while true; do {call}; sleep 2; done"
    );
    let scraping = format!(
        "while true; do printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 $HOST_IP {HOST_AGENT_PORT} >/dev/null 2>&1; sleep 2; done"
    );
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
        - {serving}
        ports: [{{containerPort: {HOST_AGENT_PORT}}}]
{}"#,
        deployment("annotated-7f")
            .annotation("intents.otterize.com/workload-name", "billing")
            .yaml(),
        deployment("labelled-9c").label("otterize/service-name", "invoices").yaml(),
        Workload::deployment(NAMING_NS, "node-scraper", image, &scraping)
            .env_from_field("HOST_IP", "status.hostIP")
            .yaml(),
    )
}

#[cfg(test)]
mod tests {
    use serde_yaml::Value;

    use super::*;

    /// Every document of a manifest, by `<kind>/<name>`.
    fn documents(yaml: &str) -> std::collections::BTreeMap<String, Value> {
        yaml.split("\n---\n")
            .map(|doc| doc.trim_start_matches("---\n"))
            .filter(|doc| !doc.trim().is_empty())
            .map(|doc| {
                let value: Value =
                    serde_yaml::from_str(doc).unwrap_or_else(|e| panic!("{e}:\n{doc}"));
                let name = format!(
                    "{}/{}",
                    value["kind"].as_str().expect("a kind"),
                    value["metadata"]["name"].as_str().expect("a name")
                );
                (name, value)
            })
            .collect()
    }

    fn script(workload: &Value) -> &str {
        workload["spec"]["template"]["spec"]["containers"][0]["command"][2]
            .as_str()
            .expect("a /bin/sh -c script")
    }

    #[test]
    fn the_shop_is_a_workload_and_a_service_per_service_of_the_seeds() {
        let docs = documents(&shop("traffic:1"));
        assert_eq!(docs.len(), 1 + 2 * crate::SHOP_SERVICES.len(), "{:?}", docs.keys());
        let redis = &docs["StatefulSet/redis-cart"];
        assert_eq!(redis["spec"]["serviceName"].as_str(), Some("redis-cart"));
        let frontend = &docs["Deployment/frontend"];
        assert_eq!(frontend["metadata"]["namespace"].as_str(), Some(SHOP_NAMESPACE));
        assert_eq!(
            frontend["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"]
                .as_u64(),
            Some(8080)
        );
        assert!(script(frontend).contains("for t in adservice cartservice"), "{frontend:?}");
        assert!(script(frontend).contains(r#"printf "GET / HTTP/1.0\r\n\r\n""#));
        assert_eq!(docs["Service/frontend"]["spec"]["selector"]["app"].as_str(), Some("frontend"));
    }

    #[test]
    fn the_named_workloads_carry_the_names_otterize_reads() {
        let docs = documents(&named_workloads("traffic:1"));
        let meta = |name: &str| {
            docs[&format!("Deployment/{name}")]["spec"]["template"]["metadata"].clone()
        };
        assert_eq!(
            meta("annotated-7f")["annotations"]["intents.otterize.com/workload-name"].as_str(),
            Some("billing")
        );
        assert_eq!(
            meta("labelled-9c")["labels"]["otterize/service-name"].as_str(),
            Some("invoices")
        );
        let scraper = &docs["Deployment/node-scraper"];
        let env = &scraper["spec"]["template"]["spec"]["containers"][0]["env"][0];
        assert_eq!(env["name"].as_str(), Some("HOST_IP"));
        assert!(script(scraper).contains(&format!("$HOST_IP {HOST_AGENT_PORT}")));
        assert!(
            docs.contains_key("CronJob/nightly-report")
                && docs.contains_key("DaemonSet/host-agent")
        );
    }
}
