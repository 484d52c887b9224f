//! The node agent's shipping against the mapper's real local API over HTTP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cluster_agent::mapper::api::{router, ApiState};
use cluster_agent::mapper::auth::{ApiAuth, AuthConfig};
use cluster_agent::mapper::SharedMapper;
use cluster_agent::node::ship::{Credentials, Observed, Outgoing, Shipper};
use mapper_core::fixtures::*;
use mapper_core::Mapper;
use model::observation::TcpConnection;

fn connection(dst_port: u16) -> Observed {
    Observed::Tcp(TcpConnection::between(
        "10.244.0.5".parse().unwrap(),
        "10.244.0.6".parse().unwrap(),
        dst_port,
        chrono::Utc::now(),
    ))
}

fn mapper() -> SharedMapper {
    let mut m = Mapper::default();
    m.index.apply(&mk_pod("shop", "frontend-0", &["10.244.0.5"]));
    m.index.apply(&mk_pod("shop", "cart-0", &["10.244.0.6"]));
    SharedMapper::new(m)
}

async fn serve(addr: SocketAddr, mapper: SharedMapper) -> tokio::task::JoinHandle<()> {
    let auth = ApiAuth::new(
        AuthConfig { shared_token: Some("node-token".into()), ..AuthConfig::default() },
        None,
    );
    let state = Arc::new(ApiState { mapper, auth, telemetry: Arc::default(), upload: None });
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router(state)).await.unwrap();
    })
}

fn shipper(addr: SocketAddr, token: &str) -> Shipper {
    Shipper {
        mapper_url: format!("http://{addr}"),
        credentials: Credentials::Shared(token.into()),
        source: "node-1".into(),
        http: reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap(),
        max_batch: 2,
    }
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

#[tokio::test]
async fn observations_wait_while_the_mapper_is_away_and_arrive_once_it_is_back() {
    let addr = free_addr();
    let outgoing = Outgoing::new(100);
    for port in [7070, 7071, 7072] {
        outgoing.push(connection(port));
    }
    let ship = shipper(addr, "node-token");
    let err = ship.flush(&outgoing).await.unwrap_err();
    assert!(err.contains("unreachable"), "{err}");
    assert_eq!(outgoing.len(), 3, "nothing is lost while the mapper is away");

    let m = mapper();
    let _server = serve(addr, m.clone()).await;
    assert_eq!(ship.flush(&outgoing).await.unwrap(), 3);
    assert!(outgoing.is_empty());
    let edges = m.lock().snapshot();
    assert_eq!(edges.len(), 1);
    assert_eq!(edges[0].connections, 3);
    assert_eq!(edges[0].ports.len(), 3);
    assert_eq!(m.lock().stats().batches, 2, "sent in batches of at most 2");
}

#[tokio::test]
async fn a_refused_token_keeps_the_observations_and_a_full_buffer_counts_what_it_drops() {
    let addr = free_addr();
    let _server = serve(addr, mapper()).await;
    let outgoing = Outgoing::new(2);
    for port in [1, 2, 3] {
        outgoing.push(connection(port));
    }
    assert_eq!(
        outgoing.stats.dropped.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "the oldest is dropped and counted"
    );
    let err = shipper(addr, "wrong").flush(&outgoing).await.unwrap_err();
    assert!(err.contains("401"), "{err}");
    assert_eq!(outgoing.len(), 2);
}

#[tokio::test]
async fn shutdown_flushes_what_is_buffered() {
    let addr = free_addr();
    let m = mapper();
    let _server = serve(addr, m.clone()).await;
    let outgoing = Outgoing::new(100);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(shipper(addr, "node-token").run(
        outgoing.clone(),
        Duration::from_secs(3600),
        async move {
            let _ = stopped.await;
        },
    ));
    tokio::time::sleep(Duration::from_millis(50)).await;
    outgoing.push(connection(8080));
    stop.send(()).unwrap();
    task.await.unwrap();
    assert_eq!(m.lock().snapshot().len(), 1, "the last observations reach the mapper on shutdown");
}
