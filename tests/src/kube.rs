//! Helpers for the tests on the real cluster (`testkit::cluster`), over the ones the product
//! installs with ([`demo::on_cluster`]): they panic with what went wrong, off the async threads.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use testkit::cluster::Cluster;

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
