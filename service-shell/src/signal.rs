//! The one way a service is asked to stop.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signal {
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGTERM (what Kubernetes sends).
    Terminate,
}

impl Signal {
    fn name(self) -> &'static str {
        match self {
            Signal::Interrupt => "SIGINT",
            Signal::Terminate => "SIGTERM",
        }
    }
}

/// Resolves on the first SIGINT or SIGTERM and logs that the process is stopping: serve until
/// it resolves, then flush what is held and exit. A signal that cannot be listened for (no
/// handler could be installed) never resolves; if Ctrl-C's cannot, this resolves at once, as
/// waiting for it would.
pub async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    let signal = tokio::select! {
        _ = interrupt => Signal::Interrupt,
        _ = terminate => Signal::Terminate,
    };
    tracing::info!(signal = signal.name(), "stopping");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sigterm_resolves_it() {
        // A SIGTERM handler of the test's own first, so that a signal sent before
        // shutdown_signal has installed its handler does not kill the test process.
        let _guard =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
        let mut waiting = tokio::spawn(shutdown_signal());
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            send_self_sigterm();
            tokio::select! {
                done = &mut waiting => break done.expect("the task ran"),
                _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
            }
            assert!(tokio::time::Instant::now() < deadline, "SIGTERM resolves shutdown_signal");
        }
    }

    fn send_self_sigterm() {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &std::process::id().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success());
    }
}
