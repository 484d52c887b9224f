//! The cloud as a user runs it: the `cloud-api` binary's admin commands, `serve` over real
//! HTTP, and the demo the README starts.

use std::process::Command;
use std::time::Duration;

use serde_json::json;
use tests::cloud::gzip;
use tests::{
    binary, cluster_jwt, free_port, fresh_db, get_json, get_text, org_with_cluster, post_gzip,
    run_ok, serving_url, spawn, wait_ready, Org,
};

#[tokio::test]
async fn an_operator_sets_up_a_tenant_and_a_cluster_uploads_over_http() {
    let db = fresh_db("e2e_cloud").await;
    let Org { api_token, creds, .. } = org_with_cluster(&db, "acme", "prod");
    let api_token = api_token.as_str();

    let missing = Command::new(binary("cloud-api"))
        .args([
            "admin",
            "create-cluster",
            "--org",
            &uuid::Uuid::new_v4().to_string(),
            "prod",
            "--database-url",
            &db,
        ])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("create-org"),
        "the error says what to do next"
    );

    let dir = std::env::temp_dir().join(format!("e2e-cloud-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("jwt.pem");
    std::fs::write(
        &key,
        run_ok(Command::new(binary("cloud-api")).args(["admin", "generate-jwt-key"])).stdout,
    )
    .unwrap();
    let (port, metrics_port) = (free_port(), free_port());
    let base = format!("http://127.0.0.1:{port}");
    let serve = |db: &str| {
        spawn(
            Command::new(binary("cloud-api"))
                .args([
                    "--log-format",
                    "json",
                    "serve",
                    "--listen",
                    &format!("127.0.0.1:{port}"),
                    "--database-url",
                    &serving_url(db),
                ])
                .args([
                    "--migrate-database-url",
                    db,
                    "--metrics-listen",
                    &format!("127.0.0.1:{metrics_port}"),
                ])
                .env("JWT_KEY_FILES", &key)
                .env("RUST_LOG", "warn"),
        )
    };
    let server = serve(&db);
    wait_ready(&format!("{base}/readyz"), Duration::from_secs(30)).await;

    let http = reqwest::Client::new();
    let jwt = cluster_jwt(&http, &base, &creds).await;

    let report = json!({"schema_version": 1, "report_id": uuid::Uuid::new_v4(), "generated_at": chrono::Utc::now(),
        "edges": [{"client": {"namespace": "shop", "name": "frontend", "kind": "Deployment"},
                   "target": {"kubernetes": {"namespace": "shop", "name": "cartservice", "kind": "Deployment"}},
                   "ports": [{"port": 7070, "protocol": "TCP"}], "first_seen": "2026-11-24T17:00:00Z", "last_seen": "2026-11-24T17:59:00Z", "connections": 12}]});
    let body = gzip(report.to_string().as_bytes(), flate2::Compression::default());
    assert_eq!(post_gzip(&http, &base, &jwt, body.clone()).await.0, 202);

    // A restart with the same signing key keeps issued tokens valid; the replay is recognised.
    drop(server);
    let _server = serve(&db);
    wait_ready(&format!("{base}/readyz"), Duration::from_secs(30)).await;
    assert_eq!(
        post_gzip(&http, &base, &jwt, body).await.0,
        200,
        "the same report again is a no-op"
    );

    let graph = get_json(&http, &format!("{base}/api/v1/access-graph"), api_token).await;
    assert_eq!(graph["edges"][0]["source"], "prod/shop/frontend");
    assert_eq!(graph["edges"][0]["target"], "prod/shop/cartservice");
    assert_eq!(graph["edges"][0]["connections"], 12);
    let yaml =
        get_text(&http, &format!("{base}/api/v1/clusters/prod/client-intents"), api_token).await;
    assert!(
        yaml.contains("apiVersion: k8s.otterize.com/v2beta1") && yaml.contains("name: cartservice"),
        "{yaml}"
    );
    assert_eq!(
        http.get(format!("{base}/metrics")).send().await.unwrap().status(),
        404,
        "metrics are not on the API's address"
    );
    let metrics = http
        .get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("intentmap_cloud_tokens_issued_total 0"),
        "the restarted server issued none yet: {metrics}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn the_readme_demo_runs_and_prints_where_to_look() {
    let out_dir = std::env::temp_dir().join(format!("e2e-demo-{}", uuid::Uuid::new_v4()));
    let out = run_ok(
        Command::new(binary("intentmap-demo"))
            .args(["--exit", "--replay", "--listen", "127.0.0.1:0", "--out"])
            .arg(&out_dir)
            .env_remove("DATABASE_URL")
            .env("RUST_LOG", "warn"),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("frontend in namespace otterize-ecom-demo calls:\n  - cartservice\n  - checkoutservice\n"), "{stdout}");
    assert!(stdout.contains("us-east/otterize-ecom-demo/checkoutservice -> eu-west/payments/payment-gateway (cross-cluster via 10.212.2.10)"), "{stdout}");
    assert!(
        stdout.contains("access graph page: http://127.0.0.1:") && stdout.contains("/#token="),
        "{stdout}"
    );
    let yaml = std::fs::read_to_string(out_dir.join("clientintents-us-east.yaml"))
        .expect("the demo writes ClientIntents");
    assert!(yaml.contains("kind: ClientIntents"));
    std::fs::remove_dir_all(&out_dir).ok();
}
