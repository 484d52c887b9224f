//! The Istio watcher against sidecars played by HTTP servers in the test, serving Envoy's
//! Prometheus text as Istio's sidecars do (all of `istio_requests_total`'s usual labels,
//! histograms and Envoy's own metrics around it), one server per pod address (127.0.0.x) on
//! the same port. Rounds of scrapes are driven one by one ([`scrape_round`]) to check the
//! windowing, then the whole mapper (`serve`) runs the watcher on its own. Hostile sidecars are
//! in `istio_hostile.rs`.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use clap::Parser;
use cluster_agent::mapper::istio::{client, scrape_round, IstioConfig};
use cluster_agent::mapper::telemetry::IstioWatchStats;
use cluster_agent::mapper::{serve, MapperArgs, SharedMapper};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use mapper_core::fixtures::*;
use mapper_core::{Index, Mapper};
use model::{Edge, HttpResource, Target, WorkloadRef};
use testkit::kube_api::FakeApiServer;

const PATH: &str = "/stats/prometheus";

// === sidecars ===

/// What one sidecar's `istio_requests_total` holds: the series' distinguishing labels, and values.
#[derive(Clone, Default)]
struct Counters {
    uptime: u64,
    requests: BTreeMap<Series, u64>,
}

#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Series {
    reporter: &'static str,
    source: &'static str,
    destination: &'static str,
    service: &'static str,
    code: &'static str,
    /// `None`: Istio's default telemetry, without `request_method` and `request_path`.
    call: Option<(&'static str, &'static str)>,
}

fn series(
    reporter: &'static str,
    source: &'static str,
    destination: &'static str,
    call: Option<(&'static str, &'static str)>,
) -> Series {
    let service = if destination == "unknown" { "ledger" } else { destination };
    Series { reporter, source, destination, service, code: "200", call }
}

/// The sidecar's whole `/stats/prometheus` answer, in Envoy's layout.
fn envoy_text(counters: &Counters) -> String {
    let mut out = String::from("# TYPE envoy_cluster_upstream_cx_total counter\nenvoy_cluster_upstream_cx_total{cluster_name=\"xds-grpc\"} 3\n");
    out.push_str(&format!(
        "# TYPE envoy_server_uptime gauge\nenvoy_server_uptime{{}} {}\n",
        counters.uptime
    ));
    out.push_str("# TYPE istio_build gauge\nistio_build{component=\"proxy\",tag=\"1.22.3\"} 1\n");
    out.push_str("# TYPE istio_requests_total counter\n");
    for (s, value) in &counters.requests {
        let policy = if s.reporter == "destination" { "mutual_tls" } else { "unknown" };
        let mut labels = format!(
            "response_code=\"{code}\",reporter=\"{reporter}\",source_workload=\"{src}\",source_workload_namespace=\"shop\",\
             source_principal=\"spiffe://cluster.local/ns/shop/sa/{src}\",source_app=\"{src}\",source_version=\"\",\
             source_canonical_service=\"{src}\",source_canonical_revision=\"latest\",source_cluster=\"Kubernetes\",\
             destination_workload=\"{dst}\",destination_workload_namespace=\"shop\",destination_principal=\"spiffe://cluster.local/ns/shop/sa/{dst}\",\
             destination_app=\"{dst}\",destination_version=\"\",destination_service=\"{svc}.shop.svc.cluster.local\",\
             destination_canonical_service=\"{dst}\",destination_canonical_revision=\"latest\",destination_service_name=\"{svc}\",\
             destination_service_namespace=\"shop\",destination_cluster=\"Kubernetes\",request_protocol=\"http\",\
             response_flags=\"-\",grpc_response_status=\"\",connection_security_policy=\"{policy}\"",
            code = s.code,
            reporter = s.reporter,
            src = s.source,
            dst = s.destination,
            svc = s.service,
        );
        if let Some((method, path)) = s.call {
            labels.push_str(&format!(",request_method=\"{method}\",request_path=\"{path}\""));
        }
        out.push_str(&format!("istio_requests_total{{{labels}}} {value}\n"));
    }
    out.push_str("# TYPE istio_request_duration_milliseconds histogram\n");
    out.push_str("istio_request_duration_milliseconds_bucket{reporter=\"destination\",source_workload=\"web\",le=\"0.5\"} 2\n");
    out.push_str("istio_request_duration_milliseconds_bucket{reporter=\"destination\",source_workload=\"web\",le=\"+Inf\"} 13\n");
    out.push_str("istio_request_duration_milliseconds_sum{reporter=\"destination\",source_workload=\"web\"} 104.5\n");
    out.push_str("istio_request_duration_milliseconds_count{reporter=\"destination\",source_workload=\"web\"} 13\n");
    out.push_str("# TYPE istio_tcp_connections_opened_total counter\n");
    out.push_str("istio_tcp_connections_opened_total{reporter=\"source\",source_workload=\"web\",destination_service=\"redis.shop.svc.cluster.local\"} 2\n");
    out
}

/// One fake sidecar: its counters and how many times it was scraped.
#[derive(Clone, Default)]
struct Sidecar {
    counters: Arc<Mutex<Counters>>,
    scrapes: Arc<AtomicUsize>,
}

impl Sidecar {
    fn set(&self, uptime: u64, requests: &[(Series, u64)]) {
        let mut counters = self.counters.lock().unwrap();
        counters.uptime = uptime;
        counters.requests = requests.iter().cloned().collect();
    }

    fn scrapes(&self) -> usize {
        self.scrapes.load(Ordering::SeqCst)
    }
}

async fn metrics(State(sidecar): State<Sidecar>) -> String {
    sidecar.scrapes.fetch_add(1, Ordering::SeqCst);
    let counters = sidecar.counters.lock().unwrap().clone();
    envoy_text(&counters)
}

/// A sidecar server on each of `ips`, all on one port; returns the port and the sidecars.
async fn sidecars(ips: &[&str]) -> (u16, Vec<Sidecar>) {
    'port: for _ in 0..20 {
        let first =
            tokio::net::TcpListener::bind((ips[0].parse::<IpAddr>().unwrap(), 0)).await.unwrap();
        let port = first.local_addr().unwrap().port();
        let mut listeners = vec![first];
        for ip in &ips[1..] {
            match tokio::net::TcpListener::bind(SocketAddr::new(ip.parse().unwrap(), port)).await {
                Ok(listener) => listeners.push(listener),
                Err(_) => continue 'port,
            }
        }
        let mut all = Vec::new();
        for listener in listeners {
            let sidecar = Sidecar::default();
            let app = Router::new().route(PATH, get(metrics)).with_state(sidecar.clone());
            tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
            all.push(sidecar);
        }
        return (port, all);
    }
    panic!("no port free on all of {ips:?}");
}

// === the cluster ===

/// A Deployment with one pod at `ip`, with an Istio sidecar if `meshed`.
fn workload(namespace: &str, name: &str, ip: &str, meshed: bool) -> (Deployment, ReplicaSet, Pod) {
    let replicaset = format!("{name}-6b8f9d");
    let mut pod = mk_pod(namespace, &format!("{replicaset}-k4z2p"), &[ip])
        .owned_by("ReplicaSet", &replicaset)
        .labelled("app", name);
    if meshed {
        pod = pod.with_istio_sidecar().labelled("service.istio.io/canonical-name", name);
    }
    (
        Deployment { metadata: mk_deployment(namespace, name), ..Default::default() },
        ReplicaSet { metadata: mk_replicaset(namespace, &replicaset, name), ..Default::default() },
        pod,
    )
}

const WORKLOADS: &[(&str, &str, bool)] = &[
    ("web", "127.0.0.2", true),
    ("cart", "127.0.0.3", true),
    ("catalog", "127.0.0.4", true),
    // A sidecar that never answers.
    ("gone", "127.0.0.5", true),
    // Outside the mesh.
    ("ledger", "10.244.0.9", false),
];

/// istiod in istio-system: without it nothing is scraped.
fn control_plane() -> (Namespace, Service) {
    (
        Namespace { metadata: mk_namespace("istio-system"), ..Default::default() },
        mk_service("istio-system", "istiod", &["10.96.0.40"], &[("app", "istiod")]),
    )
}

fn index(index: &mut Index) {
    let (namespace, istiod) = control_plane();
    index.apply_meta("Namespace", &namespace.metadata);
    index.apply(&istiod);
    for (name, ip, meshed) in WORKLOADS {
        let (deployment, replicaset, pod) = workload("shop", name, ip, *meshed);
        index.apply_meta("Deployment", &deployment.metadata);
        index.apply_meta("ReplicaSet", &replicaset.metadata);
        index.apply(&pod);
    }
    index.apply(&mk_service("shop", "ledger", &["10.96.0.9"], &[("app", "ledger")]));
}

fn target(name: &str) -> Target {
    Target::Kubernetes(WorkloadRef::new("shop", name, Some("Deployment")))
}

fn from_web<'e>(edges: &'e [Edge], to: &str) -> &'e Edge {
    edges
        .iter()
        .find(|e| e.client.name == "web" && e.target == target(to))
        .unwrap_or_else(|| panic!("no edge web → {to}: {edges:#?}"))
}

fn res(path: &str, methods: &[&str]) -> HttpResource {
    HttpResource { path: path.into(), methods: methods.iter().map(|m| (*m).into()).collect() }
}

fn summary(edge: &Edge) -> (Vec<HttpResource>, u64) {
    (edge.http.clone(), edge.connections)
}

#[tokio::test]
async fn counter_increases_between_scrapes_become_http_edges() {
    let (port, sidecars) = sidecars(&["127.0.0.2", "127.0.0.3", "127.0.0.4"]).await;
    let [web, cart, catalog] = [&sidecars[0], &sidecars[1], &sidecars[2]];
    let mut mapper = Mapper::default();
    index(&mut mapper.index);
    let mapper = SharedMapper::new(mapper);
    let config = IstioConfig { port, timeout: Duration::from_secs(2), ..IstioConfig::default() };
    let http = client(&config).unwrap();
    let stats = IstioWatchStats::default();
    // A node agent saw web connect to ledger's Service (ledger has no sidecar to vouch for web's counts).
    let connect = model::observation::ObservationBatch {
        tcp: vec![model::observation::TcpConnection::between(
            "127.0.0.2".parse().unwrap(),
            "10.96.0.9".parse().unwrap(),
            8080,
            chrono::Utc::now(),
        )],
        ..Default::default()
    };
    mapper.lock().observe(&connect, chrono::Utc::now());
    let ledger_connections = 1;

    let get_cart = Some(("GET", "/api/cart"));
    let post_cart = Some(("POST", "/api/cart"));
    let web_round = |to_cart: u64, to_catalog: u64, entries: u64, balance: u64| {
        let mut failed = series("source", "web", "cart", get_cart);
        failed.code = "503";
        let mut requests = vec![
            (series("source", "web", "cart", get_cart), to_cart),
            (failed, 1),
            (series("source", "web", "catalog", None), to_catalog),
            (series("source", "web", "unknown", Some(("POST", "/ledger/entries"))), entries),
        ];
        if balance > 0 {
            requests.push((
                series("source", "web", "unknown", Some(("GET", "/ledger/balance?acct=7"))),
                balance,
            ));
        }
        requests
    };
    let cart_round = |get: u64, post: u64| {
        let mut failed = series("destination", "web", "cart", get_cart);
        failed.code = "503";
        vec![
            (series("destination", "web", "cart", get_cart), get),
            (failed, 1),
            (series("destination", "web", "cart", post_cart), post),
        ]
    };

    // Round 1: what the sidecars counted before the watcher started is a baseline.
    web.set(4000, &web_round(10, 6, 2, 0));
    cart.set(4000, &cart_round(10, 4));
    catalog.set(4000, &[(series("destination", "web", "catalog", None), 6)]);
    assert_eq!(
        scrape_round(&mapper, &http, &config, &stats).await,
        Some(4),
        "four pods have a sidecar"
    );
    assert_eq!(
        mapper.lock().snapshot().len(),
        1,
        "nothing before the first scrape counts (the one edge is the connection to ledger)"
    );

    // Round 2: what grew, once: cart's and catalog's own counts, not web's copies of them.
    web.set(4030, &web_round(13, 8, 5, 1));
    cart.set(4030, &cart_round(13, 4));
    catalog.set(4030, &[(series("destination", "web", "catalog", None), 8)]);
    scrape_round(&mapper, &http, &config, &stats).await;
    let edges = mapper.lock().snapshot();
    assert_eq!(
        summary(from_web(&edges, "cart")),
        (vec![res("/api/cart", &["GET"])], 3),
        "POST did not grow"
    );
    assert_eq!(
        summary(from_web(&edges, "catalog")),
        (vec![], 2),
        "default telemetry: an edge without paths"
    );
    assert_eq!(
        summary(from_web(&edges, "ledger")),
        (vec![res("/ledger/balance", &["GET"]), res("/ledger/entries", &["POST"])], ledger_connections + 4),
        "no sidecar at ledger: web's side counts, to the workload behind the Service, vouched for by the connection"
    );
    assert_eq!(edges.len(), 3, "{edges:#?}");
    let delta = mapper.lock().take_delta();
    assert_eq!(delta, edges, "the first upload carries exactly this");

    // Round 3: nothing moved: no new call, nothing to upload.
    scrape_round(&mapper, &http, &config, &stats).await;
    assert_eq!(mapper.lock().snapshot(), edges, "counters that stay are no calls");
    assert!(mapper.lock().take_delta().is_empty());

    // Round 4: cart's sidecar restarted (its uptime went back): its counters start over.
    cart.set(
        12,
        &[
            (series("destination", "web", "cart", get_cart), 2),
            (series("destination", "web", "cart", post_cart), 1),
            (series("destination", "web", "cart", Some(("PUT", "/api/cart/items?id=3"))), 1),
            (series("destination", "web", "cart", Some(("GET", "/files/a\\\\b"))), 1),
            (series("destination", "web", "cart", Some(("HEAD", "/api/cart"))), 2),
        ],
    );
    // web's own sidecar counts those calls too: what vouches for cart's paths.
    let mut web_calls = web_round(19, 8, 5, 1);
    for call in [("PUT", "/api/cart/items?id=3"), ("GET", "/files/a\\\\b")] {
        web_calls.push((series("source", "web", "cart", Some(call)), 1));
    }
    web.set(4060, &web_calls);
    scrape_round(&mapper, &http, &config, &stats).await;
    let edges = mapper.lock().snapshot();
    let to_cart = from_web(&edges, "cart");
    assert_eq!(
        summary(to_cart),
        (
            vec![
                res("/api/cart", &["GET", "POST"]),
                res("/api/cart/items", &["PUT"]),
                res("/files/a\\b", &["GET"])
            ],
            3 + 2 + 1 + 1 + 1 + 2
        ),
        "HEAD is counted as a call but records no path"
    );
    assert!(to_cart.first_seen < to_cart.last_seen);
    let delta = mapper.lock().take_delta();
    assert_eq!(delta.len(), 1, "only web → cart changed: {delta:#?}");
    assert_eq!(delta[0].connections, 7);
    assert_eq!(delta[0].http.len(), 3);

    let watched = stats;
    assert_eq!(watched.oversized.load(std::sync::atomic::Ordering::Relaxed), 0);
    let stats = mapper.lock().stats();
    assert_eq!(stats.istio_baselines, 3);
    assert_eq!(stats.istio_scrapes, 12);
    assert_eq!(stats.istio_scrape_failures, 4, "the sidecar that never answers, once a round");
    assert_eq!(
        stats.istio_counter_resets, 2,
        "cart's GET 200 and POST went down (the 503 series is gone)"
    );
    assert_eq!(
        stats.istio_uncorroborated, 0,
        "web's sidecar vouched for every call to cart, a connection for those to ledger"
    );
    assert_eq!(stats.istio_unknown_methods, 1);
    assert_eq!(stats.http_requests, 9 + 7);
    assert!(stats.istio_left_to_destination >= 3);
    assert_eq!((web.scrapes(), cart.scrapes(), catalog.scrapes()), (4, 4, 4));
}

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: MapperArgs,
}

#[tokio::test]
async fn the_mapper_scrapes_sidecars_on_its_own() {
    let (port, sidecars) = sidecars(&["127.0.0.2", "127.0.0.3"]).await;
    let [web, cart] = [&sidecars[0], &sidecars[1]];
    let api = FakeApiServer::start().await.unwrap();
    let (namespace, istiod) = control_plane();
    api.apply(&namespace);
    api.apply(&istiod);
    for (name, ip, meshed) in &WORKLOADS[..2] {
        let (deployment, replicaset, pod) = workload("shop", name, ip, *meshed);
        api.apply(&deployment);
        api.apply(&replicaset);
        api.apply(&pod);
    }
    let get_cart = Some(("GET", "/api/cart"));
    cart.set(100, &[(series("destination", "web", "cart", get_cart), 40)]);
    web.set(100, &[(series("source", "web", "cart", get_cart), 40)]);

    let dir = std::env::temp_dir().join(format!("istio-test-{}", uuid::Uuid::new_v4()));
    let port_flag = port.to_string();
    let outbox = dir.join("outbox");
    let args = Cli::parse_from([
        "mapper",
        "--outbox-dir",
        outbox.to_str().unwrap(),
        "--istio-scrape-interval-seconds",
        "0.1",
        "--istio-metrics-port",
        &port_flag,
        "--istio-metrics-path",
        PATH,
    ])
    .args;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let client = api.client();
    let mapper = tokio::spawn(async move { serve(args, client, listener).await.unwrap() });

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while cart.scrapes() < 2 || web.scrapes() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "the sidecars were not scraped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let http = reqwest::Client::new();
    let edges = || async {
        http.get(format!("{url}/v1/edges")).send().await.unwrap().json::<Vec<Edge>>().await.unwrap()
    };
    assert!(edges().await.is_empty(), "40 requests before the mapper started are not news");

    cart.set(100, &[(series("destination", "web", "cart", get_cart), 45)]);
    web.set(100, &[(series("source", "web", "cart", get_cart), 45)]);
    let edge = loop {
        if let Some(edge) = edges().await.into_iter().find(|e| e.client.name == "web") {
            break edge;
        }
        assert!(tokio::time::Instant::now() < deadline, "no edge from web");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        (edge.target, edge.http, edge.connections),
        (target("cart"), vec![res("/api/cart", &["GET"])], 5)
    );
    // Later rounds find nothing new.
    let scraped = cart.scrapes();
    while cart.scrapes() < scraped + 3 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(edges().await.iter().map(|e| e.connections).sum::<u64>(), 5);
    let metrics = http.get(format!("{url}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("intentmap_mapper_istio_baselines_total 2\n"), "{metrics}");
    assert!(metrics.contains("intentmap_mapper_http_requests_total 5\n"), "{metrics}");
    mapper.abort();
    let _ = std::fs::remove_dir_all(dir);
}
