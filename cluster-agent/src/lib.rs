//! The in-cluster agent: `cluster-agent mapper` (per cluster) and `cluster-agent node` (per node).

pub mod mapper;
pub mod node;

/// Resolves on the first SIGINT or SIGTERM: both roles stop serving, flush what they hold and
/// exit.
pub async fn termination() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("stopping");
}
