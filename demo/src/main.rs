//! `intentmap-demo`: the whole product on one machine, on embedded defaults (see
//! [`demo::product`]): a throwaway PostgreSQL, the cloud API, two simulated clusters with their
//! mappers and node agents, real traffic between network-namespace pods (as root; replayed
//! otherwise). Prints the access-graph URL, each cluster's `list` and where the exported
//! ClientIntents are, then serves until Ctrl-C (or exits with `--exit`).
//!
//! However it ends (done, an error, a panic, SIGINT, SIGTERM or SIGHUP, also during the set-up)
//! it stops every process it started and removes every network namespace and link it made, then
//! the throwaway PostgreSQL. If it is killed outright (SIGKILL) its processes still die with it
//! (they are one process group, see `demo::cleanup`) and the next start with the same `--out`, or
//! `--clean`, removes what is left.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use demo::product::{Options, Product, Traffic, CLUSTERS};
use serde_json::Value;
use testkit::pg::ThrowawayPg;
use tokio::signal::unix::{signal, Signal, SignalKind};

#[derive(Debug, Parser)]
#[command(
    name = "intentmap-demo",
    about = "Run the whole intentmap product locally: cloud, two clusters, real traffic"
)]
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
    /// Run the product on a real single-node Kubernetes cluster built on this machine
    /// (`testkit::cluster`; the first run builds Kubernetes from the Go module proxy, about 18
    /// minutes) instead of the simulated clusters: both charts installed with Helm from our own
    /// images, the seeds' shop as real pods. Needs root.
    #[arg(long, env = "DEMO_REAL_CLUSTER")]
    real_cluster: bool,
    /// Only remove what an earlier run with this --out left behind when it was killed
    /// (processes, network namespaces), then exit. A normal start does this too.
    #[arg(long)]
    clean: bool,
}

/// SIGINT (Ctrl-C), SIGTERM (kill, timeout, systemd) and SIGHUP (the terminal went away).
/// Once installed, none of them ends the process by itself any more: it gets to clean up.
struct Signals {
    interrupt: Signal,
    terminate: Signal,
    hangup: Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }

    /// The next signal's name and number.
    async fn recv(&mut self) -> (&'static str, u8) {
        tokio::select! {
            _ = self.interrupt.recv() => ("SIGINT", 2),
            _ = self.terminate.recv() => ("SIGTERM", 15),
            _ = self.hangup.recv() => ("SIGHUP", 1),
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if std::env::var_os("RUST_LOG").is_none() {
        std::env::set_var("RUST_LOG", "warn");
    }
    cloud_api::init_tracing(cloud_api::LogFormat::Text);
    // First of all, so that a signal at any later point is handled (and cleaned up after).
    let mut signals = match Signals::install() {
        Ok(signals) => signals,
        Err(e) => return fail(anyhow::Error::new(e).context("installing the signal handlers")),
    };
    let out = match std::path::absolute(&args.out) {
        Ok(out) => out,
        Err(e) => {
            return fail(anyhow::Error::new(e).context(format!("resolving {}", args.out.display())))
        }
    };
    let work_dir = out.join("work");
    match demo::cleanup::clean_leftovers(&work_dir) {
        Ok(Some(said)) => println!("{said}"),
        Ok(None) if args.clean => {
            println!("Nothing left from an earlier demo run in {}.", out.display())
        }
        Ok(None) => {}
        Err(e) => return fail(e),
    }
    if args.clean {
        return ExitCode::SUCCESS;
    }

    // What `run` starts lands here, so that it is stopped in order however `run` ends.
    let mut throwaway: Option<ThrowawayPg> = None;
    let mut product: Option<Product> = None;
    let mut real: Option<demo::on_cluster::OnCluster> = None;
    let mut serving = false;
    let code = tokio::select! {
        result = async {
            if args.real_cluster {
                run_on_cluster(&args, &out, &mut throwaway, &mut real, &mut serving).await
            } else {
                run(&args, &out, &mut throwaway, &mut product, &mut serving).await
            }
        } => match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        (name, number) = signals.recv() => {
            if serving {
                say(&format!("\n{name}: stopping."));
                ExitCode::SUCCESS
            } else {
                say(&format!("\n{name} during the set-up: stopping."));
                ExitCode::from(128 + number)
            }
        }
    };
    // Signals arriving from here on are caught and ignored: cleaning up takes a few seconds.
    // (A panic in `run` skips what follows, but unwinding drops `product`, then `throwaway`,
    // which stops and removes everything just the same.)
    if product.is_some() || throwaway.is_some() || real.is_some() {
        say("Stopping every process the demo started and removing its network namespaces...");
    }
    drop(product.take());
    if let Some(real) = real.take() {
        let _ = tokio::task::spawn_blocking(move || drop(real)).await;
    }
    if let Some(pg) = throwaway.take() {
        pg.stop();
    }
    if work_dir.join(demo::cleanup::LEDGER).exists() {
        say(&format!("Not everything could be removed (see the warnings above); as root, run: intentmap-demo --clean --out {}", out.display()));
        return ExitCode::FAILURE;
    }
    say("Stopped; nothing of the demo is left running.");
    code
}

/// Prints a line, even to a terminal that hung up or a closed pipe (where `println!` panics):
/// for the messages printed while stopping, which must not keep it from cleaning up.
fn say(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stdout(), "{line}");
}

fn fail(e: anyhow::Error) -> ExitCode {
    eprintln!("error: {e:#}");
    ExitCode::FAILURE
}

/// The throwaway PostgreSQL (unless `--database-url`), its fresh database's URL.
async fn database(args: &Args, throwaway: &mut Option<ThrowawayPg>) -> anyhow::Result<String> {
    match &args.database_url {
        Some(url) => Ok(url.clone()),
        None => {
            println!("Starting a throwaway PostgreSQL (set DATABASE_URL to use your own)...");
            let pg =
                throwaway.insert(testkit::pg::start_throwaway().await.context(
                    "starting PostgreSQL; run scripts/ensure-postgres.sh to install it",
                )?);
            pg.fresh_database("intentmap_demo").await
        }
    }
}

/// `--real-cluster`: a real cluster, the product installed into it with Helm, the shop's
/// calls in the cloud's graph; prints what a user would look at, and (without `--exit`) serves
/// until cancelled. What it starts goes into `throwaway` and `real`, which the caller stops.
async fn run_on_cluster(
    args: &Args,
    out: &Path,
    throwaway: &mut Option<ThrowawayPg>,
    real: &mut Option<demo::on_cluster::OnCluster>,
    serving: &mut bool,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        testkit::need::is_root(),
        "a real cluster needs root (network links, mounts, cgroups, iptables): sudo ./scripts/demo.sh --real-cluster, or drop --real-cluster for the simulated clusters"
    );
    let bin_dir =
        std::env::current_exe()?.parent().context("the demo binary has a directory")?.to_owned();
    let options = demo::on_cluster::Options {
        root: std::env::current_dir()?,
        bin_dir: bin_dir.clone(),
        database_url: database(args, throwaway).await?,
        home: out.join("work/real-cluster"),
        cluster_name: "real".into(),
        profile: "debug".into(),
    };
    println!("Starting a real Kubernetes cluster on this machine (the first run builds it: about 18 minutes)...");
    let started = tokio::task::spawn_blocking(move || demo::on_cluster::OnCluster::start(options))
        .await
        .context("the cluster's set-up thread")??;
    let running = real.insert(started);
    println!(
        "
== kubectl get pods -A ==
{}",
        running.kubectl(&["get", "pods", "-A"])?
    );
    println!(
        "== `intentmap list -n {}` (the mapper, through kubectl port-forward) ==",
        demo::on_cluster::SHOP_NAMESPACE
    );
    println!("{}", running.list(&bin_dir)?);
    println!("== Look ==");
    println!("  access graph page: {}/#token={}", running.cloud_url, running.installed.api_token);
    println!("  export KUBECONFIG={}", running.cluster.kubeconfig().display());
    println!(
        "  export PATH={}:$PATH",
        running.cluster.versions().build_dir().join("bin").display()
    );
    println!("  kubectl get pods -A; intentmap --mapper-url {} list", running.mapper_url);
    if args.exit {
        return Ok(());
    }
    println!(
        "
Serving. Ctrl-C (or SIGTERM) stops it and removes the cluster and everything else."
    );
    *serving = true;
    std::future::pending::<()>().await;
    Ok(())
}

/// Sets everything up, prints where to look, and (without `--exit`) serves until cancelled.
/// Everything it starts goes into `throwaway` and `product`, which the caller stops.
async fn run(
    args: &Args,
    out: &Path,
    throwaway: &mut Option<ThrowawayPg>,
    product: &mut Option<Product>,
    serving: &mut bool,
) -> anyhow::Result<()> {
    let bin_dir =
        std::env::current_exe()?.parent().context("the demo binary has a directory")?.to_owned();
    for bin in ["cloud-api", "cluster-agent", "intentmap"] {
        anyhow::ensure!(
            bin_dir.join(bin).exists(),
            "{} is missing; build everything first: cargo build --workspace --bins",
            bin_dir.join(bin).display()
        );
    }

    let database_url = database(args, throwaway).await?;
    let traffic = if args.replay {
        Traffic::Replayed
    } else if testkit::need::is_root() {
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
    println!("Starting the cloud API, two clusters (us-east, eu-west) with a mapper and a node agent each...");
    let options = Options {
        bin_dir: bin_dir.clone(),
        work_dir: out.join("work"),
        database_url,
        cloud_port,
        traffic,
        upload_interval: 1.0,
    };
    let product = product.insert(Product::start(options).await?);
    println!(
        "Sending traffic ({})...",
        if traffic == Traffic::Real {
            "real TCP and DNS between network-namespace pods"
        } else {
            "replayed"
        }
    );
    product.send_traffic(3).await?;
    let graph = product.wait_until_uploaded(Duration::from_secs(90)).await?;

    let edges = graph["edges"].as_array().cloned().unwrap_or_default();
    println!(
        "\n== Access graph: {} clusters, {} nodes, {} edges ==",
        CLUSTERS.len(),
        graph["nodes"].as_array().map_or(0, Vec::len),
        edges.len()
    );
    for e in &edges {
        let via = e["via"].as_array().filter(|v| !v.is_empty()).map(|v| {
            format!(
                " (cross-cluster via {})",
                v.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", ")
            )
        });
        println!(
            "  {} -> {}{}",
            e["source"].as_str().unwrap_or("?"),
            e["target"].as_str().unwrap_or("?"),
            via.unwrap_or_default()
        );
    }
    for cluster in &product.clusters {
        let listed = std::process::Command::new(bin_dir.join("intentmap"))
            .args(["--mapper-url", &cluster.mapper_url, "list"])
            .output()?;
        println!(
            "\n== `intentmap list` in cluster {} ==\n{}",
            cluster.name,
            String::from_utf8_lossy(&listed.stdout)
        );
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
    println!(
        "  curl -s -H \"Authorization: Bearer $TOKEN\" {}/api/v1/access-graph | head -c 600",
        product.cloud_url
    );
    println!("  curl -s -H \"Authorization: Bearer $TOKEN\" '{}/api/v1/clusters/us-east/client-intents?version=v1alpha3'", product.cloud_url);
    for cluster in &product.clusters {
        println!("  {}: intentmap --mapper-url {} list", cluster.name, cluster.mapper_url);
    }
    if args.exit {
        return Ok(());
    }

    println!("\nServing; more traffic every 10 s. Ctrl-C (or SIGTERM) stops it and everything it started.");
    *serving = true;
    loop {
        tokio::time::sleep(Duration::from_secs(10)).await;
        if let Err(e) = product.send_traffic(1).await {
            println!("sending traffic failed: {e:#}");
        }
    }
}
