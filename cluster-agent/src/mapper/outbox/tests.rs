//! The outbox on its own: order, acknowledgements, quarantine, merges and their limits.

use chrono::{DateTime, Utc};
use model::report::MAX_RESOURCES_PER_EDGE;
use model::{merge_edges, Edge, ExposedWorkload, InternetTarget, Target, WorkloadRef};
use testkit::process::TempDir;

use super::*;

fn temp_dir() -> TempDir {
    TempDir::new("outbox-unit")
}

fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_790_000_000 + secs, 0).unwrap()
}

fn report(client: &str, connections: u64, generated: i64) -> EdgeReport {
    let edge = Edge {
        client: WorkloadRef::new("shop", client, Some("Deployment")),
        target: Target::Kubernetes(WorkloadRef::new("shop", "cart", Some("Deployment"))),
        ports: vec![],
        first_seen: at(generated - 10),
        last_seen: at(generated),
        connections,
        http: Vec::new(),
        kafka: Vec::new(),
        bytes: None,
    };
    let exposed = ExposedWorkload {
        namespace: "shop".into(),
        name: "frontend".into(),
        kind: None,
        addresses: vec![format!("198.51.100.{generated}")],
        hostnames: vec![],
    };
    EdgeReport::new(Uuid::new_v4(), at(generated), vec![edge], vec![exposed])
}

fn files(dir: &Path, suffix: &str) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(suffix))
        .collect();
    names.sort();
    names
}

#[test]
fn reports_come_back_oldest_first_until_acknowledged() {
    let tmp = temp_dir();
    let mut outbox = Outbox::open(tmp.path()).unwrap();
    let reports: Vec<EdgeReport> = (1..=5).map(|i| report("frontend", i, i as i64)).collect();
    for r in &reports {
        outbox.push(r).unwrap();
    }
    assert_eq!(outbox.pending().unwrap(), reports);
    assert_eq!(outbox.oldest().unwrap().as_ref(), Some(&reports[0]));
    outbox.ack(reports[0].report_id).unwrap();
    outbox.ack(reports[0].report_id).unwrap();
    assert_eq!(outbox.len().unwrap(), 4);
    drop(outbox);
    let reopened = Outbox::open(tmp.path()).unwrap();
    assert_eq!(reopened.pending().unwrap(), reports[1..].to_vec());
    assert!(files(tmp.path(), TMP_SUFFIX).is_empty());
}

#[test]
fn unreadable_files_are_set_aside_and_skipped() {
    let tmp = temp_dir();
    let mut outbox = Outbox::open(tmp.path()).unwrap();
    let good = report("frontend", 1, 1);
    fs::write(tmp.path().join(file_name(1, Uuid::new_v4())), b"{\"schema_version\": 1, \"rep")
        .unwrap();
    fs::write(tmp.path().join("notes.json"), b"{}").unwrap();
    let other = report("frontend", 2, 2);
    fs::write(tmp.path().join(file_name(2, Uuid::new_v4())), serde_json::to_vec(&other).unwrap())
        .unwrap();
    outbox.push(&good).unwrap();
    assert_eq!(outbox.pending().unwrap(), vec![good.clone()]);
    assert_eq!(
        files(tmp.path(), CORRUPT_SUFFIX).len(),
        3,
        "truncated, misnamed and mislabelled files"
    );
    assert_eq!(outbox.stats().corrupt.load(Ordering::Relaxed), 3);
    outbox.reject(good.report_id, "422: bad name").unwrap();
    assert!(outbox.is_empty().unwrap());
    assert_eq!(files(tmp.path(), REJECTED_SUFFIX).len(), 1);
}

#[test]
fn overflow_merges_the_oldest_reports_but_never_the_first() {
    let tmp = temp_dir();
    let limits = OutboxLimits { max_reports: 3, ..OutboxLimits::default() };
    let mut outbox = Outbox::open_with(tmp.path(), limits).unwrap();
    let reports: Vec<EdgeReport> = (1..=10)
        .map(|i| report(if i % 2 == 0 { "frontend" } else { "checkout" }, i, i as i64))
        .collect();
    for r in &reports {
        outbox.push(r).unwrap();
    }
    let pending = outbox.pending().unwrap();
    assert!(pending.len() <= 3, "{} pending", pending.len());
    assert_eq!(pending[0], reports[0], "the first report may be in flight: it is never merged");
    let total: u64 = pending.iter().flat_map(|r| &r.edges).map(|e| e.connections).sum();
    assert_eq!(total, (1..=10).sum::<u64>(), "merging keeps every connection exactly once");
    let newest = pending.iter().max_by_key(|r| r.generated_at).unwrap();
    assert_eq!(newest.exposed, reports[9].exposed, "the newest exposed set survives");
    assert!(pending.windows(2).all(|w| w[0].generated_at <= w[1].generated_at), "order is kept");
    assert!(outbox.stats().compactions.load(Ordering::Relaxed) > 0);
    assert_eq!(outbox.stats().dropped.load(Ordering::Relaxed), 0);
}

#[test]
fn a_merge_never_makes_an_edge_with_more_paths_than_the_cloud_accepts() {
    let tmp = temp_dir();
    let limits = OutboxLimits { max_reports: 2, ..OutboxLimits::default() };
    let mut outbox = Outbox::open_with(tmp.path(), limits).unwrap();
    // Each report's edge has 600 distinct paths: two merged would carry 1,200.
    let with_paths = |generated: i64| {
        let mut r = report("frontend", 1, generated);
        r.edges[0].http = (0..600)
            .map(|i| model::HttpResource {
                path: format!("/item/{generated}/{i}"),
                methods: vec!["GET".into()],
            })
            .collect();
        r
    };
    for i in 1..=3 {
        outbox.push(&with_paths(i)).unwrap();
    }
    let pending = outbox.pending().unwrap();
    assert!(
        pending.iter().all(|r| r.edges.iter().all(|e| e.http.len() <= MAX_RESOURCES_PER_EDGE)),
        "every pending report stays acceptable"
    );
    let paths: usize = pending.iter().flat_map(|r| &r.edges).map(|e| e.http.len()).sum();
    let dropped = outbox.stats().dropped_edges.load(Ordering::Relaxed) as usize;
    assert_eq!(
        paths + dropped * 600,
        1_800,
        "every path is pending, or its edge is counted as dropped"
    );
}

#[test]
fn reports_that_cannot_be_merged_are_dropped_and_counted() {
    let tmp = temp_dir();
    let one = serde_json::to_vec(&report("frontend", 1, 1)).unwrap().len() as u64;
    let limits =
        OutboxLimits { max_reports: 100, max_bytes: one * 2 + one / 2, max_quarantined: 10 };
    let mut outbox = Outbox::open_with(tmp.path(), limits).unwrap();
    // Distinct clients: merging cannot make them smaller.
    for i in 1..=4 {
        outbox.push(&report(&format!("client-{i}"), 1, i)).unwrap();
    }
    let pending = outbox.pending().unwrap();
    let total: u64 = pending.iter().flat_map(|r| &r.edges).map(|e| e.connections).sum();
    assert!(outbox.stats().dropped.load(Ordering::Relaxed) > 0);
    let dropped_edges = outbox.stats().dropped_edges.load(Ordering::Relaxed);
    assert_eq!(total + dropped_edges, 4, "every edge is either pending or counted as dropped");
    assert!(
        pending.iter().any(|r| r.edges.iter().any(|e| e.client.name == "client-4")),
        "the newest report is kept"
    );
}

#[test]
fn an_interrupted_merge_is_completed_or_forgotten() {
    let tmp = temp_dir();
    let mut outbox = Outbox::open(tmp.path()).unwrap();
    let a = report("frontend", 1, 1);
    let b = report("frontend", 2, 2);
    outbox.push(&a).unwrap();
    outbox.push(&b).unwrap();
    let names = files(tmp.path(), REPORT_SUFFIX);
    let merged = EdgeReport::new(
        Uuid::new_v4(),
        b.generated_at,
        merge_edges(a.edges.iter().chain(&b.edges).cloned()),
        b.exposed.clone(),
    );
    let merged_name = file_name(parse_name(&names[0]).unwrap().0, merged.report_id);
    let journal = Journal { merged: merged_name.clone(), replaces: names.clone() };
    fs::write(tmp.path().join(JOURNAL), serde_json::to_vec(&journal).unwrap()).unwrap();
    drop(outbox);

    // Crashed before the merged report was in place: the originals stay.
    fs::write(tmp.path().join(format!("{merged_name}{TMP_SUFFIX}")), b"half").unwrap();
    let outbox = Outbox::open(tmp.path()).unwrap();
    assert_eq!(outbox.pending().unwrap(), vec![a.clone(), b.clone()]);
    assert!(!tmp.path().join(JOURNAL).exists());
    drop(outbox);

    // Crashed after the merged report was in place: the originals go.
    fs::write(tmp.path().join(JOURNAL), serde_json::to_vec(&journal).unwrap()).unwrap();
    fs::write(tmp.path().join(&merged_name), serde_json::to_vec(&merged).unwrap()).unwrap();
    let outbox = Outbox::open(tmp.path()).unwrap();
    assert_eq!(outbox.pending().unwrap(), vec![merged]);
}

#[cfg(unix)]
#[test]
fn reports_are_readable_by_their_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |path: &Path| fs::metadata(path).unwrap().permissions().mode() & 0o777;
    let tmp = temp_dir();
    // A report left by an older version, readable by everyone.
    let old = report("frontend", 1, 1);
    let old_path = tmp.path().join(file_name(1, old.report_id));
    fs::write(&old_path, serde_json::to_vec(&old).unwrap()).unwrap();
    fs::set_permissions(&old_path, fs::Permissions::from_mode(0o644)).unwrap();
    let mut outbox = Outbox::open(tmp.path()).unwrap();
    assert_eq!(mode(&old_path), 0o600, "made private on opening");
    outbox.push(&report("frontend", 2, 2)).unwrap();
    for name in files(tmp.path(), REPORT_SUFFIX) {
        assert_eq!(mode(&tmp.path().join(&name)), 0o600, "{name}");
    }
}

#[test]
fn a_failing_report_is_set_aside_and_the_next_one_comes_up() {
    let tmp = temp_dir();
    let mut outbox = Outbox::open(tmp.path()).unwrap();
    let reports: Vec<EdgeReport> = (1..=3).map(|i| report("frontend", i, i as i64)).collect();
    for r in &reports {
        outbox.push(r).unwrap();
    }
    assert_eq!(outbox.next_after(reports[0].report_id).unwrap(), Some(reports[1].clone()));
    assert_eq!(outbox.next_after(reports[2].report_id).unwrap(), None);
    assert_eq!(outbox.next_after(Uuid::new_v4()).unwrap(), None);
    outbox.set_aside_failed(reports[0].report_id).unwrap();
    assert_eq!(outbox.oldest().unwrap(), Some(reports[1].clone()));
    let failed = files(tmp.path(), FAILED_SUFFIX);
    assert_eq!(failed.len(), 1);
    assert!(failed[0].contains(&reports[0].report_id.to_string()), "{failed:?}");
}

#[test]
fn a_merge_never_makes_an_edge_with_more_addresses_than_the_cloud_accepts() {
    let tmp = temp_dir();
    let limits = OutboxLimits { max_reports: 2, ..OutboxLimits::default() };
    let mut outbox = Outbox::open_with(tmp.path(), limits).unwrap();
    // The same internet target, 700 distinct IPs a report: two merged would carry 1,400.
    let with_ips = |generated: i64| {
        let mut r = report("frontend", 1, generated);
        let ips = (0..700).map(|i| format!("10.{generated}.{}.{}", i / 256, i % 256)).collect();
        r.edges[0].target = Target::Internet(InternetTarget {
            domains: vec!["api.example.com".into()],
            ips,
            ports: vec![],
        });
        r
    };
    for i in 1..=3 {
        outbox.push(&with_ips(i)).unwrap();
    }
    for r in outbox.pending().unwrap() {
        r.validate_at(at(100))
            .unwrap_or_else(|e| panic!("a pending report the cloud would refuse: {e}"));
    }
    assert!(
        outbox.stats().dropped.load(Ordering::Relaxed) > 0,
        "unmergeable reports past the limit are dropped, and counted"
    );
}
