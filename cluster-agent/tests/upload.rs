//! The uploader against the real cloud API, over real HTTP on 127.0.0.1, backed by a real
//! PostgreSQL (one fresh database per test). Results are checked through the org's
//! `GET /api/v1/access-graph`, so "counted exactly once" means what a user would see.

mod upload_common;

use upload_common::*;

#[tokio::test]
async fn reports_arrive_and_are_counted() {
    let (_, cloud, tenant) = serving(Duration::from_secs(300)).await;
    let dir = temp_dir();
    let up = uploader(dir.path(), &cloud.url(), &tenant);

    up.give(&report("frontend", 1));
    up.give(&report("frontend", 2));
    up.give(&report("checkout", 4));
    eventually("three reports are delivered", || up.stats.sent.load(Ordering::SeqCst) == 3).await;

    let graph = cloud.graph(&tenant.api_token).await;
    assert_eq!(graph.edges.len(), 2, "{graph:?}");
    assert_eq!(connections(&graph, "frontend"), 3);
    assert_eq!(connections(&graph, "checkout"), 4);
    let counts = up.stats.snapshot();
    assert_eq!((counts.duplicates, counts.retries, counts.rejected, counts.pending), (0, 0, 0, 0));
    assert!(files(dir.path(), ".json").is_empty());
    assert_eq!(cloud.tokens_issued(), 1, "the token is reused");
    up.shutdown_with(cloud).await;
}

#[tokio::test]
async fn reports_wait_in_the_outbox_while_the_cloud_is_down() {
    let (state, tenant, addr) = not_serving_yet().await;
    let dir = temp_dir();
    let up = uploader(dir.path(), &format!("http://{addr}"), &tenant);

    for n in [1, 2, 4] {
        up.give(&report("frontend", n));
    }
    eventually("the uploader has retried a few times", || {
        up.taken.load(Ordering::SeqCst) == 3 && up.stats.retries.load(Ordering::SeqCst) >= 3
    })
    .await;
    assert_eq!(files(dir.path(), ".json").len(), 3, "every report is kept on disk");
    assert_eq!(up.stats.sent.load(Ordering::SeqCst), 0);
    assert_eq!(up.stats.pending.load(Ordering::SeqCst), 3);

    let cloud = Cloud::serve(state, addr).await;
    eventually("the outbox drains once the cloud is up", || {
        up.stats.sent.load(Ordering::SeqCst) == 3
    })
    .await;
    assert!(files(dir.path(), ".json").is_empty());
    let graph = cloud.graph(&tenant.api_token).await;
    assert_eq!(connections(&graph, "frontend"), 7, "each report counted exactly once");
    assert_eq!(up.stats.duplicates.load(Ordering::SeqCst), 0);
    up.shutdown_with(cloud).await;
}

#[tokio::test]
async fn a_restarted_mapper_sends_what_it_left_pending() {
    let (db, cloud, tenant) = serving(Duration::from_secs(300)).await;
    let addr = cloud.addr;
    let dir = temp_dir();

    let first = uploader(dir.path(), &cloud.url(), &tenant);
    first.give(&report("frontend", 1));
    eventually("the first report is delivered", || first.stats.sent.load(Ordering::SeqCst) == 1)
        .await;
    cloud.stop().await;
    let pending = [report("frontend", 2), report("frontend", 4)];
    for r in &pending {
        first.give(r);
    }
    eventually("both reports are stored and tried", || {
        first.taken.load(Ordering::SeqCst) == 3 && first.stats.retries.load(Ordering::SeqCst) >= 1
    })
    .await;
    first.kill().await;

    let outbox = Outbox::open(dir.path()).unwrap();
    assert_eq!(
        outbox.pending().unwrap(),
        pending.to_vec(),
        "the pending reports survive, in order"
    );
    let cloud = Cloud::serve(cloud_state(&db, Duration::from_secs(300)).await, addr).await;
    let second = uploading(outbox, &cloud.url(), &tenant);
    eventually("the new uploader delivers them", || second.stats.sent.load(Ordering::SeqCst) == 2)
        .await;
    let graph = cloud.graph(&tenant.api_token).await;
    assert_eq!(connections(&graph, "frontend"), 7, "nothing lost, nothing doubled");
    assert_eq!(second.stats.duplicates.load(Ordering::SeqCst), 0);
    assert!(files(dir.path(), ".json").is_empty());
    second.shutdown().await;
    cloud.stop().await;
}

#[tokio::test]
async fn a_report_applied_before_its_ack_was_lost_is_counted_once() {
    let (_, cloud, tenant) = serving(Duration::from_secs(300)).await;
    let dir = temp_dir();
    let mut outbox = Outbox::open(dir.path()).unwrap();
    let applied = report("frontend", 5);
    outbox.push(&applied).unwrap();
    // The cloud applies it, but the acknowledgement never reaches the outbox.
    let direct = client(&cloud.url(), &tenant);
    assert_eq!(direct.send(&applied).await.unwrap(), SendOutcome::Accepted);
    assert_eq!(direct.send(&applied).await.unwrap(), SendOutcome::AlreadyApplied);
    assert_eq!(outbox.len().unwrap(), 1);

    let later = report("frontend", 1);
    outbox.push(&later).unwrap();
    let up = uploading(outbox, &cloud.url(), &tenant);
    eventually("the outbox drains", || {
        up.stats.duplicates.load(Ordering::SeqCst) == 1 && up.stats.sent.load(Ordering::SeqCst) == 1
    })
    .await;
    assert!(files(dir.path(), ".json").is_empty(), "the already-applied report was acknowledged");
    let graph = cloud.graph(&tenant.api_token).await;
    assert_eq!(connections(&graph, "frontend"), 6, "the replay changed nothing");
    assert_eq!((cloud.reports("accepted"), cloud.reports("duplicate")), (2, 2));
    up.shutdown_with(cloud).await;
}

#[tokio::test]
async fn an_expired_token_is_replaced() {
    let (_, cloud, tenant) = serving(Duration::from_secs(1)).await;

    // The client keeps a token until shortly before expires_in, then fetches another.
    let direct = client(&cloud.url(), &tenant);
    let token = direct.token().await.unwrap();
    assert_eq!(direct.token().await.unwrap(), token, "cached");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_ne!(direct.token().await.unwrap(), token, "replaced once expired");

    let dir = temp_dir();
    let up = uploader(dir.path(), &cloud.url(), &tenant);
    up.give(&report("frontend", 1));
    eventually("the first report is delivered", || up.stats.sent.load(Ordering::SeqCst) == 1).await;
    let issued = cloud.tokens_issued();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    up.give(&report("frontend", 2));
    eventually("the second report is delivered", || up.stats.sent.load(Ordering::SeqCst) == 2)
        .await;
    assert_eq!(cloud.tokens_issued(), issued + 1, "a new token was fetched for the second report");
    assert_eq!(up.stats.retries.load(Ordering::SeqCst), 0, "no failed attempt");
    assert_eq!(connections(&cloud.graph(&tenant.api_token).await, "frontend"), 3);
    up.shutdown_with(cloud).await;
}

#[tokio::test]
async fn a_refused_token_is_replaced_and_the_report_sent_again() {
    let (db, cloud, tenant) = serving(Duration::from_secs(300)).await;
    let dir = temp_dir();
    let up = uploader(dir.path(), &cloud.url(), &tenant);
    up.give(&report("frontend", 1));
    eventually("the first report is delivered", || up.stats.sent.load(Ordering::SeqCst) == 1).await;

    // The cloud restarts with a new signing key: the cached token (valid for minutes) is refused with 401.
    let cloud = cloud.restart(&db, Duration::from_secs(300)).await;
    up.give(&report("frontend", 2));
    eventually("the second report is delivered", || up.stats.sent.load(Ordering::SeqCst) == 2)
        .await;
    assert_eq!(cloud.refused_jwts(), 1, "the old token was refused once");
    assert_eq!(cloud.tokens_issued(), 1, "one new token from the restarted cloud");
    assert_eq!(connections(&cloud.graph(&tenant.api_token).await, "frontend"), 3);
    up.shutdown_with(cloud).await;
}

#[tokio::test]
async fn a_rejected_report_is_set_aside_and_the_queue_moves_on() {
    let (_, cloud, tenant) = serving(Duration::from_secs(300)).await;
    let dir = temp_dir();
    let mut outbox = Outbox::open(dir.path()).unwrap();
    let bad = report("Front End", 1);
    let good = report("frontend", 2);
    outbox.push(&bad).unwrap();
    outbox.push(&good).unwrap();

    let up = uploading(outbox, &cloud.url(), &tenant);
    eventually("the good report is delivered", || up.stats.sent.load(Ordering::SeqCst) == 1).await;
    assert_eq!(up.stats.rejected.load(Ordering::SeqCst), 1);
    assert_eq!(up.stats.retries.load(Ordering::SeqCst), 0, "a rejection is not retried");
    let rejected = files(dir.path(), ".rejected");
    assert_eq!(rejected.len(), 1);
    assert!(rejected[0].contains(&bad.report_id.to_string()), "{rejected:?}");
    assert!(files(dir.path(), ".json").is_empty());
    let graph = cloud.graph(&tenant.api_token).await;
    assert_eq!(graph.edges.len(), 1);
    assert_eq!(connections(&graph, "frontend"), 2);
    up.shutdown_with(cloud).await;
}

#[tokio::test]
async fn a_corrupt_file_in_the_outbox_is_skipped() {
    let (_, cloud, tenant) = serving(Duration::from_secs(300)).await;
    let dir = temp_dir();
    // Older than anything the outbox will write, so it is first in line.
    let corrupt = format!("{:020}-{}.json", 1, Uuid::new_v4());
    std::fs::write(dir.path().join(&corrupt), b"{\"schema_version\": 1, \"report_id\": \"6f1d")
        .unwrap();
    let mut outbox = Outbox::open(dir.path()).unwrap();
    outbox.push(&report("frontend", 3)).unwrap();

    let up = uploading(outbox, &cloud.url(), &tenant);
    eventually("the good report is delivered", || up.stats.sent.load(Ordering::SeqCst) == 1).await;
    assert_eq!(files(dir.path(), ".corrupt"), vec![format!("{corrupt}.corrupt")]);
    assert_eq!(up.outbox_stats.corrupt.load(Ordering::SeqCst), 1);
    assert!(files(dir.path(), ".json").is_empty());
    assert_eq!(connections(&cloud.graph(&tenant.api_token).await, "frontend"), 3);
    up.shutdown_with(cloud).await;
}

#[tokio::test]
async fn a_full_outbox_merges_its_oldest_reports_without_losing_or_doubling() {
    let (state, tenant, addr) = not_serving_yet().await;
    let dir = temp_dir();
    let outbox =
        Outbox::open_with(dir.path(), OutboxLimits { max_reports: 3, ..OutboxLimits::default() })
            .unwrap();
    let up = uploading(outbox, &format!("http://{addr}"), &tenant);

    for n in 1..=8u64 {
        up.give(&report(if n % 2 == 0 { "frontend" } else { "checkout" }, n));
    }
    eventually("all eight reports are stored", || up.taken.load(Ordering::SeqCst) == 8).await;
    assert!(files(dir.path(), ".json").len() <= 3, "{:?}", files(dir.path(), ".json"));
    assert!(up.outbox_stats.compactions.load(Ordering::SeqCst) > 0);
    assert_eq!(up.outbox_stats.dropped.load(Ordering::SeqCst), 0);

    let cloud = Cloud::serve(state, addr).await;
    eventually("the outbox drains", || {
        files(dir.path(), ".json").is_empty() && up.stats.pending.load(Ordering::SeqCst) == 0
    })
    .await;
    let graph = cloud.graph(&tenant.api_token).await;
    assert_eq!(connections(&graph, "frontend"), 2 + 4 + 6 + 8);
    assert_eq!(connections(&graph, "checkout"), 1 + 3 + 5 + 7);
    assert_eq!(total_connections(&graph), 36);
    up.shutdown_with(cloud).await;
}

#[tokio::test]
async fn the_exposed_set_is_sent_again_when_nothing_changes() {
    let (_, cloud, tenant) = serving(Duration::from_secs(300)).await;
    let dir = temp_dir();
    let config =
        UploaderConfig { exposed_refresh: Some(Duration::from_millis(100)), ..fast_config() };
    let up = spawn(Outbox::open(dir.path()).unwrap(), client(&cloud.url(), &tenant), config);
    let mut first = report("frontend", 1);
    first.exposed = vec![ExposedWorkload {
        namespace: "shop".into(),
        name: "frontend".into(),
        kind: Some("Deployment".into()),
        addresses: vec!["198.51.100.10".into()],
        hostnames: vec!["shop.example.com".into()],
    }];
    up.give(&first);
    eventually("the exposed set is re-sent without new edges", || {
        up.stats.sent.load(Ordering::SeqCst) >= 3
    })
    .await;
    let exposures = cloud.state.store.exposures(tenant.org_id).await.unwrap();
    assert_eq!(exposures.len(), 1);
    assert_eq!(exposures[0].exposed, first.exposed[0]);
    assert_eq!(
        connections(&cloud.graph(&tenant.api_token).await, "frontend"),
        1,
        "refreshes carry no edges"
    );
    up.shutdown_with(cloud).await;
}
