//! The access-graph page. Over plain HTTP: what `/` and its assets are served as. In a real
//! browser: the API runs on a socket against a throwaway PostgreSQL with reports ingested through
//! the API, headless Chromium loads the page, and the test reads the DOM its scripts produced
//! (`--dump-dom`) and saves screenshots under `target/web-test/`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use axum::http::{header, StatusCode};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

#[path = "web_large/browser.rs"]
mod browser;

use self::browser::{
    assert_png, chromium_binary as chromium, fresh_profile, screenshot_path, Api, HEADLESS,
};

// === what the page is served as ===

#[tokio::test]
async fn the_page_is_served_with_a_strict_content_security_policy() {
    let api = Api::start("cloudweb").await;
    let page = api.get("/", None).await;
    assert_eq!(page.status, StatusCode::OK, "the page itself needs no token: it asks for one");
    assert!(page.header(header::CONTENT_TYPE).starts_with("text/html"), "{:?}", page.headers);
    let csp = page.header(header::CONTENT_SECURITY_POLICY);
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "CSP {csp:?} lacks {directive:?}");
    }
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{csp}");
    assert_eq!(page.header(header::X_CONTENT_TYPE_OPTIONS), "nosniff");
    let html = page.text();
    assert!(html.contains(r#"<script src="/assets/app.js" defer></script>"#), "{html}");
    assert!(html.contains(r#"id="login-form""#));

    let js = api.get("/assets/app.js", None).await;
    assert_eq!(js.status, StatusCode::OK);
    assert!(
        js.header(header::CONTENT_TYPE).starts_with("application/javascript"),
        "{:?}",
        js.headers
    );
    assert!(js.text().contains("/api/v1/access-graph"));
    let css = api.get("/assets/app.css", None).await;
    assert!(css.header(header::CONTENT_TYPE).starts_with("text/css"));
    let icon = api.get("/assets/favicon.svg", None).await;
    assert_eq!(icon.header(header::CONTENT_TYPE), "image/svg+xml");

    assert_eq!(api.get("/assets/nothing.js", None).await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        api.get("/api/v1/access-graph", None).await.status,
        StatusCode::UNAUTHORIZED,
        "the data still needs the token"
    );
}

// === in a real browser ===

/// The browser runs one at a time: this machine has few cores and Chromium is heavy.
static BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Browser {
    binary: PathBuf,
}

/// What Chromium showed: the DOM after the scripts ran.
struct Page {
    dom: String,
}

impl Browser {
    /// Loads `url` in a fresh profile and returns the DOM once the page is idle; with
    /// `screenshot`, also saves a 1400×900 PNG there.
    async fn load(&self, url: &str, screenshot: Option<&Path>) -> Page {
        let _one_at_a_time = BROWSER.lock().await;
        let profile = fresh_profile("intentmap-web-test");
        let mut cmd = tokio::process::Command::new(&self.binary);
        cmd.args(HEADLESS)
            .args([
                "--window-size=1400,900",
                "--virtual-time-budget=10000",
                // Console messages (script errors, CSP violations) go to stderr.
                "--enable-logging=stderr",
                "--log-level=0",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("--dump-dom");
        if let Some(path) = screenshot {
            cmd.arg(format!("--screenshot={}", path.display()));
        }
        cmd.arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let started = Instant::now();
        let out = tokio::time::timeout(Duration::from_secs(40), cmd.output())
            .await
            .unwrap_or_else(|_| panic!("Chromium did not finish loading {url} within 40 s"))
            .expect("run chromium");
        let _ = std::fs::remove_dir_all(&profile);
        let dom = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success() && dom.contains("</html>"),
            "Chromium failed on {url} ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        println!("loaded {} in {:.1} s", redact(url), started.elapsed().as_secs_f64());
        // The page logs nothing itself: any console line is a script error or a blocked
        // (CSP-violating) load or style.
        let stderr = String::from_utf8_lossy(&out.stderr);
        let console: Vec<&str> = stderr.lines().filter(|l| l.contains(":CONSOLE")).collect();
        assert!(
            console.is_empty(),
            "the page on {} wrote to the console:\n{}",
            redact(url),
            console.join("\n")
        );
        Page { dom }
    }
}

fn redact(url: &str) -> String {
    if let Some((head, tail)) = url.split_once("test-sign-in#") {
        return format!("{head}test-sign-in#…{}", tail.find('#').map(|i| &tail[i..]).unwrap_or(""));
    }
    match url.split_once("token=") {
        Some((head, tail)) => {
            format!("{head}token=…{}", tail.find('&').map(|i| &tail[i..]).unwrap_or(""))
        }
        None => url.to_owned(),
    }
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

impl Page {
    /// Every value of the attribute `name` in document order.
    fn attrs(&self, name: &str) -> Vec<String> {
        attrs_in(&self.dom, name)
    }

    fn attr(&self, name: &str) -> Option<String> {
        self.attrs(name).into_iter().next()
    }

    fn state(&self) -> String {
        let body = &self.dom[self.dom.find("<body").expect("a body")..];
        attrs_in(&body[..body.find('>').unwrap()], "data-state")
            .into_iter()
            .next()
            .unwrap_or_default()
    }

    /// The markup from the element with `id` to the next `until`.
    fn section(&self, id: &str, until: &str) -> &str {
        let start = self
            .dom
            .find(&format!(" id=\"{id}\""))
            .unwrap_or_else(|| panic!("no #{id} in {}", self.dom));
        let rest = &self.dom[start..];
        &rest[..rest.find(until).unwrap_or(rest.len())]
    }
}

fn attrs_in(html: &str, name: &str) -> Vec<String> {
    let needle = format!(" {name}=\"");
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(i) = rest.find(&needle) {
        rest = &rest[i + needle.len()..];
        let end = rest.find('"').expect("a closed attribute");
        out.push(unescape(&rest[..end]));
        rest = &rest[end..];
    }
    out
}

fn ago(minutes: i64) -> DateTime<Utc> {
    Utc::now() - chrono::Duration::minutes(minutes)
}

fn edge(
    ns: &str,
    client: &str,
    kind: &str,
    target: Value,
    port: Option<u16>,
    last_seen_minutes_ago: i64,
) -> Value {
    let mut e = json!({
        "client": {"namespace": ns, "name": client, "kind": kind},
        "target": target,
        "first_seen": ago(last_seen_minutes_ago + 60), "last_seen": ago(last_seen_minutes_ago),
        "connections": 3,
    });
    if let Some(port) = port {
        e["ports"] = json!([{"port": port, "protocol": "TCP"}]);
    }
    e
}

fn workload(ns: &str, name: &str) -> Value {
    json!({"kubernetes": {"namespace": ns, "name": name, "kind": "Deployment"}})
}

/// Two clusters of one organisation: `us` runs the shop and calls `eu`'s payment gateway
/// through its public hostname, the internet and S3; `eu` writes to DynamoDB. One call is three
/// days old. Returns the org's API token.
async fn shop(api: &Api) -> String {
    let token = api.org("acme").await;
    let us = api.cluster(&token, "us").await;
    let eu = api.cluster(&token, "eu").await;
    let us_edges = vec![
        edge("shop", "frontend", "Deployment", workload("shop", "cartservice"), Some(7070), 5),
        edge(
            "shop",
            "frontend",
            "Deployment",
            workload("catalog", "productcatalog"),
            Some(3550),
            5,
        ),
        edge(
            "shop",
            "frontend",
            "Deployment",
            json!({"service": {"namespace": "shop", "name": "currency"}}),
            Some(7000),
            5,
        ),
        edge(
            "shop",
            "checkout",
            "Deployment",
            json!({"internet": {"domains": ["pay.example.com"], "ips": ["198.51.100.10"], "ports": [443]}}),
            None,
            5,
        ),
        edge(
            "shop",
            "checkout",
            "Deployment",
            json!({"internet": {"domains": ["api.stripe.com"], "ips": ["203.0.113.7"], "ports": [443]}}),
            None,
            5,
        ),
        edge("shop", "frontend", "Deployment", workload("shop", "checkout"), Some(5050), 5),
        edge(
            "shop",
            "invoicer",
            "CronJob",
            json!({"aws": {"arn": "arn:aws:s3:::invoices", "actions": ["s3:GetObject", "s3:PutObject"]}}),
            None,
            5,
        ),
        edge("shop", "cartservice", "Deployment", workload("shop", "redis-cart"), Some(6379), 5),
        edge("ops", "backup", "CronJob", workload("shop", "redis-cart"), Some(6379), 3 * 24 * 60),
    ];
    api.report(&us, us_edges, vec![]).await;
    let eu_edges = vec![
        edge("pay", "gateway", "Deployment", workload("pay", "ledger"), Some(5432), 5),
        edge(
            "pay",
            "ledger",
            "Deployment",
            json!({"aws": {"arn": "arn:aws:dynamodb:eu-west-1:123456789012:table/ledger", "actions": ["dynamodb:PutItem"]}}),
            None,
            5,
        ),
    ];
    let exposed = vec![
        json!({"namespace": "pay", "name": "gateway", "kind": "Deployment", "addresses": ["198.51.100.10"], "hostnames": ["pay.example.com"]}),
    ];
    api.report(&eu, eu_edges, exposed).await;
    token
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test]
async fn the_page_draws_the_access_graph_in_a_real_browser() {
    let binary = chromium();
    let browser = Browser { binary };
    let api = Api::start("cloudweb").await;
    let token = shop(&api).await;
    let graph = api.get("/api/v1/access-graph", Some(&token)).await.json();
    let node_ids: Vec<String> = graph["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap().to_owned())
        .collect();
    let edge_count = graph["edges"].as_array().unwrap().len();
    assert_eq!(edge_count, 11, "{graph:#}");

    // A link with a token is not adopted silently: the page names the organisation and asks.
    let shot = screenshot_path("access-graph-link.png");
    let page = browser
        .load(&api.url(&format!("#token={token}&select=us/shop/checkout")), Some(&shot))
        .await;
    assert_eq!(page.state(), "confirm", "{}", page.dom);
    let confirm = page.section("confirm", "</section>");
    assert!(
        confirm.contains(">acme<") && confirm.contains("first token") && confirm.contains("admin"),
        "{confirm}"
    );
    assert!(page.attrs("data-node-id").is_empty(), "nothing is loaded before the user agrees");
    assert!(!page.dom.contains(&token), "the token is not written into the page");
    assert_png(&shot);

    // Signed in: the whole graph, grouped by cluster and namespace.
    let shot = screenshot_path("access-graph.png");
    let page = browser.load(&api.signed_in(&token, ""), Some(&shot)).await;
    assert_eq!(page.state(), "ready", "{}", page.dom);
    let drawn = sorted(page.attrs("data-node-id"));
    assert_eq!(drawn, sorted(node_ids.clone()), "one node element per node of the graph");
    for id in [
        "us/shop/frontend",
        "us/shop/service/currency",
        "us/catalog/productcatalog",
        "eu/pay/gateway",
        "internet/api.stripe.com",
        "aws/arn:aws:s3:::invoices",
        "aws/arn:aws:dynamodb:eu-west-1:123456789012:table/ledger",
    ] {
        assert!(drawn.iter().any(|d| d == id), "{id} is drawn: {drawn:?}");
    }
    let edges = page.attrs("data-edge");
    assert_eq!(edges.len(), edge_count, "{edges:?}");
    assert!(
        edges.contains(&"us/shop/checkout -> eu/pay/gateway".to_owned()),
        "the cross-cluster call: {edges:?}"
    );
    assert!(
        page.dom.contains("class=\"edge k-workload cross\""),
        "the cross-cluster call is drawn as one"
    );
    assert_eq!(page.attr("data-edges").as_deref(), Some("11"));
    assert_eq!(sorted(page.attrs("data-cluster")), vec!["eu", "us"], "a box per cluster");
    assert_eq!(
        sorted(page.attrs("data-namespace")),
        vec!["eu/pay", "us/catalog", "us/ops", "us/shop"],
        "a box per namespace"
    );
    assert_eq!(
        sorted(page.attrs("data-outside")),
        vec!["aws", "internet"],
        "internet and AWS targets in boxes of their own"
    );
    assert!(
        page.dom.contains("class=\"node internet\"") && page.dom.contains("class=\"node aws\""),
        "internet and AWS nodes look different"
    );
    assert_eq!(
        sorted(page.attrs("data-download-cluster")),
        vec!["eu", "us"],
        "a ClientIntents download per cluster"
    );
    assert!(!page.dom.contains(&token), "the token is not written into the page");
    assert_png(&shot);

    // A preselected workload: its calls and callers in the side panel.
    let shot = screenshot_path("access-graph-selected.png");
    let page = browser.load(&api.signed_in(&token, "select=us/shop/checkout"), Some(&shot)).await;
    assert_eq!(page.state(), "ready");
    let details = page.section("details", "</div>");
    assert_eq!(attrs_in(details, "data-selected"), vec!["us/shop/checkout"]);
    let calls = page.section("calls", " id=\"callers\"");
    assert_eq!(
        sorted(attrs_in(calls, "data-peer")),
        vec!["eu/pay/gateway", "internet/api.stripe.com"],
        "{calls}"
    );
    assert!(
        calls.contains("443/TCP")
            && calls.contains("pay.example.com")
            && calls.contains("cross-cluster"),
        "ports, the matched hostname: {calls}"
    );
    let callers = page.section("callers", "</div>");
    assert_eq!(attrs_in(callers, "data-peer"), vec!["us/shop/frontend"], "{callers}");
    assert!(callers.contains("5050/TCP"), "{callers}");
    assert!(
        page.dom.contains("class=\"node workload selected\""),
        "the selection is marked in the drawing"
    );
    assert_eq!(
        attrs_in(details, "data-download-cluster"),
        vec!["us"],
        "the selected workload's cluster's ClientIntents"
    );
    assert_png(&shot);

    // An AWS target's callers show the actions.
    let page = browser.load(&api.signed_in(&token, "select=aws/arn:aws:s3:::invoices"), None).await;
    let callers = page.section("callers", "</div>");
    assert_eq!(attrs_in(callers, "data-peer"), vec!["us/shop/invoicer"]);
    assert!(callers.contains("s3:GetObject, s3:PutObject"), "{callers}");

    // Filters from the fragment reach the API: the last day drops the three-day-old call;
    // one cluster keeps the calls touching it.
    let page = browser.load(&api.signed_in(&token, "window=24h"), None).await;
    assert_eq!(page.attrs("data-edge").len(), edge_count - 1);
    assert!(!page.attrs("data-node-id").contains(&"us/ops/backup".to_owned()));
    let page = browser.load(&api.signed_in(&token, "cluster=eu"), None).await;
    assert_eq!(
        sorted(page.attrs("data-edge")),
        vec![
            "eu/pay/gateway -> eu/pay/ledger",
            "eu/pay/ledger -> aws/arn:aws:dynamodb:eu-west-1:123456789012:table/ledger",
            "us/shop/checkout -> eu/pay/gateway"
        ]
    );

    // No token: the login form. A wrong token: the login form saying so.
    let page = browser.load(&api.url(""), None).await;
    assert_eq!(page.state(), "login", "{}", page.dom);
    assert!(
        page.dom.contains("<section id=\"login\" class=\"login\">"),
        "the login form is shown: {}",
        page.dom
    );
    assert!(page.attrs("data-node-id").is_empty());
    let shot = screenshot_path("access-graph-wrong-token.png");
    let page = browser
        .load(&api.url("#token=imt_00000000000000000000000000000000_wrong"), Some(&shot))
        .await;
    assert_eq!(page.state(), "login");
    let error = page.section("login-error", "</p>");
    assert!(
        error.contains("That API token was not accepted")
            && error.contains("invalid or revoked API token"),
        "{error}"
    );
    assert!(!error.contains("hidden"), "the error is visible: {error}");
    assert_png(&shot);
}

/// "Changes since" colours the calls first seen after that moment and those not seen since.
#[tokio::test]
async fn the_page_colours_new_and_gone_calls() {
    let binary = chromium();
    let browser = Browser { binary };
    let api = Api::start("cloudweb").await;
    let token = api.org("initech").await;
    let jwt = api.cluster(&token, "prod").await;
    let call = |target: &str, first_minutes_ago: i64, last_minutes_ago: i64| {
        json!({"client": {"namespace": "shop", "name": "frontend", "kind": "Deployment"},
               "target": workload("shop", target),
               "first_seen": ago(first_minutes_ago), "last_seen": ago(last_minutes_ago), "connections": 1})
    };
    let day = 24 * 60;
    api.report(
        &jwt,
        vec![
            call("recommendations", 10, 5),
            call("legacy-cart", 3 * day, 2 * day),
            call("cartservice", 3 * day, 5),
        ],
        vec![],
    )
    .await;

    let shot = screenshot_path("access-graph-changes.png");
    let page = browser.load(&api.signed_in(&token, "changes=24h"), Some(&shot)).await;
    assert_eq!(page.state(), "ready", "{}", page.dom);
    let class_of = |target: &str| {
        let marker = format!("data-edge=\"prod/shop/frontend -&gt; prod/shop/{target}\"");
        let at = page.dom.find(&marker).unwrap_or_else(|| panic!("{marker} in {}", page.dom));
        let path = &page.dom[page.dom[..at].rfind("<path").unwrap()..at];
        attrs_in(path, "class").into_iter().next().unwrap()
    };
    assert_eq!(class_of("recommendations"), "edge k-workload change-new");
    assert_eq!(class_of("legacy-cart"), "edge k-workload change-gone");
    assert_eq!(class_of("cartservice"), "edge k-workload", "seen before and since: unmarked");
    assert_eq!(page.attr("data-new").as_deref(), Some("1"));
    assert_eq!(page.attr("data-gone").as_deref(), Some("1"));
    let summary = page.section("summary", "</p>");
    assert!(summary.contains("since a day ago: 1 new, 1 gone"), "{summary}");
    assert!(page.dom.contains("<body data-state=\"ready\" class=\"changes\""), "the legend shows");
    assert_png(&shot);

    // Off: nothing is marked.
    let page = browser.load(&api.signed_in(&token, ""), None).await;
    assert_eq!(page.attrs("data-edge").len(), 3);
    assert!(!page.dom.contains("class=\"edge k-workload change-"), "{}", page.dom);
    assert_eq!(page.attr("data-new"), None);
}

/// Thousands of edges draw without the page freezing: the layout is linear in the edges.
#[tokio::test]
async fn the_page_draws_thousands_of_edges() {
    let binary = chromium();
    let browser = Browser { binary };
    let api = Api::start("cloudweb").await;
    let token = api.org("bigcorp").await;
    let jwt = api.cluster(&token, "prod").await;
    // 60 namespaces of 5 workloads in a few tiers, each calling several of the next tier, plus
    // internet and AWS targets: 2,000+ edges.
    let mut edges = Vec::new();
    let name = |ns: usize, w: usize| (format!("team-{ns}"), format!("svc-{w}"));
    for ns in 0..60 {
        for w in 0..5 {
            let (cns, client) = name(ns, w);
            for k in 0..6 {
                let (tns, target) = name((ns + k * 7 + 1) % 60, (w + 1 + k) % 5);
                edges.push(edge(
                    &cns,
                    &client,
                    "Deployment",
                    workload(&tns, &target),
                    Some(8080),
                    5,
                ));
            }
            edges.push(edge(
                &cns,
                &client,
                "Deployment",
                json!({"internet": {"domains": [format!("api{}.example.com", (ns * 5 + w) % 40)], "ports": [443]}}),
                None,
                5,
            ));
            edges.push(edge(
                &cns,
                &client,
                "Deployment",
                json!({"aws": {"arn": format!("arn:aws:s3:::bucket-{}", ns % 25), "actions": ["s3:GetObject"]}}),
                None,
                5,
            ));
        }
    }
    api.report(&jwt, edges, vec![]).await;
    let graph = api.get("/api/v1/access-graph", Some(&token)).await.json();
    let edge_count = graph["edges"].as_array().unwrap().len();
    assert!(edge_count >= 2000, "{edge_count}");

    let started = Instant::now();
    let shot = screenshot_path("access-graph-large.png");
    let page = browser.load(&api.signed_in(&token, "select=prod/team-0/svc-0"), Some(&shot)).await;
    let took = started.elapsed();
    assert_eq!(page.state(), "ready");
    assert_eq!(page.attrs("data-edge").len(), edge_count);
    assert_eq!(page.attrs("data-node-id").len(), graph["nodes"].as_array().unwrap().len());
    println!("{edge_count} edges loaded, drawn and dumped in {:.1} s", took.as_secs_f64());
    assert!(took < Duration::from_secs(30), "the page took {took:?} for {edge_count} edges");
    assert_png(&shot);
}

#[test]
fn the_helpers_hide_tokens_and_read_attributes() {
    assert_eq!(redact("http://x/#token=imt_a_b&select=y"), "http://x/#token=…&select=y");
    assert_eq!(redact("http://x/#token=imt_a_b"), "http://x/#token=…");
    assert_eq!(
        redact("http://x/test-sign-in#imt_a_b#select=y"),
        "http://x/test-sign-in#…#select=y"
    );
    assert_eq!(
        attrs_in(r#"<g data-node-id="a&amp;b"></g><g data-node-id="c">"#, "data-node-id"),
        vec!["a&b", "c"]
    );
}
