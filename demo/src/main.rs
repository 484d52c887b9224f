//! `intentmap-demo`: the whole product on one machine, on embedded defaults (see
//! [`demo::product`]): a throwaway PostgreSQL, the cloud API, two simulated clusters with their
//! mappers and node agents, real traffic between network-namespace pods (as root; replayed
//! otherwise). Prints the access-graph URL, each cluster's `list` and where the exported
//! ClientIntents are, then serves until Ctrl-C (or exits with `--exit`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use demo::product::{Options, Product, Traffic, CLUSTERS};
use serde_json::Value;

#[derive(Debug, Parser)]
#[command(name = "intentmap-demo", about = "Run the whole intentmap product locally: cloud, two clusters, real traffic")]
struct Args {
    /// Where the cloud API listens. If the port is taken, a free one is used instead.
    #[arg(long, env = "DEMO_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Use this PostgreSQL (a superuser URL) instead of starting a throwaway one.
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
    /// Where exported ClientIntents (and the demo's working files) are written.
    #[arg(long, env = "DEMO_OUT", default_value = ".demo")]
    out: PathBuf,
    /// Set everything up, print, and exit instead of serving until Ctrl-C.
    #[arg(long, env = "DEMO_EXIT")]
    exit: bool,
    /// Replay the traffic to the mappers even when running as root.
    #[arg(long, env = "DEMO_REPLAY")]
    replay: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if std::env::var_os("RUST_LOG").is_none() {
        std::env::set_var("RUST_LOG", "warn");
    }
    cloud_api::init_tracing(cloud_api::LogFormat::Text);
    let bin_dir = std::env::current_exe()?.parent().context("the demo binary has a directory")?.to_owned();
    for bin in ["cloud-api", "cluster-agent", "intentmap"] {
        anyhow::ensure!(bin_dir.join(bin).exists(), "{} is missing; build everything first: cargo build --workspace --bins", bin_dir.join(bin).display());
    }

    let mut throwaway = None;
    let database_url = match &args.database_url {
        Some(url) => url.clone(),
        None => {
            println!("Starting a throwaway PostgreSQL (set DATABASE_URL to use your own)...");
            let pg = testkit::pg::start_throwaway().await.context("starting PostgreSQL; run scripts/ensure-postgres.sh to install it")?;
            let url = pg.fresh_database("intentmap_demo").await?;
            throwaway = Some(pg);
            url
        }
    };
    let traffic = if args.replay {
        Traffic::Replayed
    } else if demo::lab::is_root() {
        Traffic::Real
    } else {
        println!("Not root: network namespaces and eBPF need root, so the demo replays the traffic to the mappers as node agents would report it.");
        Traffic::Replayed
    };
    let cloud_port = match std::net::TcpListener::bind(args.listen) {
        Ok(l) => l.local_addr()?.port(),
        Err(e) => {
            println!("{} is taken ({e}); using a free port", args.listen);
            std::net::TcpListener::bind(SocketAddr::new(args.listen.ip(), 0))?.local_addr()?.port()
        }
    };
    let out = std::path::absolute(&args.out)?;
    println!("Starting the cloud API, two clusters (us-east, eu-west) with a mapper and a node agent each...");
    let options = Options { bin_dir: bin_dir.clone(), work_dir: out.join("work"), database_url, cloud_port, traffic, upload_interval: 1.0 };
    let mut product = Product::start(options).await?;
    println!("Sending traffic ({})...", if traffic == Traffic::Real { "real TCP and DNS between network-namespace pods" } else { "replayed" });
    product.send_traffic(3).await?;
    let graph = product.wait_until_uploaded(Duration::from_secs(90)).await?;

    let edges = graph["edges"].as_array().cloned().unwrap_or_default();
    println!("\n== Access graph: {} clusters, {} nodes, {} edges ==", CLUSTERS.len(), graph["nodes"].as_array().map_or(0, Vec::len), edges.len());
    for e in &edges {
        let via = e["via"]
            .as_array()
            .filter(|v| !v.is_empty())
            .map(|v| format!(" (cross-cluster via {})", v.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", ")));
        println!("  {} -> {}{}", e["source"].as_str().unwrap_or("?"), e["target"].as_str().unwrap_or("?"), via.unwrap_or_default());
    }
    for cluster in &product.clusters {
        let listed = std::process::Command::new(bin_dir.join("intentmap")).args(["--mapper-url", &cluster.mapper_url, "list"]).output()?;
        println!("\n== `intentmap list` in cluster {} ==\n{}", cluster.name, String::from_utf8_lossy(&listed.stdout));
    }
    println!("== ClientIntents, exported from the cloud ==");
    for cluster in CLUSTERS {
        let path = out.join(format!("clientintents-{cluster}.yaml"));
        std::fs::write(&path, product.client_intents(cluster).await?)?;
        println!("  {}", path.display());
    }
    println!("\n== Look ==");
    println!("  access graph page: {}/#token={}", product.cloud_url, product.api_token);
    println!("  export TOKEN={}", product.api_token);
    println!("  curl -s -H \"Authorization: Bearer $TOKEN\" {}/api/v1/access-graph | head -c 600", product.cloud_url);
    println!("  curl -s -H \"Authorization: Bearer $TOKEN\" '{}/api/v1/clusters/us-east/client-intents?version=v1alpha3'", product.cloud_url);
    for cluster in &product.clusters {
        println!("  {}: intentmap --mapper-url {} list", cluster.name, cluster.mapper_url);
    }

    if !args.exit {
        println!("\nServing; more traffic every 10 s. Ctrl-C to stop.");
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(10)) => {
                    if let Err(e) = product.send_traffic(1).await {
                        println!("sending traffic failed: {e:#}");
                    }
                }
                _ = tokio::signal::ctrl_c() => break,
            }
        }
        println!("stopping");
    }
    drop(product);
    if let Some(pg) = throwaway {
        pg.stop();
    }
    Ok(())
}
