//! Capacity: how many clusters one `cloud-api serve` and its PostgreSQL on this machine hold,
//! each with 1,000 edges of which 5 % change every 5 s, with p99 ingest latency under 1 s and
//! nothing lost.
//!
//! `cargo bench -p cloud-api --bench capacity` (`BENCH_SECONDS`, default 30, per step;
//! `BENCH_CLUSTERS`, default `10,25,50,100,200,400,800,1600,3200,6400`, the steps; e.g.
//! `BENCH_SECONDS=6 BENCH_CLUSTERS=4,8` for a quick run; `BENCH_CLUSTERS_PER_ORG`, default 10).
//!
//! The real `cloud-api serve` binary runs as a child process against a throwaway PostgreSQL
//! (`testkit::pg::server()`: `DATABASE_URL` if set) with its default ingest limits (4 reports
//! at once, 2 per organisation). Only the credential-check rate per address is raised (every
//! simulated cluster calls from 127.0.0.1) and the cluster token lifetime (an hour, so no
//! token expires during a run). Organisations are made with `cloud-api admin create-org`,
//! clusters with `POST /api/v1/clusters`, and each cluster gets its JWT from `POST
//! /oauth/token` with its own client ID and secret, as an agent does.
//!
//! Each step grows the clusters to N (those of earlier steps stay), loads each new one with
//! one report of its 1,000 edges (untimed), then for `BENCH_SECONDS` every cluster sends, every
//! 5 s, a report of 50 of its edges (the next 50 in turn: same keys, `last_seen` now, 1-5 more
//! connections). The clusters' sends are spread evenly over the 5 s, and the members of one
//! organisation are spread apart. Every request's latency is measured (request to reply); a
//! failure is any answer but 202 (including 429 and 503, which an agent would retry) or no
//! answer in 30 s. After each step the database is checked as the owner, one organisation at a
//! time under its row-level security: each cluster must hold its 1,000 edges and exactly the
//! connections its accepted reports carried. The steps stop at the first that misses: p99 ≥ 1 s,
//! a failed report or a count that differs. The figures are printed, never asserted.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use chrono::{DateTime, Utc};
use model::{
    Edge, EdgeReport, InternetTarget, PortSpec, Protocol, ServiceRef, Target, WorkloadRef,
};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

const EDGES_PER_CLUSTER: usize = 1_000;
const CHANGED_PER_REPORT: usize = 50;
const PERIOD: Duration = Duration::from_secs(5);
const TARGET_P99: Duration = Duration::from_secs(1);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Targets per client workload in a cluster: 50 clients x 20 targets = 1,000 edges.
const TARGETS_PER_CLIENT: usize = 20;
/// At most this many steps, clusters, seconds: bounds for the environment's numbers.
const MAX_STEPS: usize = 32;
const MAX_CLUSTERS: usize = 20_000;
const MAX_SECONDS: u64 = 3_600;

mod support;
use support::{admin, env_list, Server};

fn main() -> Result<()> {
    let options = Options::parse()?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(support::until_signal(run(options)))
}

struct Options {
    steps: Vec<usize>,
    seconds: u64,
    per_org: usize,
}

impl Options {
    fn parse() -> Result<Self> {
        let steps: Vec<usize> =
            env_list("BENCH_CLUSTERS", "10,25,50,100,200,400,800,1600,3200,6400")?;
        let seconds = env_list("BENCH_SECONDS", "30")?;
        let per_org = env_list("BENCH_CLUSTERS_PER_ORG", "10")?;
        ensure!(
            !steps.is_empty() && steps.len() <= MAX_STEPS,
            "BENCH_CLUSTERS takes 1 to {MAX_STEPS} cluster counts"
        );
        ensure!(
            steps.windows(2).all(|w| w[0] < w[1]) && steps[0] > 0,
            "BENCH_CLUSTERS must be increasing and positive, e.g. 10,25,50"
        );
        ensure!(
            steps.iter().all(|&n| n <= MAX_CLUSTERS),
            "BENCH_CLUSTERS: at most {MAX_CLUSTERS} clusters"
        );
        let seconds = match seconds[..] {
            [s] if (1..=MAX_SECONDS).contains(&(s as u64)) => s as u64,
            _ => bail!("BENCH_SECONDS must be one number of seconds, 1 to {MAX_SECONDS}"),
        };
        let per_org = match per_org[..] {
            [n] if n > 0 && n <= MAX_CLUSTERS => n,
            _ => bail!("BENCH_CLUSTERS_PER_ORG must be one number, 1 to {MAX_CLUSTERS}"),
        };
        Ok(Self { steps, seconds, per_org })
    }
}

impl Server {
    /// CPU seconds (user + system) the server has used so far.
    fn cpu(&self) -> Option<f64> {
        process_cpu(self.child.id())
    }
}

/// CPU time of a process from `/proc/<pid>/stat` (Linux; clock ticks of USER_HZ, 100).
fn process_cpu(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let (user, system): (u64, u64) = (fields.next()?.parse().ok()?, fields.next()?.parse().ok()?);
    Some((user + system) as f64 / 100.0)
}

/// CPU seconds the whole machine has spent busy (not idle or waiting), from `/proc/stat`.
fn machine_busy() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let ticks: Vec<u64> = line.split_whitespace().filter_map(|f| f.parse().ok()).collect();
    let total: u64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3)? + ticks.get(4)?;
    Some(total.saturating_sub(idle) as f64 / 100.0)
}

struct Org {
    id: Uuid,
    api_token: String,
}

struct Cluster {
    org: usize,
    id: Uuid,
    token: String,
    /// Connections of every report the cloud accepted (202).
    sent: u64,
    /// Change reports sent so far: which 50 edges the next one carries.
    round: usize,
}

/// One change report's outcome.
struct Sample {
    latency: Duration,
    failure: Option<String>,
}

async fn run(options: Options) -> Result<()> {
    let Options { steps, seconds, per_org } = options;
    let pg = testkit::pg::server().await.context(
        "PostgreSQL for the benchmark (set DATABASE_URL or run scripts/ensure-postgres.sh)",
    )?;
    let owner_url = pg.fresh_database("capacity_bench").await?;
    cloud_api::migrate(&owner_url).await?;
    let serving_url = cloud_api::store::roles::dedicated_login_url(&owner_url)?;
    let port = testkit::process::free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_cloud-api"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--database-url", &serving_url, "--migrate-database-url", &owner_url])
        .args(["--auth-rate-per-address", "100000", "--auth-burst-per-address", "100000"])
        .args(["--jwt-lifetime-seconds", "3600"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .context("starting cloud-api serve")?;
    let server = Server { child, url: format!("http://127.0.0.1:{port}") };
    let http = reqwest::Client::builder().timeout(REQUEST_TIMEOUT).build()?;
    testkit::process::wait_ready(&http, &format!("{}/readyz", server.url), Duration::from_secs(30))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut db = PgConnection::connect(&owner_url).await?;
    let version: String = sqlx::query_scalar("SHOW server_version").fetch_one(&mut db).await?;
    println!(
        "capacity bench: PostgreSQL {version} ({}), cloud-api serve pid {} (release build), {} CPUs",
        if pg.is_owned() { "throwaway cluster" } else { "DATABASE_URL" },
        server.child.id(),
        std::thread::available_parallelism().map(usize::from).unwrap_or(1)
    );
    println!(
        "each cluster: {EDGES_PER_CLUSTER} edges, a report of {CHANGED_PER_REPORT} changed edges every {} s; \
         {per_org} clusters per organisation; {seconds} s per step; target p99 < {} ms, no failure, nothing lost",
        PERIOD.as_secs(),
        TARGET_P99.as_millis()
    );
    println!(
        "\n{:>6} {:>10} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8}",
        "N",
        "reports",
        "reports/s",
        "edges/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "failures",
        "api CPU",
        "all CPU"
    );

    let mut orgs: Vec<Org> = Vec::new();
    let mut clusters: Vec<Cluster> = Vec::new();
    let mut best: Option<usize> = None;
    let mut missed = None;
    for &n in &steps {
        let started = Instant::now();
        grow(&http, &server.url, &owner_url, per_org, n, &mut orgs, &mut clusters).await?;
        let setup = started.elapsed();

        let cpu_before = (server.cpu(), machine_busy());
        let wall = Instant::now();
        let (samples, sent) = step(&http, &server.url, &clusters, n, per_org, seconds).await?;
        let wall = wall.elapsed().as_secs_f64();
        for (cluster, (extra, rounds)) in clusters.iter_mut().zip(sent) {
            cluster.sent += extra;
            cluster.round += rounds;
        }
        let api_cpu = server.cpu().zip(cpu_before.0).map(|(a, b)| 100.0 * (a - b) / wall);
        let all_cpu = machine_busy().zip(cpu_before.1).map(|(a, b)| 100.0 * (a - b) / wall);

        let mut latencies: Vec<Duration> = samples.iter().map(|s| s.latency).collect();
        latencies.sort();
        let failures: Vec<&str> = samples.iter().filter_map(|s| s.failure.as_deref()).collect();
        let ok = samples.len() - failures.len();
        let (p50, p99, max) = if latencies.is_empty() {
            (Duration::ZERO, Duration::ZERO, Duration::ZERO)
        } else {
            (percentile(&latencies, 50), percentile(&latencies, 99), latencies[latencies.len() - 1])
        };
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let pct = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.0}%"));
        println!(
            "{n:>6} {:>10} {:>10.1} {:>9.0} {:>9.1} {:>9.1} {:>9.1} {:>9} {:>9} {:>8}",
            samples.len(),
            ok as f64 / seconds as f64,
            (ok * CHANGED_PER_REPORT) as f64 / seconds as f64,
            ms(p50),
            ms(p99),
            ms(max),
            failures.len(),
            pct(api_cpu),
            pct(all_cpu)
        );
        let lost = check(&mut db, &orgs, &clusters).await?;
        println!(
            "       (set-up {:.1} s; database check: {})",
            setup.as_secs_f64(),
            if lost.is_empty() {
                format!(
                    "all {n} clusters hold their {EDGES_PER_CLUSTER} edges and every connection sent"
                )
            } else {
                lost.join("; ")
            }
        );
        for failure in failures.iter().take(3) {
            println!("       failure: {failure}");
        }
        if samples.is_empty() {
            missed = Some(format!("{n} clusters sent no report in {seconds} s"));
        } else if p99 >= TARGET_P99 {
            missed = Some(format!("{n} clusters: p99 {:.0} ms", ms(p99)));
        } else if !failures.is_empty() {
            missed = Some(format!("{n} clusters: {} failed reports", failures.len()));
        } else if !lost.is_empty() {
            missed = Some(format!("{n} clusters: the database does not hold what was sent"));
        }
        if missed.is_some() {
            break;
        }
        best = Some(n);
    }
    db.close().await?;
    println!();
    match (best, missed) {
        (Some(n), Some(why)) => println!(
            "largest N that met the target: {n} clusters (missed at {why})"
        ),
        (None, Some(why)) => println!("no step met the target (missed at {why})"),
        (Some(n), None) => println!(
            "every step met the target, up to {n} clusters: the capacity is higher; add larger counts to BENCH_CLUSTERS"
        ),
        (None, None) => println!("no step ran"),
    }
    Ok(())
}

/// Adds organisations and clusters until there are `n` clusters, each with its token and its
/// 1,000 edges loaded.
async fn grow(
    http: &reqwest::Client,
    url: &str,
    owner_url: &str,
    per_org: usize,
    n: usize,
    orgs: &mut Vec<Org>,
    clusters: &mut Vec<Cluster>,
) -> Result<()> {
    let first_new = clusters.len();
    while clusters.len() < n {
        let i = clusters.len();
        let org = i / per_org;
        if org == orgs.len() {
            let made = admin(owner_url, &["create-org", &format!("capacity-{org}")])?;
            orgs.push(Org {
                id: made["org_id"].as_str().context("create-org printed no org_id")?.parse()?,
                api_token: made["api_token"]
                    .as_str()
                    .context("create-org printed no api_token")?
                    .to_owned(),
            });
        }
        let created = http
            .post(format!("{url}/api/v1/clusters"))
            .bearer_auth(&orgs[org].api_token)
            .json(&serde_json::json!({"name": format!("c-{i}")}))
            .send()
            .await?;
        let status = created.status();
        let body: serde_json::Value = created.json().await?;
        ensure!(status.is_success(), "POST /api/v1/clusters answered {status}: {body}");
        let id = body["cluster_id"].as_str().context("no cluster_id")?.parse()?;
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", body["client_id"].as_str().context("no client_id")?),
            ("client_secret", body["client_secret"].as_str().context("no client_secret")?),
        ];
        let token = http.post(format!("{url}/oauth/token")).form(&form).send().await?;
        let status = token.status();
        let token: serde_json::Value = token.json().await?;
        ensure!(status.is_success(), "POST /oauth/token answered {status}: {token}");
        let token = token["access_token"].as_str().context("no access_token")?.to_owned();
        clusters.push(Cluster { org, id, token, sent: 0, round: 0 });
    }
    // Load the new clusters' edges, a few at a time (untimed); retry what the limits refuse.
    let mut loads = tokio::task::JoinSet::new();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(first_new));
    let tokens: Arc<Vec<String>> = Arc::new(clusters.iter().map(|c| c.token.clone()).collect());
    for _ in 0..4 {
        let (http, url, next, tokens) =
            (http.clone(), url.to_owned(), next.clone(), tokens.clone());
        loads.spawn(async move {
            let mut sent = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(token) = tokens.get(i) else { return Ok::<_, anyhow::Error>(sent) };
                let edges: Vec<Edge> =
                    (0..EDGES_PER_CLUSTER).map(|e| edge(e, Utc::now(), 1)).collect();
                let connections = edges.iter().map(|e| e.connections).sum::<u64>();
                let body = report(edges)?;
                let mut attempts = 0;
                loop {
                    match post(&http, &url, token, body.clone(), EDGES_PER_CLUSTER).await {
                        Ok(()) => break,
                        Err(e) if attempts < 20 && e.to_string().contains("retry") => {
                            attempts += 1;
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        Err(e) => return Err(e.context(format!("loading cluster {i}"))),
                    }
                }
                sent.push((i, connections));
            }
        });
    }
    while let Some(result) = loads.join_next().await {
        for (i, connections) in result.context("a loading task panicked")?? {
            clusters[i].sent += connections;
        }
    }
    Ok(())
}

/// One step: every one of the first `n` clusters sends a change report every `PERIOD` for
/// `seconds`. The samples, and per cluster the connections accepted and the reports sent.
async fn step(
    http: &reqwest::Client,
    url: &str,
    clusters: &[Cluster],
    n: usize,
    per_org: usize,
    seconds: u64,
) -> Result<(Vec<Sample>, Vec<(u64, usize)>)> {
    let start = tokio::time::Instant::now() + Duration::from_millis(100);
    let end = start + Duration::from_secs(seconds);
    // Spread the clusters over the period, and the members of one organisation apart: cluster
    // i (member i % per_org of organisation i / per_org) gets slot
    // (i % per_org) * orgs + i / per_org of per_org * orgs.
    let org_count = n.div_ceil(per_org);
    let slots = (per_org.min(n) * org_count) as u32;
    let mut tasks = tokio::task::JoinSet::new();
    for (i, cluster) in clusters.iter().enumerate().take(n) {
        let slot = ((i % per_org) * org_count + i / per_org) as u32;
        let offset = PERIOD * slot / slots.max(1);
        let (http, url, token, first_round) =
            (http.clone(), url.to_owned(), cluster.token.clone(), cluster.round);
        tasks.spawn(async move {
            let mut samples = Vec::new();
            let (mut accepted, mut rounds) = (0u64, 0usize);
            let mut at = start + offset;
            while at < end {
                tokio::time::sleep_until(at).await;
                let round = first_round + rounds;
                let now = Utc::now();
                let edges: Vec<Edge> = (0..CHANGED_PER_REPORT)
                    .map(|k| {
                        let e = (round * CHANGED_PER_REPORT + k) % EDGES_PER_CLUSTER;
                        edge(e, now, 1 + ((round + k) % 5) as u64)
                    })
                    .collect();
                let connections = edges.iter().map(|e| e.connections).sum::<u64>();
                let body = report(edges)?;
                let sent = Instant::now();
                let result = post(&http, &url, &token, body, CHANGED_PER_REPORT).await;
                let latency = sent.elapsed();
                if result.is_ok() {
                    accepted += connections;
                }
                samples.push(Sample { latency, failure: result.err().map(|e| format!("{e:#}")) });
                rounds += 1;
                at += PERIOD;
            }
            Ok::<_, anyhow::Error>((i, samples, accepted, rounds))
        });
    }
    let mut all = Vec::new();
    let mut sent = vec![(0, 0); n];
    while let Some(result) = tasks.join_next().await {
        let (i, samples, accepted, rounds) = result.context("a cluster task panicked")??;
        all.extend(samples);
        sent[i] = (accepted, rounds);
    }
    Ok((all, sent))
}

/// One report; an error unless the cloud answers 202 having merged `expected` edges.
async fn post(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    body: Vec<u8>,
    expected: usize,
) -> Result<()> {
    let response = http
        .post(format!("{url}/api/v1/reports"))
        .bearer_auth(token)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .context("POST /api/v1/reports")?;
    let status = response.status();
    let reply = response.bytes().await.context("reading the reply")?;
    if status != reqwest::StatusCode::ACCEPTED {
        bail!("POST /api/v1/reports answered {status}: {}", String::from_utf8_lossy(&reply));
    }
    let reply: serde_json::Value = serde_json::from_slice(&reply)?;
    let merged = reply["edges_merged"].as_u64();
    ensure!(merged == Some(expected as u64), "the reply merged {merged:?} edges, not {expected}");
    Ok(())
}

/// What each cluster's rows say against what it sent; empty when they agree.
async fn check(db: &mut PgConnection, orgs: &[Org], clusters: &[Cluster]) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    for (o, org) in orgs.iter().enumerate() {
        let mut tx = db.begin().await?;
        sqlx::query("SELECT set_config('app.org_id', $1, true)")
            .bind(org.id.to_string())
            .execute(&mut *tx)
            .await?;
        // The owner bypasses row-level security: name the organisation, so that each check reads
        // its own edges (through the primary key), not every organisation's.
        let rows: Vec<(Uuid, i64, i64)> = sqlx::query_as(
            "SELECT cluster_id, count(*), sum(connections)::int8 FROM edges WHERE org_id = $1
             GROUP BY cluster_id",
        )
        .bind(org.id)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        for cluster in clusters.iter().filter(|c| c.org == o) {
            let (edges, connections) =
                rows.iter().find(|r| r.0 == cluster.id).map_or((0, 0), |r| (r.1, r.2));
            if edges != EDGES_PER_CLUSTER as i64 || connections != cluster.sent as i64 {
                problems.push(format!(
                    "cluster {} holds {edges} edges and {connections} connections, sent {EDGES_PER_CLUSTER} edges and {} connections",
                    cluster.id, cluster.sent
                ));
            }
        }
        let strangers = rows.iter().filter(|r| !clusters.iter().any(|c| c.id == r.0)).count();
        if strangers > 0 {
            problems.push(format!(
                "organisation {} holds edges of {strangers} unknown clusters",
                org.id
            ));
        }
    }
    Ok(problems)
}

fn report(edges: Vec<Edge>) -> Result<Vec<u8>> {
    Ok(serde_json::to_vec(&EdgeReport::new(Uuid::new_v4(), Utc::now(), edges, vec![]))?)
}

/// Edge `e` of a cluster, seen until `last_seen`: client workload `e / 20` of namespace
/// `team-(e / 200)` calling its `e % 20`-th target: 14 workloads of its namespace, 3 of the next
/// namespace, 2 Services and an internet host. The same `e` is always the same edge.
fn edge(e: usize, last_seen: DateTime<Utc>, connections: u64) -> Edge {
    let (client, slot) = (e / TARGETS_PER_CLIENT, e % TARGETS_PER_CLIENT);
    let namespace = |i: usize| format!("team-{}", i % 5);
    let ns = client / 10;
    let port = |n: u16| vec![PortSpec { port: n, protocol: Protocol::Tcp }];
    let (target, ports) = match slot {
        0..14 => (
            Target::Kubernetes(WorkloadRef::new(
                &namespace(ns),
                &format!("svc-{}", (client + slot + 1) % 50),
                Some("Deployment"),
            )),
            port(8080),
        ),
        14..17 => (
            Target::Kubernetes(WorkloadRef::new(
                &namespace(ns + 1),
                &format!("svc-{}", (client + slot) % 50),
                Some("Deployment"),
            )),
            port(9090),
        ),
        17..19 => (
            Target::Service(ServiceRef {
                namespace: namespace(ns),
                name: if slot == 17 { "postgres".into() } else { "redis".into() },
            }),
            port(if slot == 17 { 5432 } else { 6379 }),
        ),
        _ => (
            Target::Internet(InternetTarget {
                domains: vec![format!("api-{client}.example.com")],
                ips: vec![format!("203.0.113.{}", client % 250 + 1)],
                ports: vec![443],
            }),
            vec![],
        ),
    };
    Edge {
        client: WorkloadRef::new(
            &namespace(ns),
            &format!("svc-{}", client % 50),
            Some("Deployment"),
        ),
        target,
        ports,
        first_seen: last_seen - chrono::Duration::minutes(10),
        last_seen,
        connections,
        http: Vec::new(),
        kafka: Vec::new(),
        bytes: None,
    }
}

/// Nearest-rank percentile of sorted durations.
fn percentile(sorted: &[Duration], p: usize) -> Duration {
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted[rank - 1]
}
