//! Change over time through the real `cloud-api` binary: a cluster reports, time passes, it
//! reports again (one call again, one new call, one call no more), and the access graph's
//! `changed_since` and ClientIntents' `diff_since` say what is new and what is gone, with the
//! timestamps the reports carried.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tests::{admin, cluster_jwt, fresh_db, org_with_cluster, post_report, start_cloud, Org};

struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    async fn get(&self, path: &str, token: &str, query: &[(&str, &str)]) -> (u16, String) {
        let res = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .query(query)
            .send()
            .await
            .unwrap();
        (res.status().as_u16(), res.text().await.unwrap())
    }

    async fn json(&self, path: &str, token: &str, query: &[(&str, &str)]) -> Value {
        let (status, body) = self.get(path, token, query).await;
        assert_eq!(status, 200, "GET {path} {query:?}: {body}");
        serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{path} answered no JSON ({e}): {body}"))
    }

    async fn report(&self, jwt: &str, edges: Vec<Value>) {
        let report = json!({"schema_version": 1, "report_id": uuid::Uuid::new_v4(),
            "generated_at": Utc::now(), "edges": edges});
        let (status, body) = post_report(&self.http, &self.base, jwt, &report).await;
        assert_eq!(status, 202, "{body}");
    }
}

fn call(target: Value, first_seen: DateTime<Utc>, last_seen: DateTime<Utc>) -> Value {
    json!({"client": {"namespace": "shop", "name": "frontend", "kind": "Deployment"},
           "target": target, "first_seen": first_seen, "last_seen": last_seen, "connections": 1})
}

fn workload(name: &str) -> Value {
    json!({"kubernetes": {"namespace": "shop", "name": name, "kind": "Deployment"}})
}

/// The edge of the graph from frontend to `target` (a node id).
fn edge<'a>(graph: &'a Value, target: &str) -> &'a Value {
    graph["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["source"] == "prod/shop/frontend" && e["target"] == target)
        .unwrap_or_else(|| panic!("no edge to {target} in {graph:#}"))
}

/// A running cloud with an org (`acme`, its API token) and a cluster `prod` (a cluster JWT), and
/// a second org's token.
struct Tenant {
    api: Api,
    token: String,
    jwt: String,
    other_token: String,
    _cloud: tests::Running,
}

async fn tenant(database: &str) -> Tenant {
    let db = fresh_db(database).await;
    let Org { api_token: token, creds, .. } = org_with_cluster(&db, "acme", "prod");
    let other = admin(&db, &["create-org", "globex"]);
    let other_token = other["api_token"].as_str().unwrap().to_owned();
    let (cloud, base) = start_cloud(&db).await;
    let api = Api { http: reqwest::Client::new(), base };

    let jwt = cluster_jwt(&api.http, &api.base, &creds).await;
    Tenant { api, token, jwt, other_token, _cloud: cloud }
}

#[tokio::test]
async fn what_changed_since_a_moment_is_marked_in_the_graph_and_in_client_intents() {
    let Tenant { api, token, jwt, other_token, _cloud } = tenant("e2e_changes").await;

    // Yesterday's state: frontend calls cartservice and ads.
    let first = Utc::now();
    api.report(
        &jwt,
        vec![call(workload("cartservice"), first, first), call(workload("ads"), first, first)],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mark = Utc::now();
    let mark_text = mark.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Today: cartservice again, a new call to Stripe, nothing to ads.
    let second = Utc::now();
    let stripe = json!({"internet": {"domains": ["api.stripe.com"], "ports": [443]}});
    api.report(
        &jwt,
        vec![call(workload("cartservice"), second, second), call(stripe, second, second)],
    )
    .await;

    let graph = api.json("/api/v1/access-graph", &token, &[("changed_since", &mark_text)]).await;
    assert_eq!(graph["edges"].as_array().unwrap().len(), 3, "{graph:#}");
    let cart = edge(&graph, "prod/shop/cartservice");
    let ads = edge(&graph, "prod/shop/ads");
    let stripe = edge(&graph, "internet/api.stripe.com");
    assert_eq!(cart["change"], "seen", "first seen before the mark, seen after it: {cart}");
    assert_eq!(ads["change"], "gone", "not seen since the mark: {ads}");
    assert_eq!(stripe["change"], "new", "first seen after the mark: {stripe}");
    // The verdicts follow the times the server stored.
    let time = |v: &Value| v.as_str().unwrap().parse::<DateTime<Utc>>().unwrap();
    assert!(time(&ads["last_seen"]) < mark && time(&stripe["first_seen"]) > mark);
    assert!(time(&cart["first_seen"]) < mark && time(&cart["last_seen"]) > mark);
    assert_eq!(
        graph["changes"],
        json!({"since": mark_text, "new": 1, "seen": 1, "gone": 1}),
        "the summary names the moment asked about"
    );

    // Without changed_since the graph is as before: no marks.
    let plain = api.json("/api/v1/access-graph", &token, &[]).await;
    assert!(plain.get("changes").is_none() && plain["edges"][0].get("change").is_none(), "{plain}");
    // A window back from now: an hour ago, everything was new.
    let hour = api.json("/api/v1/access-graph", &token, &[("changed_since", "1h")]).await;
    assert_eq!(hour["changes"]["new"], 3, "{hour:#}");
    // Another organisation sees none of it.
    let theirs =
        api.json("/api/v1/access-graph", &other_token, &[("changed_since", &mark_text)]).await;
    assert_eq!(theirs["edges"], json!([]), "{theirs}");
    assert_eq!(theirs["changes"]["gone"], 0);

    // Bad moments are the caller's mistake, said so, never a server error.
    for bad in ["last tuesday", "2026-13-01T00:00:00Z", "100000000d", "9223372036854775807s", ""] {
        let (status, body) =
            api.get("/api/v1/access-graph", &token, &[("changed_since", bad)]).await;
        assert_eq!(status, 400, "changed_since={bad:?}: {body}");
        assert!(body.contains("changed_since=") && body.contains("RFC 3339"), "{body}");
        let (status, body) =
            api.get("/api/v1/clusters/prod/client-intents", &token, &[("diff_since", bad)]).await;
        assert_eq!(status, 400, "diff_since={bad:?}: {body}");
        assert!(body.contains("diff_since="), "{body}");
    }
    let (status, body) = api
        .get("/api/v1/access-graph", &token, &[("changed_since", "1h"), ("format", "dot")])
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("format=dot"), "{body}");

    // ClientIntents with diff comments: each target marked, and the YAML is the export.
    let intents = "/api/v1/clusters/prod/client-intents";
    let (status, yaml) = api.get(intents, &token, &[("diff_since", &mark_text)]).await;
    assert_eq!(status, 200, "{yaml}");
    let lines: Vec<&str> = yaml.lines().collect();
    assert_eq!(lines[0], "---");
    assert_eq!(
        lines[1],
        format!("# diff since {mark_text}: 1 added, 1 not seen since, 1 unchanged"),
        "{yaml}"
    );
    let comment_before = |needle: &str| {
        let at = lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{needle} in {yaml}"));
        let item = (0..=at).rev().find(|&i| lines[i].starts_with("  - ")).unwrap();
        lines[item - 1].to_owned()
    };
    assert_eq!(
        comment_before("name: ads"),
        format!("  # not seen since {mark_text}: last seen {}", ads["last_seen"].as_str().unwrap())
    );
    assert_eq!(
        comment_before("- api.stripe.com"),
        format!("  # added: first seen {}", stripe["first_seen"].as_str().unwrap())
    );
    assert!(!comment_before("name: cartservice").starts_with("  #"), "unchanged: no comment");
    let (_, plain_yaml) = api.get(intents, &token, &[]).await;
    let parse = |y: &str| -> Vec<serde_yaml::Value> {
        y.split("---\n")
            .filter(|d| !d.trim().is_empty())
            .map(|d| serde_yaml::from_str(d).unwrap())
            .collect()
    };
    assert_eq!(parse(&yaml), parse(&plain_yaml), "comments only: the documents are the export");
    // v1alpha3 is marked too.
    let (_, old) =
        api.get(intents, &token, &[("diff_since", &mark_text), ("version", "v1alpha3")]).await;
    assert!(old.contains("k8s.otterize.com/v1alpha3") && old.contains("  # added: "), "{old}");

    // The JSON form: the documents as format=json gives them, and every target's change.
    let diff = api.json(intents, &token, &[("diff_since", &mark_text), ("format", "json")]).await;
    let plain_json = api.json(intents, &token, &[("format", "json")]).await;
    assert_eq!(diff["documents"], plain_json);
    assert_eq!(diff["diff_since"], mark_text);
    let changes: Vec<(String, String)> = diff["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            assert_eq!(c["client"], json!({"namespace": "shop", "name": "frontend"}));
            (c["target"].to_string(), c["change"].as_str().unwrap().to_owned())
        })
        .collect();
    assert_eq!(
        changes,
        vec![
            (
                json!({"kubernetes": {"kind": "Deployment", "name": "ads"}}).to_string(),
                "not_seen_since".to_owned()
            ),
            (
                json!({"kubernetes": {"kind": "Deployment", "name": "cartservice"}}).to_string(),
                "unchanged".to_owned()
            ),
            (
                json!({"internet": {"domains": ["api.stripe.com"], "ports": [443]}}).to_string(),
                "added".to_owned()
            ),
        ],
        "{diff:#}"
    );
    assert_eq!(diff["changes"][2]["first_seen"], stripe["first_seen"]);
    // Another organisation cannot diff this cluster.
    let (status, _) = api.get(intents, &other_token, &[("diff_since", "1h")]).await;
    assert_eq!(status, 404);
}

/// Incoming internet traffic (clients outside the cluster reaching a workload, as a cluster's
/// mapper reports it) is drawn from the internet to the workload with the clients' addresses;
/// the ClientIntents, which describe what clients call, leave it out.
#[tokio::test]
async fn incoming_internet_traffic_is_in_the_graph_and_not_in_client_intents() {
    let Tenant { api, token, jwt, other_token, _cloud } = tenant("e2e_incoming").await;
    let now = Utc::now();
    let incoming = |ips: &[&str]| {
        let mut edge = call(json!({"incoming": {"ips": ips}}), now, now);
        edge["ports"] = json!([{"port": 8080}]);
        edge
    };
    api.report(&jwt, vec![incoming(&["203.0.113.7"]), call(workload("cartservice"), now, now)])
        .await;
    api.report(&jwt, vec![incoming(&["198.51.100.3"])]).await;

    let graph = api.json("/api/v1/access-graph", &token, &[]).await;
    let edges = graph["edges"].as_array().unwrap();
    let from_outside: Vec<&Value> =
        edges.iter().filter(|e| e["source"] == "incoming/internet").collect();
    assert_eq!(from_outside.len(), 1, "{graph:#}");
    assert_eq!(from_outside[0]["target"], "prod/shop/frontend");
    assert_eq!(from_outside[0]["client_ips"], json!(["198.51.100.3", "203.0.113.7"]));
    assert_eq!(from_outside[0]["connections"], 2);
    let node = graph["nodes"].as_array().unwrap().iter().find(|n| n["id"] == "incoming/internet");
    assert_eq!(node.map(|n| &n["kind"]), Some(&json!("internet")), "{graph:#}");
    let dot = api.get("/api/v1/access-graph", &token, &[("format", "dot")]).await.1;
    assert!(dot.contains("\"incoming/internet\" -> \"prod/shop/frontend\""), "{dot}");

    // The aggregated view draws it from the `incoming` node to the namespace.
    let summary = api.json("/api/v1/access-graph/summary", &token, &[]).await;
    let aggregated: Vec<&Value> =
        summary["edges"].as_array().unwrap().iter().filter(|e| e["source"] == "incoming").collect();
    assert_eq!(aggregated.len(), 1, "{summary:#}");
    assert_eq!(aggregated[0]["target"], "prod/shop");
    assert_eq!(aggregated[0]["connections"], 2);

    let (status, yaml) = api.get("/api/v1/clusters/prod/client-intents", &token, &[]).await;
    assert_eq!(status, 200, "{yaml}");
    assert!(yaml.contains("name: cartservice"), "{yaml}");
    assert!(!yaml.contains("203.0.113.7") && !yaml.contains("internet"), "{yaml}");

    let theirs = api.json("/api/v1/access-graph", &other_token, &[]).await;
    assert_eq!(theirs["edges"], json!([]), "another org sees none of it: {theirs:#}");
}
