//! Shared by the large-organisation page test (`tests/web_large`) and the page benchmark
//! (`benches/page.rs`): the API on a real socket against a throwaway PostgreSQL, an organisation
//! of any size ingested through the API, and headless Chromium driven over the DevTools protocol
//! with real mouse, wheel and keyboard input (what a WebDriver client sends too).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use base64::Engine as _;
use cloud_api::store::{ReadLimits, Store};
use cloud_api::tokens::{JwtIssuer, SigningKey};
use cloud_api::{AppState, Config, Protections};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;
use tower::ServiceExt;

// === the API ===

/// Served by the tests only, never by cloud-api: stores the token where the page keeps it (as
/// after the user pasted it) and goes on to the page with the rest of the fragment.
const SIGN_IN: &str = r##"<!doctype html><script>
const [token, rest] = location.hash.slice(1).split("#");
sessionStorage.setItem("intentmap.apiToken", decodeURIComponent(token));
location.replace("/#" + (rest || ""));
</script>"##;

pub struct Api {
    pub state: AppState,
    pub addr: SocketAddr,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Api {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Api {
    pub async fn start(database: &str) -> Api {
        Api::start_reading(database, ReadLimits::default()).await
    }

    /// The API with these bounds on graph reads (a small `max_edges` makes the page treat an
    /// organisation as very large).
    pub async fn start_reading(database: &str, reads: ReadLimits) -> Api {
        let server = testkit::pg::server()
            .await
            .expect("PostgreSQL for tests (run scripts/ensure-postgres.sh)");
        let database_url = server.fresh_database(database).await.expect("a fresh test database");
        cloud_api::migrate(&database_url).await.expect("migrations apply");
        let jwt = JwtIssuer::new(
            "https://cloud.test".into(),
            "intentmap-ingest".into(),
            Duration::from_secs(300),
            vec![SigningKey::generate()],
        )
        .unwrap();
        let store = Store::connect(&database_url, 4).await.expect("connect to the test database");
        let protections = Protections { reads, ..Default::default() };
        let state = cloud_api::state_from(store, jwt, Config::default(), protections);
        let listener =
            tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a local port");
        let addr = listener.local_addr().unwrap();
        let app = cloud_api::app(state.clone())
            .route("/test-sign-in", axum::routing::get(|| async { axum::response::Html(SIGN_IN) }));
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("the API serves");
        });
        Api { state, addr, server }
    }

    /// The page signed in with `token`, then showing `fragment`.
    pub fn signed_in(&self, token: &str, fragment: &str) -> String {
        format!("http://{}/test-sign-in#{token}#{fragment}", self.addr)
    }

    /// The page's address with `fragment` (after `/`).
    pub fn url(&self, fragment: &str) -> String {
        format!("http://{}/{fragment}", self.addr)
    }

    /// A request through the API's router in-process; `body` with its content type.
    pub async fn call(
        &self,
        method: Method,
        uri: &str,
        bearer: Option<&str>,
        body: Option<(String, &str)>,
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = bearer {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let body = match body {
            Some((text, content_type)) => {
                req = req.header(header::CONTENT_TYPE, content_type);
                Body::from(text)
            }
            None => Body::empty(),
        };
        let res =
            cloud_api::app(self.state.clone()).oneshot(req.body(body).unwrap()).await.unwrap();
        let (status, headers) = (res.status(), res.headers().clone());
        let body = axum::body::to_bytes(res.into_body(), usize::MAX).await.unwrap();
        Reply { status, headers, body }
    }

    pub async fn get(&self, uri: &str, bearer: Option<&str>) -> Reply {
        self.call(Method::GET, uri, bearer, None).await
    }

    /// An organisation; returns its API token.
    pub async fn org(&self, name: &str) -> String {
        self.state.store.create_org(name).await.expect("create org").api_token
    }

    /// Registers a cluster through the API and returns a cluster access token for it.
    pub async fn cluster(&self, api_token: &str, name: &str) -> String {
        let body = json!({ "name": name }).to_string();
        let reply = self
            .call(
                Method::POST,
                "/api/v1/clusters",
                Some(api_token),
                Some((body, "application/json")),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
        let creds = reply.json();
        let form = format!(
            "grant_type=client_credentials&client_id={}&client_secret={}",
            creds["client_id"].as_str().unwrap(),
            creds["client_secret"].as_str().unwrap()
        );
        let reply = self
            .call(
                Method::POST,
                "/oauth/token",
                None,
                Some((form, "application/x-www-form-urlencoded")),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        reply.json()["access_token"].as_str().unwrap().to_owned()
    }

    /// Ingests a report of `edges` and `exposed` workloads as the cluster of `cluster_jwt`.
    pub async fn report(&self, cluster_jwt: &str, edges: Vec<Value>, exposed: Vec<Value>) {
        let report = json!({
            "schema_version": 1, "report_id": uuid::Uuid::new_v4(), "generated_at": chrono::Utc::now(),
            "edges": edges, "exposed": exposed,
        });
        let reply = self
            .call(
                Method::POST,
                "/api/v1/reports",
                Some(cluster_jwt),
                Some((report.to_string(), "application/json")),
            )
            .await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text());
    }

    /// The whole graph read in pages of `limit` (what a server with a small `max_edges` needs),
    /// as one graph: each node once, the pages' edges one after another.
    pub async fn graph_in_pages(&self, token: &str, limit: usize) -> Value {
        let (mut nodes, mut edges) = (Vec::new(), Vec::new());
        let mut seen = std::collections::BTreeSet::new();
        let mut after: Option<String> = None;
        loop {
            let mut uri = format!("/api/v1/access-graph?limit={limit}");
            if let Some(next) = &after {
                uri.push_str(&format!("&after={next}"));
            }
            let reply = self.get(&uri, Some(token)).await;
            assert_eq!(reply.status, StatusCode::OK, "{uri}: {}", reply.text());
            let page = reply.json();
            for n in page["nodes"].as_array().unwrap() {
                if seen.insert(n["id"].as_str().unwrap().to_owned()) {
                    nodes.push(n.clone());
                }
            }
            edges.extend(page["edges"].as_array().unwrap().iter().cloned());
            match page["next"].as_str() {
                Some(next) => after = Some(next.to_owned()),
                None => return json!({"nodes": nodes, "edges": edges}),
            }
        }
    }

    pub async fn graph(&self, token: &str) -> Value {
        let reply = self.get("/api/v1/access-graph", Some(token)).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        reply.json()
    }
}

/// What the API answered.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("expected JSON ({e}), got {:?}", self.text()))
    }

    pub fn header(&self, name: header::HeaderName) -> String {
        self.headers
            .get(&name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_else(|| panic!("no {name} header"))
    }
}

// === an organisation of a given size, generated deterministically ===

pub const NAMESPACES: [&str; 5] = ["shop", "payments", "catalog", "identity", "analytics"];

/// `clusters` clusters named `prod-0`, `prod-1`, ..., each with the five `NAMESPACES`, each of
/// `per_namespace` workloads named `<namespace>-<nn>` (the same names in every cluster, as real
/// organisations have), each calling `calls` (at most 5) others: two in its own namespace and
/// one in each of the next namespaces of its cluster.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub clusters: usize,
    pub per_namespace: usize,
    pub calls: usize,
}

impl Shape {
    /// 10 clusters, 1,000 workloads, 5,000 calls.
    pub const LARGE: Shape = Shape { clusters: 10, per_namespace: 20, calls: 5 };
    /// 20 clusters, 50,000 workloads, 250,000 calls: more than one graph read returns.
    pub const HUGE: Shape = Shape { clusters: 20, per_namespace: 500, calls: 5 };
    /// 1 cluster, 10 workloads (two per namespace), 10 calls.
    pub const SMALL: Shape = Shape { clusters: 1, per_namespace: 2, calls: 1 };

    pub fn workloads(&self) -> usize {
        self.clusters * NAMESPACES.len() * self.per_namespace
    }

    pub fn cluster_name(c: usize) -> String {
        format!("prod-{c}")
    }

    pub fn workload_name(ns: usize, w: usize) -> String {
        format!("{}-{w:02}", NAMESPACES[ns])
    }

    /// The calls of one cluster (the same in each), as its agent reports them.
    pub fn edges(&self) -> Vec<Value> {
        let n = NAMESPACES.len();
        let per = self.per_namespace;
        let mut edges = Vec::new();
        for (ns, namespace) in NAMESPACES.iter().enumerate() {
            for w in 0..per {
                // (namespace, workload) of each call; distinct for per >= 9.
                let targets = [
                    (ns, (w + 1) % per),
                    (ns, (w + 8) % per),
                    ((ns + 1) % n, (w * 3 + 1) % per),
                    ((ns + 2) % n, (w * 7 + 3) % per),
                    ((ns + 3) % n, (w * 11 + 5) % per),
                ];
                let targets: Vec<_> = if self.calls == 1 {
                    // The small case: a chain through the namespaces.
                    vec![((ns + 1) % n, w)]
                } else {
                    targets[..self.calls].to_vec()
                };
                for (tns, tw) in targets {
                    edges.push(json!({
                        "client": {"namespace": namespace, "name": Shape::workload_name(ns, w), "kind": "Deployment"},
                        "target": {"kubernetes": {"namespace": NAMESPACES[tns], "name": Shape::workload_name(tns, tw), "kind": "Deployment"}},
                        "ports": [{"port": 8080, "protocol": "TCP"}],
                        "first_seen": chrono::Utc::now() - chrono::Duration::hours(2),
                        "last_seen": chrono::Utc::now() - chrono::Duration::minutes(5),
                        "connections": 3,
                    }));
                }
            }
        }
        edges
    }
}

/// An organisation of `shape`, every cluster's calls ingested through the API; returns its API
/// token.
pub async fn seed(api: &Api, org: &str, shape: Shape) -> String {
    let token = api.org(org).await;
    for c in 0..shape.clusters {
        let jwt = api.cluster(&token, &Shape::cluster_name(c)).await;
        api.report(&jwt, shape.edges(), vec![]).await;
    }
    token
}

// === Chromium over the DevTools protocol ===

/// Debian's chromium; a missing one fails the test naming the package.
pub fn chromium_binary() -> PathBuf {
    testkit::need::command("chromium", "chromium")
}

/// How the tests start Chromium: headless, and quiet.
pub const HEADLESS: &[&str] = &[
    "--headless",
    // Tests run as root in containers, where Chromium's sandbox cannot start.
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    // No internet here: nothing may try to reach Google.
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
];

/// A new, empty Chromium profile directory named `<prefix>-<pid>-<uuid>` under the temporary
/// directory.
pub fn fresh_profile(prefix: &str) -> PathBuf {
    let profile = std::env::temp_dir().join(format!(
        "{prefix}-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&profile)
        .unwrap_or_else(|e| panic!("creating {}: {e}", profile.display()));
    profile
}

pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// Where a test saves the screenshot `name`: `target/web-test/<name>`, made empty.
pub fn screenshot_path(name: &str) -> PathBuf {
    let dir = target_dir().join("web-test");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    path
}

/// A real screenshot (a PNG of some size) is at `path`; says where.
pub fn assert_png(path: &Path) {
    let bytes =
        std::fs::read(path).unwrap_or_else(|e| panic!("no screenshot at {}: {e}", path.display()));
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 10_000,
        "{} is not a real screenshot ({} bytes)",
        path.display(),
        bytes.len()
    );
    println!("screenshot: {}", path.canonicalize().unwrap_or_else(|_| path.to_owned()).display());
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub struct Chromium {
    child: tokio::process::Child,
    profile: PathBuf,
    socket: Socket,
    session: String,
    next_id: u64,
    /// Script errors, console output and blocked loads (CSP violations) the page produced.
    pub console: Vec<String>,
}

/// Where an element is on the screen, in CSS pixels.
#[derive(Debug, Clone, Copy)]
pub struct Rect {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
}

impl Rect {
    pub fn centre(&self) -> (f64, f64) {
        (self.x + self.w / 2.0, self.y + self.h / 2.0)
    }
}

impl Chromium {
    /// A 1400×900 page showing the access graph of `api` signed in with `token`, once it is
    /// drawn.
    pub async fn graph_page(api: &Api, token: &str) -> Chromium {
        let mut page = Chromium::launch(1400, 900).await;
        page.goto(&api.signed_in(token, "")).await;
        page.wait_for(
            "document.body.dataset.state === 'ready' && Number(document.getElementById('canvas').dataset.drawn) >= 1",
            "the graph to be drawn",
        )
        .await;
        page
    }

    /// A headless Chromium with a fresh profile and one page of `width`×`height`.
    pub async fn launch(width: u32, height: u32) -> Chromium {
        let binary = chromium_binary();
        let profile = fresh_profile("intentmap-page");
        let child = tokio::process::Command::new(&binary)
            .args(HEADLESS)
            .args(["--hide-scrollbars", "--remote-debugging-port=0"])
            .arg(format!("--window-size={width},{height}"))
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
        // Chromium writes the port it listens on and the browser's endpoint here.
        let port_file = profile.join("DevToolsActivePort");
        let started = Instant::now();
        let endpoint = loop {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                let mut lines = text.lines();
                if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                    break format!("ws://127.0.0.1:{port}{path}");
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "Chromium did not open its DevTools port within 30 s ({})",
                port_file.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let (socket, _) = tokio_tungstenite::connect_async(endpoint.as_str())
            .await
            .unwrap_or_else(|e| panic!("connect to Chromium's DevTools at {endpoint}: {e}"));
        let mut browser = Chromium {
            child,
            profile,
            socket,
            session: String::new(),
            next_id: 0,
            console: vec![],
        };
        let target =
            browser.browser_call("Target.createTarget", json!({"url": "about:blank"})).await;
        let target_id = target["targetId"].as_str().expect("a target id").to_owned();
        let attached = browser
            .browser_call("Target.attachToTarget", json!({"targetId": target_id, "flatten": true}))
            .await;
        browser.session = attached["sessionId"].as_str().expect("a session id").to_owned();
        for domain in ["Page.enable", "Runtime.enable", "Log.enable"] {
            browser.call(domain, json!({})).await;
        }
        browser
            .call(
                "Emulation.setDeviceMetricsOverride",
                json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}),
            )
            .await;
        browser
    }

    async fn browser_call(&mut self, method: &str, params: Value) -> Value {
        self.send(method, params, false)
            .await
            .unwrap_or_else(|error| panic!("{method} failed: {error}"))
    }

    /// A DevTools command on the page; its result.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        self.send(method, params, true)
            .await
            .unwrap_or_else(|error| panic!("{method} failed: {error}"))
    }

    /// The result of a command, or the error Chromium answered with.
    async fn send(&mut self, method: &str, params: Value, on_page: bool) -> Result<Value, Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if on_page {
            message["sessionId"] = json!(self.session);
        }
        self.socket
            .send(Message::Text(message.to_string().into()))
            .await
            .unwrap_or_else(|e| panic!("send {method} to Chromium: {e}"));
        let deadline = Duration::from_secs(60);
        loop {
            let next = tokio::time::timeout(deadline, self.socket.next())
                .await
                .unwrap_or_else(|_| panic!("Chromium did not answer {method} within {deadline:?}"));
            let message = match next {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(_)) => continue,
                Some(Err(e)) => {
                    panic!("Chromium's DevTools connection failed during {method}: {e}")
                }
                None => panic!("Chromium closed its DevTools connection during {method}"),
            };
            let value: Value = serde_json::from_str(message.as_str()).expect("DevTools sends JSON");
            if value["id"].as_u64() == Some(id) {
                if let Some(error) = value.get("error") {
                    return Err(error.clone());
                }
                return Ok(value["result"].clone());
            }
            self.note_event(&value);
        }
    }

    fn note_event(&mut self, event: &Value) {
        let params = &event["params"];
        match event["method"].as_str() {
            Some("Runtime.exceptionThrown") => {
                let details = &params["exceptionDetails"];
                self.console.push(format!(
                    "exception: {} {}",
                    details["text"].as_str().unwrap_or(""),
                    details["exception"]["description"].as_str().unwrap_or("")
                ));
            }
            Some("Runtime.consoleAPICalled") => {
                self.console.push(format!("console.{}: {}", params["type"], params["args"]));
            }
            Some("Log.entryAdded") => {
                let entry = &params["entry"];
                self.console
                    .push(format!("{} {}: {}", entry["source"], entry["level"], entry["text"]));
            }
            _ => {}
        }
    }

    /// Evaluates `expression` in the page (awaiting a promise) and returns its value.
    pub async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        if let Some(details) = result.get("exceptionDetails") {
            panic!("{expression} threw: {details}");
        }
        result["result"]["value"].clone()
    }

    pub async fn goto(&mut self, url: &str) {
        self.call("Page.navigate", json!({ "url": url })).await;
    }

    /// Waits until `expression` is truthy in the page; returns its value. Meanwhile the page
    /// may be loading: an exception or a context torn down by a navigation counts as not yet.
    pub async fn wait_for(&mut self, expression: &str, what: &str) -> Value {
        let started = Instant::now();
        let guarded =
            format!("(() => {{ try {{ return ({expression}); }} catch {{ return null; }} }})()");
        loop {
            let params =
                json!({"expression": guarded, "returnByValue": true, "awaitPromise": true});
            let value = match self.send("Runtime.evaluate", params, true).await {
                Ok(result) => result["result"]["value"].clone(),
                Err(_) => Value::Null,
            };
            let truthy = match &value {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return value;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "waited 60 s for {what} ({expression}); the page's console: {:?}",
                self.console
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Where the first element matching `selector` is on the screen.
    pub async fn rect(&mut self, selector: &str) -> Rect {
        let expression = format!(
            "(() => {{ const e = document.querySelector({}); if (!e) return null; const r = e.getBoundingClientRect(); return [r.x, r.y, r.width, r.height]; }})()",
            json!(selector)
        );
        let value = self.eval(&expression).await;
        let n = |i: usize| value[i].as_f64().unwrap_or_else(|| panic!("no {selector} on the page"));
        Rect { x: n(0), y: n(1), w: n(2), h: n(3) }
    }

    /// A real left click at (x, y): the mouse moves there, presses and releases.
    pub async fn click(&mut self, x: f64, y: f64) {
        self.mouse("mouseMoved", x, y, "none", 0).await;
        self.mouse("mousePressed", x, y, "left", 1).await;
        self.mouse("mouseReleased", x, y, "left", 0).await;
    }

    async fn mouse(&mut self, kind: &str, x: f64, y: f64, button: &str, buttons: u8) {
        self.call(
            "Input.dispatchMouseEvent",
            json!({"type": kind, "x": x, "y": y, "button": button, "buttons": buttons, "clickCount": if button == "none" { 0 } else { 1 }}),
        )
        .await;
    }

    /// Clicks the middle of the first element matching `selector`.
    pub async fn click_on(&mut self, selector: &str) -> Rect {
        let rect = self.rect(selector).await;
        let (x, y) = rect.centre();
        self.click(x, y).await;
        rect
    }

    /// Drags with the left button from one point to another.
    pub async fn drag(&mut self, from: (f64, f64), to: (f64, f64)) {
        self.mouse("mouseMoved", from.0, from.1, "none", 0).await;
        self.mouse("mousePressed", from.0, from.1, "left", 1).await;
        for step in 1..=8 {
            let f = f64::from(step) / 8.0;
            let (x, y) = (from.0 + (to.0 - from.0) * f, from.1 + (to.1 - from.1) * f);
            self.call(
                "Input.dispatchMouseEvent",
                json!({"type": "mouseMoved", "x": x, "y": y, "button": "left", "buttons": 1}),
            )
            .await;
        }
        self.mouse("mouseReleased", to.0, to.1, "left", 0).await;
    }

    /// A mouse wheel turn at (x, y); negative `delta_y` is away from the user.
    pub async fn wheel(&mut self, x: f64, y: f64, delta_y: f64) {
        self.call(
            "Input.dispatchMouseEvent",
            json!({"type": "mouseWheel", "x": x, "y": y, "deltaX": 0, "deltaY": delta_y}),
        )
        .await;
    }

    /// Types `text` into the focused element.
    pub async fn type_text(&mut self, text: &str) {
        self.call("Input.insertText", json!({ "text": text })).await;
    }

    pub async fn press_enter(&mut self) {
        let key = json!({"key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13, "nativeVirtualKeyCode": 13});
        let mut down = key.clone();
        down["type"] = json!("keyDown");
        down["text"] = json!("\r");
        self.call("Input.dispatchKeyEvent", down).await;
        let mut up = key;
        up["type"] = json!("keyUp");
        self.call("Input.dispatchKeyEvent", up).await;
    }

    /// Saves what the page shows as a PNG.
    pub async fn screenshot(&mut self, path: &Path) {
        let shot = self.call("Page.captureScreenshot", json!({"format": "png"})).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("screenshot data"))
            .expect("base64 PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    /// Waits for the page's next drawing after `drawn_before` (the count in `#canvas`'s
    /// `data-drawn`, which the page bumps once the browser has painted a new drawing).
    pub async fn wait_drawn_after(&mut self, drawn_before: u64) {
        let expression = format!(
            "Number(document.getElementById('canvas').dataset.drawn || 0) > {drawn_before}"
        );
        self.wait_for(&expression, "the page to draw the graph again").await;
    }

    pub async fn drawn(&mut self) -> u64 {
        self.eval("Number(document.getElementById('canvas').dataset.drawn || 0)")
            .await
            .as_u64()
            .unwrap_or(0)
    }

    pub async fn close(mut self) {
        // Chromium may drop the connection before it answers: no reply is awaited.
        self.next_id += 1;
        let close = json!({"id": self.next_id, "method": "Browser.close", "params": {}});
        let _ = self.socket.send(Message::Text(close.to_string().into())).await;
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
        let _ = self.child.kill().await;
    }
}

impl Drop for Chromium {
    /// Also after a failed assertion: the process dies with `child` (kill on drop), the profile
    /// goes here.
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
