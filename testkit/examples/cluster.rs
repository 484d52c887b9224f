//! A real single-node Kubernetes cluster for trials: `sudo cargo run -p testkit --example cluster`.
//! Prints the kubeconfig and kubectl to use, runs until Ctrl-C (or SIGTERM), then removes
//! everything it made.

use testkit::cluster::Cluster;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let cluster = tokio::task::spawn_blocking(Cluster::start).await??;
    let bin = cluster.versions().build_dir().join("bin");
    println!("\nThe cluster is up. In another shell:\n");
    println!("  export KUBECONFIG={}", cluster.kubeconfig().display());
    println!("  export PATH={}:$PATH", bin.display());
    println!("  kubectl get pods -A");
    println!("\nImages to run (imagePullPolicy: Never): {}", cluster.versions().traffic_image);
    println!(
        "Component logs: {}/logs. Ctrl-C stops it and removes everything.",
        cluster.dir().display()
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tokio::task::spawn_blocking(move || cluster.stop()).await?;
    Ok(())
}
