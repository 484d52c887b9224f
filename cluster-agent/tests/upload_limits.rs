//! The uploader when reports are hostile to it: a backlog larger than the cloud takes in one
//! report (kept in memory while the outbox's disk was full), lists longer than a report may
//! carry, edges the cloud would refuse, and a report the cloud fails on every time.

mod upload_common;

use std::sync::Mutex;

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use model::{InternetTarget, ServiceRef};
use upload_common::*;

/// A report of `count` distinct edges, `client-<first>`... to `shop/cart`.
fn many_edges(first: usize, count: usize) -> EdgeReport {
    let one = report("frontend", 1);
    let edges = (first..first + count)
        .map(|i| Edge {
            client: WorkloadRef::new("shop", &format!("client-{i}"), None),
            ..one.edges[0].clone()
        })
        .collect();
    EdgeReport { edges, ..one }
}

#[tokio::test]
async fn a_backlog_held_in_memory_while_the_disk_was_full_is_split_for_the_cloud() {
    let (_, cloud, tenant) = serving(Duration::from_secs(300)).await;
    let dir = temp_dir();
    let outbox_dir = dir.path().join("outbox");
    let outbox = Outbox::open(&outbox_dir).unwrap();
    // The outbox cannot be written: its directory is gone, a file in its place.
    std::fs::remove_dir_all(&outbox_dir).unwrap();
    std::fs::write(&outbox_dir, b"not a directory").unwrap();
    let up = uploading(outbox, &cloud.url(), &tenant);

    up.give(&many_edges(0, 30_000));
    up.give(&many_edges(30_000, 30_000));
    eventually("both reports are taken (and held in memory)", || {
        up.taken.load(Ordering::SeqCst) == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(up.stats.sent.load(Ordering::SeqCst), 0);

    // The disk is back: 60,000 edges, more than one report may carry, go as two.
    std::fs::remove_file(&outbox_dir).unwrap();
    std::fs::create_dir_all(&outbox_dir).unwrap();
    // 60,000 edges through the cloud's JSON parser and PostgreSQL: slow in a debug build.
    eventually_within(Duration::from_secs(120), "the backlog is delivered", || {
        up.stats.sent.load(Ordering::SeqCst) == 2 && files(&outbox_dir, ".json").is_empty()
    })
    .await;
    assert_eq!(cloud.state.metrics.edges_merged.get(), 60_000, "every edge arrived, once");
    let counts = up.stats.snapshot();
    assert_eq!((counts.rejected, counts.dropped_edges), (0, 0));
    up.shutdown_with(cloud).await;
}

#[tokio::test]
async fn long_lists_are_trimmed_and_only_the_edges_the_cloud_would_refuse_are_left_out() {
    let (_, cloud, tenant) = serving(Duration::from_secs(300)).await;
    let dir = temp_dir();
    let up = uploader(dir.path(), &cloud.url(), &tenant);

    let mut r = report("frontend", 2);
    let mut busy = r.edges[0].clone();
    let ips = (0..1_500).map(|i| format!("203.0.{}.{}", i / 250, i % 250 + 1)).collect();
    busy.target = Target::Internet(InternetTarget {
        domains: vec!["cdn.example.com".into()],
        ips,
        ports: vec![443],
    });
    let mut bad = r.edges[0].clone();
    bad.client.name = "Front End".into();
    bad.target = Target::Service(ServiceRef { namespace: "shop".into(), name: "payments".into() });
    r.edges.extend([busy, bad]);
    up.give(&r);
    eventually("the report is delivered", || up.stats.sent.load(Ordering::SeqCst) == 1).await;

    let graph = cloud.graph(&tenant.api_token).await;
    assert_eq!(connections(&graph, "frontend"), 2, "{graph:?}");
    let cdn = graph
        .edges
        .iter()
        .find(|e| e.target.contains("cdn.example.com"))
        .unwrap_or_else(|| panic!("no edge to the CDN: {graph:?}"));
    assert_eq!(cdn.connections, 2);
    assert!(!graph.edges.iter().any(|e| e.target.contains("payments")), "{graph:?}");
    let counts = up.stats.snapshot();
    assert_eq!((counts.trimmed_entries, counts.dropped_edges, counts.rejected), (500, 1, 0));
    up.shutdown_with(cloud).await;
}

/// A stand-in cloud that fails (500) on reports with a `poison` client, or on every report.
#[derive(Default)]
struct FailingCloud {
    fail_all: std::sync::atomic::AtomicBool,
    /// The first client of every report posted, in order.
    posted: Mutex<Vec<String>>,
}

async fn serve_failing(cloud: Arc<FailingCloud>) -> String {
    let token = post(|| async {
        axum::Json(
            serde_json::json!({"access_token": "t", "token_type": "Bearer", "expires_in": 300}),
        )
    });
    let reports = post(move |body: Bytes| {
        let cloud = cloud.clone();
        async move {
            let mut json = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&body[..]), &mut json)
                .unwrap();
            let report: EdgeReport = serde_json::from_slice(&json).unwrap();
            let client = report.edges.first().map_or_else(String::new, |e| e.client.name.clone());
            cloud.posted.lock().unwrap().push(client.clone());
            if client == "poison" || cloud.fail_all.load(Ordering::SeqCst) {
                return (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    axum::Json(serde_json::json!({"error": "internal error", "status": 500})),
                );
            }
            (
                StatusCode::ACCEPTED,
                axum::Json(
                    serde_json::json!({"report_id": report.report_id, "duplicate": false, "edges_merged": 1}),
                ),
            )
        }
    });
    let app = Router::new().route("/oauth/token", token).route("/api/v1/reports", reports);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

fn stand_in_client(url: &str) -> CloudClient {
    let mut config = CloudConfig::new(url, "cl_test", "secret");
    config.timeout = Duration::from_secs(5);
    CloudClient::new(config).unwrap()
}

#[tokio::test]
async fn a_report_the_cloud_keeps_failing_on_is_set_aside_once_the_next_one_goes_through() {
    init_tracing();
    let cloud = Arc::new(FailingCloud::default());
    let url = serve_failing(cloud.clone()).await;
    let dir = temp_dir();
    let mut outbox = Outbox::open(dir.path()).unwrap();
    let poison = report("poison", 1);
    outbox.push(&poison).unwrap();
    outbox.push(&report("frontend", 1)).unwrap();
    let up = spawn(outbox, stand_in_client(&url), fast_config());
    up.give(&report("checkout", 1));

    eventually("the reports behind the failing one are delivered", || {
        up.stats.sent.load(Ordering::SeqCst) == 2
    })
    .await;
    let failed = files(dir.path(), ".failed");
    assert_eq!(failed.len(), 1, "{:?}", files(dir.path(), ""));
    assert!(failed[0].contains(&poison.report_id.to_string()), "{failed:?}");
    assert_eq!(up.stats.failed.load(Ordering::SeqCst), 1);
    assert!(files(dir.path(), ".json").is_empty());
    let posted = cloud.posted.lock().unwrap().clone();
    assert_eq!(
        posted.iter().filter(|c| *c == "poison").count(),
        4,
        "set aside after three identical failures and one more once the next report went through: {posted:?}"
    );
    up.shutdown().await;
}

#[tokio::test]
async fn when_the_cloud_fails_on_every_report_nothing_is_set_aside() {
    init_tracing();
    let cloud = Arc::new(FailingCloud::default());
    cloud.fail_all.store(true, Ordering::SeqCst);
    let url = serve_failing(cloud.clone()).await;
    let dir = temp_dir();
    let up = spawn(Outbox::open(dir.path()).unwrap(), stand_in_client(&url), fast_config());
    up.give(&report("frontend", 1));
    up.give(&report("checkout", 1));
    eventually("the cloud has been tried many times", || cloud.posted.lock().unwrap().len() >= 12)
        .await;
    assert_eq!(files(dir.path(), ".json").len(), 2, "both reports are kept");
    assert!(files(dir.path(), ".failed").is_empty());
    assert_eq!(up.stats.failed.load(Ordering::SeqCst), 0);

    // The cloud recovers: both arrive.
    cloud.fail_all.store(false, Ordering::SeqCst);
    eventually("both reports are delivered", || up.stats.sent.load(Ordering::SeqCst) == 2).await;
    up.shutdown().await;
}
