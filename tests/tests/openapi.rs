//! The published API: the real `cloud-api` binary serves the OpenAPI document that is committed
//! at `cloud-api/openapi.json`, and schemathesis (PyPI, installed into target/pytools by
//! `scripts/ensure-python-tools.sh`, which `scripts/setup.sh` runs) generates requests from it
//! against the live server with an organisation's admin token and finds no 5xx and no answer the
//! document does not allow.

use std::path::{Path, PathBuf};

use chrono::Utc;
use serde_json::{json, Value};
use tests::{cluster_jwt, fresh_db, org_with_cluster, post_report, start_cloud_with, Org};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// target/pytools/bin/schemathesis; missing, the test fails naming what installs it.
fn schemathesis() -> PathBuf {
    testkit::need::target_file(
        "pytools/bin/schemathesis",
        "scripts/ensure-python-tools.sh (schemathesis from PyPI)",
    )
}

#[tokio::test]
async fn the_live_api_keeps_to_its_published_document() {
    let db = fresh_db("e2e_openapi").await;
    let Org { api_token: token, creds, .. } = org_with_cluster(&db, "acme", "prod");
    // schemathesis also sends requests without the token (are they refused?): keep the
    // per-address limit on failed credentials out of its way.
    let (_cloud, base) = start_cloud_with(
        &db,
        &["--auth-rate-per-address", "100000", "--auth-burst-per-address", "100000"],
    )
    .await;
    let http = reqwest::Client::new();

    // What the binary serves is what is committed.
    let served = http.get(format!("{base}/api/v1/openapi.json")).send().await.unwrap();
    assert_eq!(served.status(), 200);
    assert_eq!(served.headers()["content-type"], "application/json");
    let served = served.text().await.unwrap();
    let committed = std::fs::read_to_string(workspace().join("cloud-api/openapi.json")).unwrap();
    assert!(
        served == committed,
        "cloud-api/openapi.json differs from what the server serves: run `cargo run -p cloud-api -- openapi > cloud-api/openapi.json`"
    );
    let doc: Value = serde_json::from_str(&served).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/api/v1/access-graph"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "changed_since"));

    // Data to read: a cluster that reported calls, so the graph and ClientIntents are not empty.
    let jwt = cluster_jwt(&http, &base, &creds).await;
    let now = Utc::now();
    let report = json!({"schema_version": 1, "report_id": uuid::Uuid::new_v4(), "generated_at": now,
        "edges": [
            {"client": {"namespace": "shop", "name": "frontend", "kind": "Deployment"},
             "target": {"kubernetes": {"namespace": "shop", "name": "cart", "kind": "Deployment"}},
             "ports": [{"port": 7070, "protocol": "TCP"}], "http": [{"path": "/cart", "methods": ["GET"]}],
             "first_seen": now, "last_seen": now, "connections": 3},
            {"client": {"namespace": "shop", "name": "frontend"},
             "target": {"internet": {"domains": ["api.stripe.com"], "ips": ["203.0.113.7"], "ports": [443]}},
             "first_seen": now, "last_seen": now},
            {"client": {"namespace": "shop", "name": "invoicer"},
             "target": {"aws": {"arn": "arn:aws:s3:::invoices", "actions": ["s3:GetObject"]}},
             "first_seen": now, "last_seen": now},
            {"client": {"namespace": "shop", "name": "orders"},
             "target": {"kafka": {"namespace": "infra", "name": "kafka"}},
             "kafka": [{"name": "orders", "operations": ["consume", "produce"], "denied": ["produce"]}],
             "first_seen": now, "last_seen": now}],
        "exposed": [{"namespace": "shop", "name": "frontend", "addresses": ["198.51.100.10"], "hostnames": ["shop.example.com"]}]});
    let (status, body) = post_report(&http, &base, &jwt, &report).await;
    assert_eq!(status, 202, "{body}");

    let st = schemathesis();
    let reports = workspace().join("target/openapi-test");
    // A run that schemathesis itself breaks off ("Runtime Error": Hypothesis, parsing lambdas'
    // sources on two worker threads at once, trips this Python 3.11's `ast` with "AST
    // constructor recursion depth mismatch") found nothing either way: run it again, up to
    // three times. Any failed check fails at once.
    let mut attempt = 0;
    let out = loop {
        attempt += 1;
        let _ = std::fs::remove_dir_all(&reports);
        std::fs::create_dir_all(&reports).unwrap();
        let out = tokio::process::Command::new(&st)
            .args(["run", &format!("{base}/api/v1/openapi.json")])
            .args(["--header", &format!("Authorization: Bearer {token}")])
            .args([
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance",
            ])
            // Examples, boundary values and random requests; not the stateful phase, which chains
            // calls and would in time revoke the very token it runs with.
            .args(["--phases", "examples,coverage,fuzzing", "--max-examples", "60", "--seed", "19"])
            .args(["--workers", "2", "--request-timeout", "30", "--wait-for-schema", "10"])
            .args(["--report", "junit", "--report-junit-path"])
            .arg(reports.join("junit.xml"))
            // Its caches (.schemathesis, .hypothesis) go there too, not into the source tree.
            .current_dir(&reports)
            .env("NO_COLOR", "1")
            .env("SCHEMATHESIS_HOOKS", "")
            .kill_on_drop(true)
            .output()
            .await
            .expect("run schemathesis");
        let said = String::from_utf8_lossy(&out.stdout);
        let tool_error = said.contains("Runtime Error") && !said.contains("FAILURES");
        if out.status.success() || !tool_error || attempt == 3 {
            break out;
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "schemathesis found answers the document does not allow ({}):\n{stdout}\n{stderr}",
        out.status
    );
    // It did test every operation, and made real requests.
    let junit = std::fs::read_to_string(reports.join("junit.xml"))
        .unwrap_or_else(|e| panic!("no junit report in {} ({e}): {stdout}", reports.display()));
    // Every operation but the document itself (which schemathesis reads, not tests).
    for (path, item) in doc["paths"].as_object().unwrap() {
        if path == "/api/v1/openapi.json" {
            continue;
        }
        for method in item.as_object().unwrap().keys() {
            let case = format!("<testcase name=\"{} {path}\"", method.to_uppercase());
            assert!(junit.contains(&case), "{case} in {junit}");
        }
    }
    assert!(!junit.contains("<failure") && !junit.contains("<error"), "{junit}");

    // The token it ran with still works (it may have deleted the cluster: it is allowed to).
    let me = http.get(format!("{base}/api/v1/whoami")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(me.status(), 200);
}
