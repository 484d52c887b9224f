//! The Istio watcher against hostile pods: a sidecar answering 64 MiB (streamed, no length
//! given), one redirecting the mapper elsewhere, and a round before istiod exists.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::response::{IntoResponse, Redirect};
use axum::routing::get;
use axum::Router;
use cluster_agent::mapper::istio::{client, scrape_round, IstioConfig};
use cluster_agent::mapper::telemetry::IstioWatchStats;
use cluster_agent::mapper::SharedMapper;
use k8s_openapi::api::core::v1::Namespace;
use mapper_core::fixtures::*;
use mapper_core::Mapper;

const PATH: &str = "/stats/prometheus";

/// A pod serving whatever it likes on the metrics port: a 64 MiB answer, a redirect to
/// another address, and (before istiod exists) nothing is asked of it at all.
#[tokio::test]
async fn hostile_sidecars_are_refused_without_costing_memory_or_reaching_elsewhere() {
    let (big_ip, redirecting_ip, elsewhere_ip) = ("127.0.0.20", "127.0.0.21", "127.0.0.22");
    let asked = Arc::new(AtomicUsize::new(0));
    let port = 'port: loop {
        let first =
            tokio::net::TcpListener::bind((big_ip.parse::<IpAddr>().unwrap(), 0)).await.unwrap();
        let port = first.local_addr().unwrap().port();
        let mut listeners = vec![first];
        for ip in [redirecting_ip, elsewhere_ip] {
            match tokio::net::TcpListener::bind(SocketAddr::new(ip.parse().unwrap(), port)).await {
                Ok(l) => listeners.push(l),
                Err(_) => continue 'port,
            }
        }
        let counted = asked.clone();
        let big = Router::new().route(
            PATH,
            get(move || {
                counted.fetch_add(1, Ordering::SeqCst);
                // 64 MiB of well-formed series, made as it is sent.
                let line = "istio_requests_total{reporter=\"destination\",source_workload=\"web\",source_workload_namespace=\"shop\",request_path=\"/x\"} 1\n";
                let chunk = axum::body::Bytes::from(line.repeat((64 << 10) / line.len()));
                let body = futures::stream::iter((0..1024).map(move |_| Ok::<_, std::convert::Infallible>(chunk.clone())));
                async move { axum::body::Body::from_stream(body) }
            }),
        );
        let target = format!("http://{elsewhere_ip}:{port}{PATH}");
        let redirecting = Router::new()
            .route(PATH, get(move || async move { Redirect::temporary(&target).into_response() }));
        let hits = Arc::new(AtomicUsize::new(0));
        let elsewhere_hits = hits.clone();
        let elsewhere = Router::new().fallback(move || {
            elsewhere_hits.fetch_add(1, Ordering::SeqCst);
            async { "istio_requests_total{reporter=\"destination\",source_workload=\"web\",source_workload_namespace=\"shop\"} 9\n" }
        });
        for (listener, app) in listeners.into_iter().zip([big, redirecting, elsewhere]) {
            tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        }
        break (port, hits);
    };
    let (port, elsewhere_hits) = port;

    let mut mapper = Mapper::default();
    for (name, ip) in [("big", big_ip), ("redirecting", redirecting_ip)] {
        mapper.index.apply(&mk_pod("attacker", &format!("{name}-1"), &[ip]).with_istio_sidecar());
    }
    let mapper = SharedMapper::new(mapper);
    let config = IstioConfig { port, timeout: Duration::from_secs(5), ..IstioConfig::default() };
    let http = client(&config).unwrap();
    let stats = IstioWatchStats::default();

    assert_eq!(
        scrape_round(&mapper, &http, &config, &stats).await,
        None,
        "no istiod: Istio is not installed"
    );
    assert_eq!(asked.load(Ordering::SeqCst), 0, "and no pod was asked anything");

    {
        let mut mapper = mapper.lock();
        mapper.index.apply_meta(
            "Namespace",
            &Namespace { metadata: mk_namespace("istio-system"), ..Default::default() }.metadata,
        );
        mapper.index.apply(&mk_service(
            "istio-system",
            "istiod",
            &["10.96.0.40"],
            &[("app", "istiod")],
        ));
    }
    assert_eq!(scrape_round(&mapper, &http, &config, &stats).await, Some(2));
    assert_eq!(asked.load(Ordering::SeqCst), 1);
    assert_eq!(
        stats.oversized.load(Ordering::SeqCst),
        1,
        "the 64 MiB answer is refused past the limit"
    );
    assert_eq!(elsewhere_hits.load(Ordering::SeqCst), 0, "the redirect is not followed");
    let counted = mapper.lock().stats();
    assert_eq!((counted.istio_scrape_failures, counted.istio_scrapes), (2, 0));
    assert!(mapper.lock().snapshot().is_empty());
}
