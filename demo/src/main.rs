//! `intentmap-demo`: the whole cloud on one machine, on embedded defaults.
//!
//! Starts PostgreSQL (a throwaway cluster unless `DATABASE_URL` is set), the cloud API, creates
//! an organisation with two clusters, uploads sample edge reports the way a cluster agent does
//! (OAuth client-credentials, gzip-encoded reports over HTTP), and prints where to look.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use clap::Parser;
use cloud_api::tokens::{JwtIssuer, SigningKey};
use model::{Edge, EdgeReport, ExposedWorkload, InternetTarget, PortSpec, Protocol, Target, WorkloadRef};

#[derive(Debug, Parser)]
#[command(name = "intentmap-demo", about = "Run the intentmap cloud locally with demo data")]
struct Args {
    /// Where the API listens. If the port is taken, a free one is used instead.
    #[arg(long, env = "DEMO_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Use this PostgreSQL instead of starting a throwaway one.
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
    /// Where exported ClientIntents are written.
    #[arg(long, env = "DEMO_OUT", default_value = ".demo")]
    out: PathBuf,
    /// Set everything up, print, and exit instead of serving until Ctrl-C.
    #[arg(long, env = "DEMO_EXIT")]
    exit: bool,
}

const NS: &str = "otterize-ecom-demo";

fn at(s: &str) -> DateTime<Utc> {
    s.parse().expect("demo timestamps are RFC 3339")
}

fn call(client: &str, target: &str, port: u16, connections: u64) -> Edge {
    Edge {
        client: WorkloadRef::new(NS, client, Some("Deployment")),
        target: Target::Kubernetes(WorkloadRef::new(NS, target, Some(if target == "redis-cart" { "StatefulSet" } else { "Deployment" }))),
        ports: vec![PortSpec { port, protocol: Protocol::Tcp }],
        first_seen: Utc::now() - chrono::Duration::hours(2),
        last_seen: Utc::now() - chrono::Duration::minutes(1),
        connections,
        http: Vec::new(),
        kafka: Vec::new(),
    }
}

/// The seeds' otterize-ecom-demo shop, running in `us-east`; it pays through `eu-west`'s gateway.
fn us_east_report() -> EdgeReport {
    let mut edges = vec![
        call("cartservice", "redis-cart", 6379, 310),
        call("loadgenerator", "frontend", 8080, 1200),
        call("recommendationservice", "productcatalogservice", 3550, 95),
    ];
    for t in ["cartservice", "currencyservice", "emailservice", "paymentservice", "productcatalogservice", "shippingservice"] {
        edges.push(call("checkoutservice", t, 5050, 40));
    }
    for t in ["adservice", "cartservice", "checkoutservice", "currencyservice", "productcatalogservice", "recommendationservice", "shippingservice"] {
        edges.push(call("frontend", t, 8080, 180));
    }
    let mut pay = call("paymentservice", "x", 443, 25);
    pay.target = Target::Internet(InternetTarget { domains: vec!["pay.eu.example.com".into()], ips: vec!["198.51.100.10".into()], ports: vec![443] });
    edges.push(pay);
    let mut email = call("emailservice", "x", 443, 7);
    email.target = Target::Internet(InternetTarget { domains: vec!["api.sendgrid.com".into()], ips: vec!["203.0.113.25".into()], ports: vec![443] });
    edges.push(email);
    let mut s3 = call("shippingservice", "x", 443, 3);
    s3.target = Target::Aws(model::AwsTarget { arn: "arn:aws:s3:::shipping-labels".into(), actions: vec!["s3:PutObject".into()] });
    edges.push(s3);
    EdgeReport::new(uuid::Uuid::new_v4(), Utc::now(), edges, vec![])
}

fn eu_west_report() -> EdgeReport {
    let mut ledger = call("payment-gateway", "ledger", 5432, 25);
    ledger.client.namespace = "payments".into();
    ledger.target = Target::Kubernetes(WorkloadRef::new("payments", "ledger", Some("StatefulSet")));
    ledger.first_seen = at("2026-11-24T00:00:00Z").min(Utc::now());
    let exposed = vec![ExposedWorkload {
        namespace: "payments".into(),
        name: "payment-gateway".into(),
        kind: Some("Deployment".into()),
        addresses: vec!["198.51.100.10".into()],
        hostnames: vec!["pay.eu.example.com".into()],
    }];
    EdgeReport::new(uuid::Uuid::new_v4(), Utc::now(), vec![ledger], exposed)
}

/// What a cluster agent does: trade credentials for a token, then upload a gzip-encoded report.
async fn upload(http: &reqwest::Client, base: &str, creds: &serde_json::Value, report: &EdgeReport) -> anyhow::Result<serde_json::Value> {
    let token: serde_json::Value = http
        .post(format!("{base}/oauth/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", creds["client_id"].as_str().unwrap_or_default()),
            ("client_secret", creds["client_secret"].as_str().unwrap_or_default()),
        ])
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let jwt = token["access_token"].as_str().context("no access_token in the token response")?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&serde_json::to_vec(report)?)?;
    let reply = http
        .post(format!("{base}/api/v1/reports"))
        .bearer_auth(jwt)
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(gz.finish()?)
        .send()
        .await?;
    let status = reply.status();
    let body: serde_json::Value = reply.json().await?;
    if !status.is_success() {
        bail!("report refused ({status}): {body}");
    }
    Ok(body)
}

async fn listener(want: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    match tokio::net::TcpListener::bind(want).await {
        Ok(l) => Ok(l),
        Err(e) => {
            tracing::warn!(%want, error = %e, "address taken; using a free port instead");
            Ok(tokio::net::TcpListener::bind(SocketAddr::new(want.ip(), 0)).await?)
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if std::env::var_os("RUST_LOG").is_none() {
        // The demo talks to the person at the terminal; the API's request logs would drown it.
        std::env::set_var("RUST_LOG", "warn");
    }
    cloud_api::init_tracing(cloud_api::LogFormat::Text);

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
    cloud_api::migrate(&database_url).await?;
    let jwt = JwtIssuer::new("intentmap-cloud".into(), "intentmap-ingest".into(), Duration::from_secs(300), vec![SigningKey::generate()])?;
    let state = cloud_api::state(&database_url, jwt, cloud_api::Config::default(), 8).await?;
    let listener = listener(args.listen).await?;
    let base = format!("http://{}", listener.local_addr()?);
    let server = tokio::spawn(cloud_api::serve_on(listener, state.clone()));

    println!("Creating organisation \"demo\" with clusters us-east and eu-west...");
    let org = state.store.create_org("demo").await?;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    let mut clusters = Vec::new();
    for name in ["us-east", "eu-west"] {
        let creds: serde_json::Value = http
            .post(format!("{base}/api/v1/clusters"))
            .bearer_auth(&org.api_token)
            .json(&serde_json::json!({"name": name}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        clusters.push(creds);
    }
    println!("Uploading sample reports as each cluster's agent would...");
    for (creds, report) in clusters.iter().zip([us_east_report(), eu_west_report()]) {
        let reply = upload(&http, &base, creds, &report).await?;
        println!("  {}: {} edges merged", creds["name"].as_str().unwrap_or_default(), reply["edges_merged"]);
    }

    let graph: model::AccessGraph =
        http.get(format!("{base}/api/v1/access-graph")).bearer_auth(&org.api_token).send().await?.error_for_status()?.json().await?;
    let edges: Vec<Edge> = state.store.edges(org.org_id, None, None).await?.into_iter().filter(|e| e.cluster == "us-east").map(|e| e.edge).collect();
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let mut written = Vec::new();
    for name in ["us-east", "eu-west"] {
        let yaml =
            http.get(format!("{base}/api/v1/clusters/{name}/client-intents")).bearer_auth(&org.api_token).send().await?.error_for_status()?.text().await?;
        let path = args.out.join(format!("clientintents-{name}.yaml"));
        std::fs::write(&path, yaml)?;
        written.push(path);
    }
    let cross: Vec<&model::GraphEdge> = graph.edges.iter().filter(|e| !e.via.is_empty()).collect();

    println!("\n== Access graph: {} clusters, {} nodes, {} edges ==", graph.clusters.len(), graph.nodes.len(), graph.edges.len());
    for e in cross {
        println!("cross-cluster: {} -> {} (via {})", e.source, e.target, e.via.join(", "));
    }
    println!("\n== `list` of cluster us-east ==\n{}", model::list::render_list(&edges));
    println!("== ClientIntents ==");
    for p in &written {
        println!("  {}", p.display());
    }
    println!("\n== Try it ==");
    println!("  export TOKEN={}", org.api_token);
    println!("  curl -s -H \"Authorization: Bearer $TOKEN\" {base}/api/v1/access-graph | head -c 600");
    println!("  curl -s -H \"Authorization: Bearer $TOKEN\" '{base}/api/v1/access-graph?format=dot'");
    println!("  curl -s -H \"Authorization: Bearer $TOKEN\" '{base}/api/v1/clusters/us-east/client-intents?version=v1alpha3'");
    println!("  curl -s {base}/metrics");

    if args.exit {
        server.abort();
    } else {
        println!("\nServing on {base}; Ctrl-C to stop.");
        tokio::select! {
            r = server => r??,
            _ = tokio::signal::ctrl_c() => println!("stopping"),
        }
    }
    if let Some(pg) = throwaway {
        pg.stop();
    }
    Ok(())
}
