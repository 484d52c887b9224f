//! Reads that scale: the access graph, its filters, the aggregated view and the streamed
//! ClientIntents export, against organisations of `BENCH_SIZES` edges.
//!
//! `cargo bench -p cloud-api --bench reads` (`BENCH_SIZES=10000,100000` for a quicker run;
//! default `10000,100000,1000000`; `BENCH_RUNS` timed runs per read, default 5).
//!
//! The real `cloud-api serve` binary runs as a child process against a throwaway PostgreSQL
//! (`testkit::pg::server()`: `DATABASE_URL` if set), with `--graph-max-edges 2000000` and
//! `--read-timeout-seconds 300` so that even the full reads are served. Each size is its own
//! organisation, seeded straight into the tables with one `INSERT ... SELECT FROM
//! generate_series` (ingest is not what this measures): 10 clusters (`c-0` holds half of the
//! edges), 200 namespaces per cluster, 20 edges per client workload (mostly to workloads of the
//! same namespace, some to the next namespace, a Service, AWS, a unique internet host and a host
//! that cluster `c-1` exposes, which the graph resolves to its workload).
//!
//! The aggregated view is read three ways: computed (its stored copies deleted before each run),
//! stored and current, and stored after a report (each run first bumps a cluster's
//! `edges_version` as a report does, so the stored view is served `stale` and a refresh starts;
//! the last refresh is waited for after the runs).
//!
//! For each read: the median wall time of the runs, as a client sees it (request to last byte),
//! the response size, and the server's peak RSS during the read (VmHWM of the server process,
//! reset through `/proc/<pid>/clear_refs` before each read) and its growth over the RSS the read
//! started from (the allocator keeps what earlier reads freed, so the growth is the read's own
//! cost; the full read runs last for the same reason). The full graph read is what every
//! read cost before the filters went into SQL (the organisation was loaded and filtered in
//! memory), so it is the "before" column of each filtered read. First, three reads are walked in
//! pages of 5,000 edges (`limit=5000`, following `next`): the median and slowest page (request
//! to last byte) of the walk with the median total of the runs, that total, and the most one
//! page grew the server. Figures are printed,
//! never asserted.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use sqlx::{Connection, Executor, PgConnection};

const CLUSTERS: usize = 10;
const NAMESPACES: usize = 200;
const EDGES_PER_CLIENT: usize = 20;

mod support;
use support::{admin, env_list, Server};

fn main() -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(support::until_signal(run()))
}

impl Server {
    fn status_kib(&self, field: &str) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no {field} in /proc/{}/status", self.child.id()))
    }

    /// Resets VmHWM to the current RSS.
    fn reset_peak(&self) -> Result<()> {
        std::fs::write(format!("/proc/{}/clear_refs", self.child.id()), "5")
            .context("resetting the server's peak RSS (/proc/<pid>/clear_refs)")
    }
}

async fn run() -> Result<()> {
    let sizes = env_list("BENCH_SIZES", "10000,100000,1000000")?;
    let runs = env_list("BENCH_RUNS", "5")?.first().copied().unwrap_or(5).max(1);
    let server = testkit::pg::server().await.context(
        "PostgreSQL for the benchmark (set DATABASE_URL or run scripts/ensure-postgres.sh)",
    )?;
    let owner_url = server.fresh_database("reads_bench").await?;
    cloud_api::migrate(&owner_url).await?;
    let serving_url = cloud_api::store::roles::dedicated_login_url(&owner_url)?;
    let port = testkit::process::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let child = Command::new(env!("CARGO_BIN_EXE_cloud-api"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--database-url", &serving_url, "--migrate-database-url", &owner_url])
        .args(["--graph-max-edges", "2000000", "--read-timeout-seconds", "300"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .context("starting cloud-api serve")?;
    let server = Server { child, url };
    let http = reqwest::Client::builder().timeout(Duration::from_secs(600)).build()?;
    testkit::process::wait_ready(&http, &format!("{}/readyz", server.url), Duration::from_secs(30))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut db = PgConnection::connect(&owner_url).await?;
    let version: String = sqlx::query_scalar("SHOW server_version").fetch_one(&mut db).await?;
    println!(
        "reads bench: PostgreSQL {version}, cloud-api serve pid {} (release build), {runs} runs per read; \
         time = median wall time to the last byte; peak = the server's VmHWM during the read",
        server.child.id()
    );
    println!("server RSS at start: {:.1} MiB", server.status_kib("VmRSS:")? as f64 / 1024.0);

    for &size in &sizes {
        let org = admin(&owner_url, &["create-org", &format!("bench-{size}")])?;
        let org_id = org["org_id"].as_str().context("org_id")?.to_owned();
        let token = org["api_token"].as_str().context("api_token")?.to_owned();
        for c in 0..CLUSTERS {
            admin(&owner_url, &["create-cluster", "--org", &org_id, &format!("c-{c}")])?;
        }
        let started = Instant::now();
        seed(&mut db, &org_id, size).await?;
        println!(
            "\n== {size} edges (seeded in {:.1} s; other organisations hold {} edges) ==",
            started.elapsed().as_secs_f64(),
            sizes.iter().take_while(|&&s| s != size).sum::<usize>()
        );
        println!(
            "{:<44} {:>10} {:>10} {:>10} {:>14} {:>10} {:>11}",
            "paged read (limit=5000), every page",
            "edges",
            "pages",
            "median ms",
            "max ms (page)",
            "total ms",
            "growth MiB"
        );
        for (name, query) in [
            ("cluster=c-5", "cluster=c-5"),
            ("namespace=ns-7", "namespace=ns-7"),
            ("full graph", ""),
        ] {
            walk_pages(&server, &http, &token, (name, query), 5000, runs).await?;
        }
        println!(
            "\n{:<44} {:>10} {:>10} {:>12} {:>11} {:>11}",
            "read", "edges", "time ms", "bytes", "peak MiB", "growth MiB"
        );
        let reads: Vec<(&str, String, Before)> = vec![
            (
                "namespace=ns-17 (both ends)",
                "/api/v1/access-graph?namespace=ns-17".into(),
                Before::Nothing,
            ),
            (
                "namespace=ns-7 (holds an exposed workload)",
                "/api/v1/access-graph?namespace=ns-7".into(),
                Before::Nothing,
            ),
            ("cluster=c-5 (both ends)", "/api/v1/access-graph?cluster=c-5".into(), Before::Nothing),
            (
                "cluster=c-5&namespace=ns-17",
                "/api/v1/access-graph?cluster=c-5&namespace=ns-17".into(),
                Before::Nothing,
            ),
            (
                "workload=wl-21 (both ends)",
                "/api/v1/access-graph?workload=wl-21".into(),
                Before::Nothing,
            ),
            (
                "since=1h (none recent: an org scan)",
                "/api/v1/access-graph?since=1h".into(),
                Before::Nothing,
            ),
            (
                "aggregated view, computed (none stored)",
                "/api/v1/access-graph/summary".into(),
                Before::ForgetSummaries,
            ),
            (
                "aggregated view, stored and current",
                "/api/v1/access-graph/summary".into(),
                Before::Nothing,
            ),
            (
                "aggregated view, stored, after a report",
                "/api/v1/access-graph/summary".into(),
                Before::Report,
            ),
            (
                "aggregated view since=3650d (every edge), computed",
                "/api/v1/access-graph/summary?since=3650d".into(),
                Before::ForgetSummaries,
            ),
            (
                "aggregated view since=3650d (every edge), kept",
                "/api/v1/access-graph/summary?since=3650d".into(),
                Before::Nothing,
            ),
            (
                "aggregated view cluster=c-5, computed",
                "/api/v1/access-graph/summary?cluster=c-5".into(),
                Before::ForgetSummaries,
            ),
            (
                "aggregated view cluster=c-5, stored",
                "/api/v1/access-graph/summary?cluster=c-5".into(),
                Before::Nothing,
            ),
            (
                "ClientIntents c-0, streamed",
                "/api/v1/clusters/c-0/client-intents".into(),
                Before::Nothing,
            ),
            (
                "ClientIntents c-0 namespace=ns-17",
                "/api/v1/clusters/c-0/client-intents?namespace=ns-17".into(),
                Before::Nothing,
            ),
            // Last: what it leaves allocated would otherwise sit under the others' figures.
            (
                "full graph (the old path for every read)",
                "/api/v1/access-graph".into(),
                Before::Nothing,
            ),
        ];
        for (name, path, prepare) in reads {
            let mut times = Vec::new();
            let mut peak = 0u64;
            let mut growth = 0u64;
            let mut bytes = 0usize;
            let mut edges = String::from("-");
            for _ in 0..runs {
                if let Some(sql) = prepare.sql() {
                    as_tenant(&mut db, &org_id, sql).await?;
                }
                server.reset_peak()?;
                let before = server.status_kib("VmRSS:")?;
                let t = Instant::now();
                let mut resp =
                    http.get(format!("{}{path}", server.url)).bearer_auth(&token).send().await?;
                let status = resp.status();
                // Read as a client that does not keep what it reads (except graph JSON, to count).
                let keep = path.starts_with("/api/v1/access-graph");
                let mut body = Vec::new();
                bytes = 0;
                while let Some(chunk) = resp.chunk().await? {
                    bytes += chunk.len();
                    if keep {
                        body.extend_from_slice(&chunk);
                    }
                }
                times.push(t.elapsed());
                let hwm = server.status_kib("VmHWM:")?;
                peak = peak.max(hwm);
                growth = growth.max(hwm.saturating_sub(before));
                if !status.is_success() {
                    bail!("{path}: {status}: {}", String::from_utf8_lossy(&body));
                }
                if keep {
                    let v: serde_json::Value = serde_json::from_slice(&body)?;
                    edges = v["edges"].as_array().map_or(0, Vec::len).to_string();
                }
            }
            if matches!(prepare, Before::Report) {
                // Each run served the stored view and started a refresh: let the last one land.
                settle(&http, &server.url, &token, path.as_str()).await?;
            }
            times.sort();
            let median = times[times.len() / 2];
            println!(
                "{name:<44} {edges:>10} {:>10.1} {bytes:>12} {:>11.1} {:>11.1}",
                median.as_secs_f64() * 1000.0,
                peak as f64 / 1024.0,
                growth as f64 / 1024.0
            );
        }
    }
    db.close().await?;
    Ok(())
}

/// One walk through a paged read.
struct Walk {
    /// Each page's time, request to last byte, in page order.
    pages: Vec<Duration>,
    edges: usize,
    total: Duration,
    /// The most one page grew the server's peak RSS.
    growth_kib: u64,
}

/// Reads `query` in pages of `limit` edges, following `next`, `runs` times, and prints the walk
/// with the median total: how many pages, the median and slowest page (request to last byte),
/// the whole walk's time and the most a page grew the server.
async fn walk_pages(
    server: &Server,
    http: &reqwest::Client,
    token: &str,
    (name, query): (&str, &str),
    limit: usize,
    runs: usize,
) -> Result<()> {
    let mut walks = Vec::new();
    for _ in 0..runs {
        walks.push(walk(server, http, token, query, limit).await.with_context(|| name.to_owned())?);
    }
    walks.sort_by_key(|w| w.total);
    let w = &walks[walks.len() / 2];
    let n = w.pages.len();
    let slowest = (0..n).max_by_key(|&i| w.pages[i]).map_or(0, |i| i + 1);
    let mut sorted = w.pages.clone();
    sorted.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{name:<44} {:>10} {n:>10} {:>10.1} {:>14} {:>10.1} {:>11.1}",
        w.edges,
        ms(sorted[n / 2]),
        format!("{:.1} (#{slowest})", ms(sorted[n - 1])),
        ms(w.total),
        w.growth_kib as f64 / 1024.0
    );
    Ok(())
}

async fn walk(
    server: &Server,
    http: &reqwest::Client,
    token: &str,
    query: &str,
    limit: usize,
) -> Result<Walk> {
    let mut w = Walk { pages: Vec::new(), edges: 0, total: Duration::ZERO, growth_kib: 0 };
    let mut after: Option<String> = None;
    let started = Instant::now();
    loop {
        let mut url = format!("{}/api/v1/access-graph?{query}&limit={limit}", server.url);
        if let Some(a) = &after {
            url.push_str(&format!("&after={a}"));
        }
        server.reset_peak()?;
        let before = server.status_kib("VmRSS:")?;
        let t = Instant::now();
        let resp = http.get(url).bearer_auth(token).send().await?;
        let status = resp.status();
        let body = resp.bytes().await?;
        w.pages.push(t.elapsed());
        w.growth_kib = w.growth_kib.max(server.status_kib("VmHWM:")?.saturating_sub(before));
        if !status.is_success() {
            bail!("page {}: {status}: {}", w.pages.len(), String::from_utf8_lossy(&body));
        }
        let page: serde_json::Value = serde_json::from_slice(&body)?;
        w.edges += page["edges"].as_array().map_or(0, Vec::len);
        after = page["next"].as_str().map(str::to_owned);
        if after.is_none() {
            w.total = started.elapsed();
            return Ok(w);
        }
    }
}

/// What is done before each timed run of a read.
enum Before {
    Nothing,
    /// Delete the organisation's stored aggregated views: the read computes one.
    ForgetSummaries,
    /// Bump a cluster's `edges_version`, as a report does: the read serves the stored view
    /// `stale` and starts a refresh.
    Report,
}

impl Before {
    /// The statement that does it (`$1`: the organisation).
    fn sql(&self) -> Option<&'static str> {
        match self {
            Before::Nothing => None,
            Before::ForgetSummaries => Some("DELETE FROM graph_summaries WHERE org_id = $1::uuid"),
            Before::Report => Some(
                "UPDATE clusters SET edges_version = edges_version + 1 WHERE org_id = $1::uuid AND name = 'c-0'",
            ),
        }
    }
}

/// Runs `sql` (with `$1` the organisation) as the owner, under the organisation's row-level
/// security.
async fn as_tenant(db: &mut PgConnection, org: &str, sql: &str) -> Result<()> {
    let mut tx = db.begin().await?;
    sqlx::query("SELECT set_config('app.org_id', $1, true)").bind(org).execute(&mut *tx).await?;
    sqlx::query(sql).bind(org).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(())
}

/// Reads `path` until it is no longer `stale` (the background refresh has stored a new view).
async fn settle(http: &reqwest::Client, url: &str, token: &str, path: &str) -> Result<()> {
    loop {
        let v: serde_json::Value =
            http.get(format!("{url}{path}")).bearer_auth(token).send().await?.json().await?;
        if v["stale"] == false {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `size` edges for `org`, straight into `edges` and `exposed_workloads` (as the owner, under
/// the organisation's row-level security).
async fn seed(db: &mut PgConnection, org: &str, size: usize) -> Result<()> {
    let mut tx = db.begin().await?;
    sqlx::query("SELECT set_config('app.org_id', $1, true)").bind(org).execute(&mut *tx).await?;
    sqlx::query(
        "INSERT INTO exposed_workloads (org_id, cluster_id, namespace, name, kind, addresses, hostnames)
         SELECT $1::uuid, c.id, 'ns-' || g, 'gateway-' || g, 'Deployment', ARRAY['192.0.2.' || g], ARRAY['gw-' || g || '.example.com']
         FROM clusters c, generate_series(0, 9) g WHERE c.org_id = $1::uuid AND c.name = 'c-1'",
    )
    .bind(org)
    .execute(&mut *tx)
    .await?;
    // Edge i: client k = i / 20, edge j = i % 20 of that client. Client k lives in cluster c-0
    // when k is even, else c-(1 + (k/2) % 9); in namespace ns-((k/10) % 200); named wl-k.
    let sql = format!(
        "INSERT INTO edges (org_id, cluster_id, client_namespace, client_name, client_kind, target_type, target_namespace,
                            target_name, target_kind, ports, domains, ips, internet_ports, actions, first_seen, last_seen,
                            connections, edge_key)
         SELECT $1::uuid, cl.id, 'ns-' || ((k / 10) % {NAMESPACES}), 'wl-' || k, 'Deployment',
                CASE WHEN j < 16 THEN 'kubernetes' WHEN j = 16 THEN 'service' WHEN j = 17 THEN 'aws' ELSE 'internet' END,
                CASE WHEN j < 12 THEN 'ns-' || ((k / 10) % {NAMESPACES})
                     WHEN j <= 16 THEN 'ns-' || ((k / 10 + 1) % {NAMESPACES}) ELSE '' END,
                CASE WHEN j <= 16 THEN 'wl-' || ((k + j + 1) % greatest(($2 / {EDGES_PER_CLIENT})::int, 1))
                     WHEN j = 17 THEN 'arn:aws:s3:::bucket-' || (k % 100)
                     WHEN j = 18 THEN 'h' || i || '.example.com'
                     ELSE 'gw-' || (k % 10) || '.example.com' END,
                CASE WHEN j < 16 THEN 'Deployment' END,
                ARRAY[(8000 + j) || '/TCP'],
                CASE WHEN j = 18 THEN ARRAY['h' || i || '.example.com']
                     WHEN j = 19 THEN ARRAY['gw-' || (k % 10) || '.example.com'] ELSE '{{}}' END,
                CASE WHEN j >= 18 THEN ARRAY['198.51.100.' || (i % 250)] ELSE '{{}}' END,
                CASE WHEN j >= 18 THEN ARRAY[443] ELSE '{{}}' END,
                CASE WHEN j = 17 THEN ARRAY['s3:GetObject'] ELSE '{{}}' END,
                timestamptz '2026-11-01T00:00:00Z' + (i % 1000) * interval '1 minute',
                timestamptz '2026-11-20T00:00:00Z' + (i % 1000) * interval '1 minute',
                1 + i % 50,
                substring(sha256(convert_to($1 || ':' || i, 'UTF8')) for 16)
         FROM (SELECT i, i / {EDGES_PER_CLIENT} AS k, i % {EDGES_PER_CLIENT} AS j FROM generate_series(0, $2 - 1) i) s
         JOIN clusters cl ON cl.org_id = $1::uuid
              AND cl.name = 'c-' || CASE WHEN k % 2 = 0 THEN 0 ELSE 1 + (k / 2) % {} END",
        CLUSTERS - 1
    );
    let inserted = sqlx::query(&sql)
        .bind(org)
        .bind(i64::try_from(size)?)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    tx.commit().await?;
    if inserted != size as u64 {
        bail!("seeded {inserted} edges, wanted {size}");
    }
    db.execute("VACUUM ANALYZE edges").await?;
    db.execute("VACUUM ANALYZE exposed_workloads").await?;
    Ok(())
}
