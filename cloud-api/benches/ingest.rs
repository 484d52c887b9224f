//! Ingest throughput, inserts and updates, against a plain binary `COPY`, and the access-graph
//! read.
//!
//! `cargo bench -p cloud-api --bench ingest [-- --concurrency N --edges N]`
//!
//! - Phase A (inserts) posts `BENCH_EDGES` (default 1,000,000) distinct edges, in reports of
//!   10,000, through the real router: JWT auth, JSON parse and validation, merge, and the
//!   batched upsert in one transaction per report. `--concurrency N` / `BENCH_CONCURRENCY`
//!   reports are in flight at once (default 2).
//! - Phase B copies the same rows into a bare table with the columns of `edges` (no keys, no
//!   indexes, no row-level security) in one `COPY ... FROM STDIN (FORMAT binary)` stream,
//!   encoded here by hand. That is the server's floor for writing these rows.
//! - Phase C copies them again into a table with the primary key of `edges`
//!   (`org_id, cluster_id, edge_key`) and nothing else: what the key alone costs.
//! - Phase D (updates) re-reports the same edges through the same router, as agents mostly do:
//!   the same keys, `last_seen` an hour later and as many connections again, in reports with
//!   new ids. Every edge already exists, so each row is an `ON CONFLICT DO UPDATE`.
//! - Phase E reads the access graph of another organisation holding exactly 10,000 edges.
//! - Phase F takes a few reports apart, one at a time: JSON parse and validation, merge,
//!   `Store::ingest` alone, and the whole POST, to show where ingest time goes.
//!
//! PostgreSQL comes from `testkit::pg::server()`: `DATABASE_URL` if set, else a throwaway
//! cluster. The figures are printed, never asserted: targets are at least 0.5 of the bare
//! `COPY` rate for both inserts and updates, and a 10,000-edge read under 100 ms.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use axum::body::{Body, Bytes};
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use chrono::{DateTime, TimeZone, Utc};
use cloud_api::tokens::{JwtIssuer, SigningKey};
use cloud_api::{AppState, Config};
use model::{
    AwsTarget, Edge, EdgeReport, InternetTarget, PortSpec, Protocol, ServiceRef, Target,
    WorkloadRef,
};
use sqlx::{Connection, PgConnection};
use tower::ServiceExt;
use uuid::Uuid;

/// Edges per report.
const REPORT_EDGES: usize = 10_000;
/// Distinct targets each client workload calls.
const TARGETS_PER_CLIENT: usize = 100;
const NAMESPACES: usize = 200;
/// Edges of the organisation whose graph phase C reads.
const READ_EDGES: usize = 10_000;
const READ_RUNS: usize = 20;

fn main() -> Result<()> {
    let options = Options::parse()?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run(options))
}

struct Options {
    edges: usize,
    concurrency: usize,
}

impl Options {
    /// Flags win over the environment. Anything else (`cargo bench` passes `--bench`) is ignored.
    fn parse() -> Result<Self> {
        let mut edges = env_number("BENCH_EDGES")?.unwrap_or(1_000_000);
        let mut concurrency = env_number("BENCH_CONCURRENCY")?.unwrap_or(2);
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) => (f.to_owned(), Some(v.to_owned())),
                None => (arg.clone(), None),
            };
            let target = match flag.as_str() {
                "--edges" => &mut edges,
                "--concurrency" => &mut concurrency,
                _ => continue,
            };
            let value =
                inline.or_else(|| args.next()).with_context(|| format!("{flag} needs a number"))?;
            *target = value.parse().with_context(|| format!("{flag} {value:?} is not a number"))?;
        }
        ensure!(
            edges > 0 && edges % TARGETS_PER_CLIENT == 0,
            "the edge count ({edges}) must be a positive multiple of {TARGETS_PER_CLIENT}"
        );
        ensure!(concurrency > 0, "--concurrency must be at least 1");
        Ok(Self { edges, concurrency })
    }
}

fn env_number(name: &str) -> Result<Option<usize>> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => Ok(Some(
            v.trim()
                .replace('_', "")
                .parse()
                .with_context(|| format!("{name}={v:?} is not a number"))?,
        )),
        _ => Ok(None),
    }
}

async fn run(options: Options) -> Result<()> {
    let Options { edges: total, concurrency } = options;

    let server = testkit::pg::server().await.context(
        "PostgreSQL for the benchmark (set DATABASE_URL or run scripts/ensure-postgres.sh)",
    )?;
    let url = server.fresh_database("bench").await?;
    cloud_api::migrate(&url).await?;
    let mut admin =
        PgConnection::connect(&url).await.context("connecting as the database owner")?;
    let version: String = sqlx::query_scalar("SHOW server_version").fetch_one(&mut admin).await?;
    let key = SigningKey::generate();
    // Long enough that no token expires during a slow run.
    let jwt = JwtIssuer::new(
        "https://bench.local".into(),
        "intentmap-ingest".into(),
        Duration::from_secs(6 * 3600),
        vec![key],
    )?;
    let pool_size = u32::try_from(concurrency + 2).unwrap_or(u32::MAX);
    // One organisation sends every report: let it have as many in flight as asked for.
    let ingest = cloud_api::http::ingest::IngestLimits {
        concurrent: concurrency.max(4),
        concurrent_per_org: concurrency,
        ..Default::default()
    };
    let state =
        cloud_api::state(&url, jwt, Config { ingest, ..Config::default() }, pool_size).await?;
    let router = cloud_api::app(state.clone());

    println!(
        "PostgreSQL {version} ({}), {} CPUs",
        if server.is_owned() { "throwaway cluster" } else { "DATABASE_URL" },
        cpus()
    );

    // === data, generated and serialised before any timing ===
    let started = Instant::now();
    let org = state.store.create_org("bench-ingest").await?;
    let cluster = state.store.create_cluster(org.org_id, &"bench-cluster".parse()?).await?;
    let token = cluster_token(&state, org.org_id, cluster.cluster_id);
    let reports = make_reports(total, 0, 0);
    let bodies = to_bodies(&reports)?;
    let copy_data =
        encode_copy(org.org_id, cluster.cluster_id, reports.iter().flat_map(|r| &r.edges));
    let report_count = reports.len();
    drop(reports);
    let json_bytes: usize = bodies.iter().map(Bytes::len).sum();
    println!(
        "generated {} edges in {report_count} reports ({:.1} MB of JSON, {:.1} MB of binary COPY data) in {:.1} s",
        group(total as u64),
        json_bytes as f64 / 1e6,
        copy_data.len() as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );

    // === A: ingest through the router ===
    println!("\n[A] inserts: {report_count} reports of new edges through POST /api/v1/reports, {concurrency} in flight");
    let bodies = Arc::new(bodies);
    checkpoint(&mut admin).await;
    let cpu_before = process_cpu();
    let (ingest_time, merged) = ingest_all(&router, &token, bodies.clone(), concurrency).await?;
    let ingest_cpu = process_cpu().zip(cpu_before).map(|(after, before)| after - before);
    ensure!(merged == total as u64, "the replies count {merged} merged edges, expected {total}");
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM edges").fetch_one(&mut admin).await?;
    ensure!(stored == total as i64, "edges holds {stored} rows after ingest, expected {total}");

    // === B: the COPY baseline ===
    println!("\n[B] COPY baseline: one binary COPY stream into a bare table");
    sqlx::query("CREATE TABLE copy_baseline (LIKE edges)").execute(&mut admin).await?;
    checkpoint(&mut admin).await;
    let copy_time = copy_in(&mut admin, "copy_baseline", &copy_data).await?;
    let copied: i64 =
        sqlx::query_scalar("SELECT count(*) FROM copy_baseline").fetch_one(&mut admin).await?;
    ensure!(copied == total as i64, "copy_baseline holds {copied} rows, expected {total}");
    let differing: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM (SELECT {COLUMNS} FROM edges EXCEPT SELECT {COLUMNS} FROM copy_baseline) d"))
        .fetch_one(&mut admin)
        .await?;
    ensure!(differing == 0, "{differing} rows of edges are not in copy_baseline: the two phases did not write the same rows");
    println!("  copy_baseline holds the same {} rows as edges", group(total as u64));

    // === C: COPY into a table with the key of edges ===
    println!("\n[C] COPY with the key: one binary COPY stream into a table with the primary key of edges");
    sqlx::query("CREATE TABLE copy_keyed (LIKE edges)").execute(&mut admin).await?;
    sqlx::query("ALTER TABLE copy_keyed ADD PRIMARY KEY (org_id, cluster_id, edge_key)")
        .execute(&mut admin)
        .await?;
    checkpoint(&mut admin).await;
    let keyed_time = copy_in(&mut admin, "copy_keyed", &copy_data).await?;
    drop(copy_data);
    let keyed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM copy_keyed").fetch_one(&mut admin).await?;
    ensure!(keyed == total as i64, "copy_keyed holds {keyed} rows, expected {total}");
    // The copies are not needed any more; their pages would only slow the next checkpoint.
    sqlx::query("DROP TABLE copy_baseline, copy_keyed").execute(&mut admin).await?;

    // === D: updates through the router ===
    let sample: Vec<Bytes> = bodies[..BREAKDOWN_SAMPLE.min(bodies.len())].to_vec();
    drop(bodies);
    let inserted_connections: i64 = sqlx::query_scalar("SELECT sum(connections)::int8 FROM edges")
        .fetch_one(&mut admin)
        .await?;
    let started = Instant::now();
    let updates = Arc::new(to_bodies(&make_reports(total, 2, 1))?);
    println!(
        "\n[D] updates: the same {} edges re-reported (same keys, last_seen an hour later, as many connections again) in {} new reports, {concurrency} in flight (generated in {:.1} s)",
        group(total as u64),
        updates.len(),
        started.elapsed().as_secs_f64()
    );
    checkpoint(&mut admin).await;
    let cpu_before = process_cpu();
    let (update_time, merged) = ingest_all(&router, &token, updates.clone(), concurrency).await?;
    let update_cpu = process_cpu().zip(cpu_before).map(|(after, before)| after - before);
    drop(updates);
    ensure!(merged == total as u64, "the replies count {merged} merged edges, expected {total}");
    let (stored, connections): (i64, i64) =
        sqlx::query_as("SELECT count(*), sum(connections)::int8 FROM edges")
            .fetch_one(&mut admin)
            .await?;
    ensure!(
        stored == total as i64,
        "edges holds {stored} rows after the updates, expected {total}"
    );
    ensure!(
        connections == 2 * inserted_connections,
        "edges counts {connections} connections after the updates, expected twice {inserted_connections}"
    );
    println!("  edges holds the same {} rows with twice the connections", group(total as u64));

    // === E: the access-graph read ===
    println!(
        "\n[E] GET /api/v1/access-graph of an organisation with {} edges",
        group(READ_EDGES as u64)
    );
    let reader = state.store.create_org("bench-read").await?;
    let read_cluster = state.store.create_cluster(reader.org_id, &"read-cluster".parse()?).await?;
    let read_token = cluster_token(&state, reader.org_id, read_cluster.cluster_id);
    for report in make_reports(READ_EDGES, 1, 0) {
        post_report(&router, &read_token, Bytes::from(serde_json::to_vec(&report)?)).await?;
    }
    let read_times = read_graph(&router, &reader.api_token).await?;
    admin.close().await?;

    // === F: one report at a time, taken apart ===
    let sample = &sample[..];
    println!(
        "\n[F] where one report's time goes: {} reports, one at a time, into clusters of their own",
        sample.len()
    );
    let breakdown = breakdown(&state, &router, sample).await?;

    // === summary ===
    let rate = |d: Duration| total as f64 / d.as_secs_f64();
    let (ingest_rate, update_rate, copy_rate, keyed_rate) =
        (rate(ingest_time), rate(update_time), rate(copy_time), rate(keyed_time));
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!();
    let rows = [
        (format!("inserts  {total} new edges in {report_count} reports (HTTP):"), ingest_time),
        (format!("updates  the same {total} edges re-reported (HTTP):"), update_time),
        (format!("COPY     {total} rows into a bare table (binary):"), copy_time),
        (format!("COPY     {total} rows into a table with the key:"), keyed_time),
    ];
    let width = rows.iter().map(|(label, _)| label.len()).max().unwrap_or(0);
    for (label, time) in &rows {
        println!(
            "{label:<width$} {:>6.1} s {:>9} rows/s",
            time.as_secs_f64(),
            group(rate(*time) as u64)
        );
    }
    let verdict = |r: f64| if r >= 0.5 { "met" } else { "NOT MET" };
    let ratio = ingest_rate / copy_rate;
    println!("ratio inserts / bare COPY        {ratio:.2} (goal >= 0.5: {})", verdict(ratio));
    let ratio = update_rate / copy_rate;
    println!("ratio updates / bare COPY        {ratio:.2} (goal >= 0.5: {})", verdict(ratio));
    println!("ratio COPY with key / bare COPY  {:.2}", keyed_rate / copy_rate);
    println!(
        "access-graph read, {READ_EDGES} edges: min {:.0} ms, median {:.0} ms, p95 {:.0} ms (target < 100 ms)",
        ms(read_times[0]),
        ms(percentile(&read_times, 50)),
        ms(percentile(&read_times, 95))
    );
    println!();
    let cores = cpus() as f64;
    for (what, cpu, time) in
        [("inserts", ingest_cpu, ingest_time), ("updates", update_cpu, update_time)]
    {
        let Some(cpu) = cpu else { continue };
        let wall = time.as_secs_f64();
        println!(
            "during {what} this process (router, JSON, merge, sqlx) used {:.1} s of CPU, {:.0}% of the {:.1} core-seconds available; the rest is PostgreSQL's or idle",
            cpu,
            100.0 * cpu / (wall * cores),
            wall * cores
        );
    }
    let per_report = |d: Duration| ms(d) * breakdown.edges as f64 / total as f64;
    println!(
        "per report of {} edges, one in flight (median of {}):",
        group(breakdown.edges as u64),
        sample.len()
    );
    println!("  parse + validate (EdgeReport::from_json)  {:>6.1} ms", ms(breakdown.parse));
    println!("  merge_edges                                {:>6.1} ms", ms(breakdown.merge));
    println!("  Store::ingest (merge + SQL transaction)    {:>6.1} ms", ms(breakdown.store));
    println!("  POST /api/v1/reports, end to end           {:>6.1} ms", ms(breakdown.http));
    println!("  the same rows' share of the COPY           {:>6.1} ms", per_report(copy_time));
    println!(
        "  the same rows' share of phase A's wall     {:>6.1} ms ({concurrency} in flight)",
        per_report(ingest_time)
    );
    Ok(())
}

/// Flushes the previous phase's dirty pages (untimed), so that each timed phase starts alike.
async fn checkpoint(conn: &mut PgConnection) {
    if let Err(e) = sqlx::query("CHECKPOINT").execute(conn).await {
        println!("  (no CHECKPOINT before the phase: {e})");
    }
}

fn cpus() -> usize {
    std::thread::available_parallelism().map(usize::from).unwrap_or(1)
}

fn cluster_token(state: &AppState, org: Uuid, cluster: Uuid) -> String {
    state.jwt.issue(org, cluster, Utc::now().timestamp()).0
}

/// CPU time (user + system) of this process so far, from `/proc/self/stat` (Linux only).
fn process_cpu() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // "pid (comm) state ...": utime and stime are the 12th and 13th fields after the comm.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let (user, system): (u64, u64) = (fields.next()?.parse().ok()?, fields.next()?.parse().ok()?);
    // /proc reports clock ticks of USER_HZ, which is 100 on Linux.
    Some((user + system) as f64 / 100.0)
}

// === phase A ===

/// Posts every body with `concurrency` requests in flight: the wall time from the first request
/// to the last reply, and the edges merged.
async fn ingest_all(
    router: &Router,
    token: &str,
    bodies: Arc<Vec<Bytes>>,
    concurrency: usize,
) -> Result<(Duration, u64)> {
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let merged = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (router, token, bodies, next, done, merged) = (
            router.clone(),
            token.to_owned(),
            bodies.clone(),
            next.clone(),
            done.clone(),
            merged.clone(),
        );
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = bodies.get(i) else { return Ok::<_, anyhow::Error>(()) };
                let edges = post_report(&router, &token, body.clone())
                    .await
                    .with_context(|| format!("report {i}"))?;
                let edges = merged.fetch_add(edges, Ordering::Relaxed) + edges;
                let finished = done.fetch_add(1, Ordering::Relaxed) + 1;
                if finished % 10 == 0 || finished == bodies.len() {
                    let secs = started.elapsed().as_secs_f64();
                    println!(
                        "  {finished:>4}/{} reports {:>10} edges {:>7.1} s {:>9} edges/s so far",
                        bodies.len(),
                        group(edges),
                        secs,
                        group((edges as f64 / secs) as u64)
                    );
                }
            }
        });
    }
    while let Some(result) = workers.join_next().await {
        result.context("an ingest worker panicked")??;
    }
    Ok((started.elapsed(), merged.load(Ordering::Relaxed)))
}

/// One report through the router; the number of edges it merged.
async fn post_report(router: &Router, token: &str, body: Bytes) -> Result<u64> {
    let request = Request::builder()
        .method(Method::POST)
        .uri("/api/v1/reports")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, body.len())
        .body(Body::from(body))?;
    let response = router.clone().oneshot(request).await?;
    let status = response.status();
    let reply = axum::body::to_bytes(response.into_body(), usize::MAX).await?;
    if status != StatusCode::ACCEPTED {
        bail!(
            "POST /api/v1/reports answered {status}, not 202 Accepted: {}",
            String::from_utf8_lossy(&reply)
        );
    }
    let reply: serde_json::Value = serde_json::from_slice(&reply)?;
    reply["edges_merged"].as_u64().context("the reply has no edges_merged")
}

// === phases B and C ===

/// The columns of `edges`, in the order the COPY stream carries them.
const COLUMNS: &str = "org_id, cluster_id, client_namespace, client_name, target_type, target_namespace, target_name, client_kind, target_kind, \
                       ports, domains, ips, internet_ports, actions, http, kafka, first_seen, last_seen, connections, edge_key";
const COLUMN_COUNT: i16 = 20;

async fn copy_in(conn: &mut PgConnection, table: &str, data: &[u8]) -> Result<Duration> {
    const CHUNK: usize = 1 << 20;
    let started = Instant::now();
    let mut copy =
        conn.copy_in_raw(&format!("COPY {table} ({COLUMNS}) FROM STDIN (FORMAT binary)")).await?;
    for chunk in data.chunks(CHUNK) {
        copy.send(chunk).await?;
    }
    let rows = copy.finish().await?;
    let elapsed = started.elapsed();
    println!("  COPY reported {} rows in {:.1} s", group(rows), elapsed.as_secs_f64());
    Ok(elapsed)
}

/// The rows the store writes for these edges, in PostgreSQL's binary COPY format.
fn encode_copy<'a>(org: Uuid, cluster: Uuid, edges: impl Iterator<Item = &'a Edge>) -> Vec<u8> {
    let mut out = CopyWriter::new();
    for edge in edges {
        let key = edge.key();
        let none: &[String] = &[];
        let (target_kind, domains, ips, internet_ports, actions) = match &edge.target {
            Target::Kubernetes(w) | Target::Kafka(w) => {
                (w.kind.as_deref(), none, none, &[][..], none)
            }
            Target::Service(_) => (None, none, none, &[][..], none),
            Target::Internet(i) | Target::Incoming(i) => {
                (None, &i.domains[..], &i.ips[..], &i.ports[..], none)
            }
            Target::Aws(a) => (None, none, none, &[][..], &a.actions[..]),
        };
        let ports: Vec<String> = edge.ports.iter().map(PortSpec::to_string).collect();
        out.tuple(COLUMN_COUNT);
        out.uuid(org);
        out.uuid(cluster);
        out.text(Some(&key.client_namespace));
        out.text(Some(&key.client_name));
        out.text(Some(key.target_type));
        out.text(Some(&key.target_namespace));
        out.text(Some(&key.target_name));
        out.text(edge.client.kind.as_deref());
        out.text(target_kind);
        out.text_array(&ports);
        out.text_array(domains);
        out.text_array(ips);
        out.int4_array(internet_ports.iter().map(|&p| i32::from(p)));
        out.text_array(actions);
        out.text_array(&cloud_api::store::encode_http(&edge.http));
        out.text_array(&cloud_api::store::encode_kafka(&edge.kafka));
        out.timestamptz(edge.first_seen);
        out.timestamptz(edge.last_seen);
        out.int8(i64::try_from(edge.connections).unwrap_or(i64::MAX));
        out.field(&cloud_api::store::edge_key_hash(&key));
    }
    out.finish()
}

/// <https://www.postgresql.org/docs/current/sql-copy.html#id-1.9.3.55.9.4>: a signature and
/// header, then per tuple a 16-bit field count and each field as a 32-bit length (-1 for NULL)
/// and that many bytes of the type's binary send format; a field count of -1 ends the stream.
struct CopyWriter {
    buf: Vec<u8>,
}

const TEXT_OID: u32 = 25;
const INT4_OID: u32 = 23;
/// Microseconds from the Unix epoch to PostgreSQL's, 2000-01-01 00:00:00 UTC.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

impl CopyWriter {
    fn new() -> Self {
        let mut buf = Vec::with_capacity(64 << 20);
        buf.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
        buf.extend_from_slice(&0i32.to_be_bytes()); // flags: no OIDs
        buf.extend_from_slice(&0i32.to_be_bytes()); // header extension length
        Self { buf }
    }

    fn tuple(&mut self, fields: i16) {
        self.buf.extend_from_slice(&fields.to_be_bytes());
    }

    fn field(&mut self, bytes: &[u8]) {
        self.len(bytes.len());
        self.buf.extend_from_slice(bytes);
    }

    fn len(&mut self, n: usize) {
        self.buf.extend_from_slice(&i32::try_from(n).expect("a field under 2 GiB").to_be_bytes());
    }

    fn uuid(&mut self, id: Uuid) {
        self.field(id.as_bytes());
    }

    fn text(&mut self, s: Option<&str>) {
        match s {
            Some(s) => self.field(s.as_bytes()),
            None => self.buf.extend_from_slice(&(-1i32).to_be_bytes()),
        }
    }

    fn timestamptz(&mut self, t: DateTime<Utc>) {
        self.field(&(t.timestamp_micros() - PG_EPOCH_MICROS).to_be_bytes());
    }

    fn int8(&mut self, n: i64) {
        self.field(&n.to_be_bytes());
    }

    /// One-dimensional array without NULLs: dimensions, has-nulls flag, element type, then
    /// (size, lower bound) per dimension and the length-prefixed elements. Empty: no dimensions.
    fn array(&mut self, element_oid: u32, elements: &[&[u8]]) {
        let dims = usize::from(!elements.is_empty());
        let size = 12 + 8 * dims + elements.iter().map(|e| 4 + e.len()).sum::<usize>();
        self.len(size);
        self.buf.extend_from_slice(&(dims as i32).to_be_bytes());
        self.buf.extend_from_slice(&0i32.to_be_bytes());
        self.buf.extend_from_slice(&element_oid.to_be_bytes());
        if dims == 1 {
            self.len(elements.len());
            self.buf.extend_from_slice(&1i32.to_be_bytes());
        }
        for e in elements {
            self.field(e);
        }
    }

    fn text_array(&mut self, items: &[String]) {
        let elements: Vec<&[u8]> = items.iter().map(|s| s.as_bytes()).collect();
        self.array(TEXT_OID, &elements);
    }

    fn int4_array(&mut self, items: impl Iterator<Item = i32>) {
        let encoded: Vec<[u8; 4]> = items.map(i32::to_be_bytes).collect();
        let elements: Vec<&[u8]> = encoded.iter().map(|e| &e[..]).collect();
        self.array(INT4_OID, &elements);
    }

    fn finish(mut self) -> Vec<u8> {
        self.buf.extend_from_slice(&(-1i16).to_be_bytes());
        self.buf
    }
}

// === phase E ===

/// One warm-up, then `READ_RUNS` timed reads; sorted durations.
async fn read_graph(router: &Router, api_token: &str) -> Result<Vec<Duration>> {
    let get = || async {
        let request = Request::builder()
            .method(Method::GET)
            .uri("/api/v1/access-graph")
            .header(header::AUTHORIZATION, format!("Bearer {api_token}"))
            .body(Body::empty())?;
        let started = Instant::now();
        let response = router.clone().oneshot(request).await?;
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX).await?;
        let elapsed = started.elapsed();
        ensure!(
            status == StatusCode::OK,
            "GET /api/v1/access-graph answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
        Ok::<_, anyhow::Error>((elapsed, body))
    };
    let (warm_up, body) = get().await?;
    let graph: model::AccessGraph = serde_json::from_slice(&body)?;
    ensure!(
        graph.edges.len() == READ_EDGES,
        "the access graph has {} edges, expected {READ_EDGES}",
        graph.edges.len()
    );
    println!(
        "  warm-up {:.0} ms ({:.1} MB of JSON, {} nodes, {} edges)",
        warm_up.as_secs_f64() * 1000.0,
        body.len() as f64 / 1e6,
        graph.nodes.len(),
        graph.edges.len()
    );
    let mut times = Vec::with_capacity(READ_RUNS);
    for _ in 0..READ_RUNS {
        let (elapsed, body) = get().await?;
        ensure!(body.len() > 2, "an empty access graph");
        times.push(elapsed);
    }
    times.sort();
    Ok(times)
}

// === phase F ===

const BREAKDOWN_SAMPLE: usize = 5;

/// Medians per report.
struct Breakdown {
    /// Edges in each sampled report.
    edges: usize,
    parse: Duration,
    merge: Duration,
    store: Duration,
    http: Duration,
}

/// Times the parts of ingesting each report on its own: the JSON, the merge, `Store::ingest`
/// (merge and transaction, no HTTP) into one new cluster, and the whole POST into another.
async fn breakdown(state: &AppState, router: &Router, bodies: &[Bytes]) -> Result<Breakdown> {
    let org = state.store.create_org("bench-breakdown").await?;
    let direct = state.store.create_cluster(org.org_id, &"direct".parse()?).await?;
    let via_http = state.store.create_cluster(org.org_id, &"via-http".parse()?).await?;
    let token = cluster_token(state, org.org_id, via_http.cluster_id);
    let (mut parse, mut merge, mut store, mut http) = (vec![], vec![], vec![], vec![]);
    for body in bodies {
        let started = Instant::now();
        let report = EdgeReport::from_json(body)?;
        parse.push(started.elapsed());

        let started = Instant::now();
        let merged = model::merge_edges(report.edges.iter().cloned());
        merge.push(started.elapsed());
        drop(merged);

        let started = Instant::now();
        let outcome = state.store.ingest(org.org_id, direct.cluster_id, &report).await?;
        store.push(started.elapsed());
        ensure!(
            !outcome.duplicate && outcome.edges_merged == report.edges.len(),
            "Store::ingest merged {} of {} edges",
            outcome.edges_merged,
            report.edges.len()
        );

        let started = Instant::now();
        post_report(router, &token, body.clone()).await?;
        http.push(started.elapsed());
    }
    let median = |mut v: Vec<Duration>| {
        v.sort();
        percentile(&v, 50)
    };
    let edges =
        bodies.first().map_or(Ok(0), |b| EdgeReport::from_json(b).map(|r| r.edges.len()))?;
    Ok(Breakdown {
        edges,
        parse: median(parse),
        merge: median(merge),
        store: median(store),
        http: median(http),
    })
}

/// Nearest-rank percentile of sorted durations.
fn percentile(sorted: &[Duration], p: usize) -> Duration {
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted[rank - 1]
}

// === the edges ===

const TEAMS: [&str; 20] = [
    "payments",
    "checkout",
    "catalog",
    "search",
    "identity",
    "shipping",
    "billing",
    "analytics",
    "platform",
    "notifications",
    "pricing",
    "inventory",
    "reviews",
    "ads",
    "media",
    "support",
    "fraud",
    "loyalty",
    "reporting",
    "partners",
];

const WORKLOADS: [&str; 25] = [
    "frontend",
    "api-gateway",
    "cart",
    "checkout",
    "orders",
    "inventory",
    "pricing",
    "recommendations",
    "search-indexer",
    "user-profile",
    "auth",
    "sessions",
    "notifier",
    "mailer",
    "invoicer",
    "ledger",
    "catalog-sync",
    "image-resizer",
    "feature-flags",
    "rate-limiter",
    "audit-log",
    "exporter",
    "scheduler",
    "webhooks",
    "graphql",
];

/// Services called by name rather than resolved to pods, and their ports.
const INFRA: [(&str, u16); 10] = [
    ("postgres", 5432),
    ("redis", 6379),
    ("kafka", 9092),
    ("rabbitmq", 5672),
    ("memcached", 11211),
    ("elasticsearch", 9200),
    ("mongodb", 27017),
    ("vault", 8200),
    ("consul", 8500),
    ("nats", 4222),
];

const VENDORS: [&str; 20] = [
    "stripe.com",
    "github.com",
    "googleapis.com",
    "sendgrid.net",
    "twilio.com",
    "datadoghq.com",
    "sentry.io",
    "slack.com",
    "okta.com",
    "auth0.com",
    "pagerduty.com",
    "segment.io",
    "mixpanel.com",
    "algolia.net",
    "cloudflare.com",
    "fastly.net",
    "paypal.com",
    "adyen.com",
    "shopify.com",
    "zendesk.com",
];

const SUBDOMAINS: [&str; 3] = ["api", "cdn", "auth"];

const APP_PORTS: [u16; 6] = [80, 443, 8080, 8443, 9090, 50051];

fn namespace(i: usize) -> String {
    format!("{}-{i:03}", TEAMS[i % TEAMS.len()])
}

fn workload(i: usize) -> String {
    let base = WORKLOADS[i % WORKLOADS.len()];
    match i / WORKLOADS.len() {
        0 => base.to_owned(),
        1 => format!("{base}-worker"),
        n => format!("{base}-worker-{n}"),
    }
}

fn workload_kind(i: usize) -> &'static str {
    match i % 10 {
        3 => "StatefulSet",
        7 => "CronJob",
        9 => "DaemonSet",
        _ => "Deployment",
    }
}

fn base_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 24, 0, 0, 0).single().expect("a valid time")
}

/// Client `c` (of `NAMESPACES` x workloads) calling its `slot`-th target. Within one client the
/// 100 slots are 100 distinct targets: 40 workloads of its own namespace, 30 of others, 10
/// Services, 15 internet destinations and 5 AWS resources.
///
/// `pass` 0 is the edge as first reported; pass `p` is the same edge re-reported `p` hours
/// later (same key, `last_seen` `p` hours later, the same number of connections again).
fn edge(c: usize, slot: usize, pass: usize) -> Edge {
    let (ns, w) = (c % NAMESPACES, c / NAMESPACES);
    let seed = c.wrapping_mul(2_654_435_761) ^ slot.wrapping_mul(40_503);
    let port = |n: u16| PortSpec { port: n, protocol: Protocol::Tcp };
    let (target, ports) = match slot {
        0..40 => {
            let t = (w % 50 + 1 + slot) % 50;
            (
                Target::Kubernetes(WorkloadRef::new(
                    &namespace(ns),
                    &workload(t),
                    Some(workload_kind(t)),
                )),
                vec![port(APP_PORTS[seed % APP_PORTS.len()])],
            )
        }
        40..70 => {
            let k = slot - 40;
            let t = (w + k * 3) % 50;
            let mut ports = vec![port(8080)];
            if seed % 60 < 20 {
                ports.push(port(9090));
            }
            (
                Target::Kubernetes(WorkloadRef::new(
                    &namespace((ns + 1 + k * 7) % NAMESPACES),
                    &workload(t),
                    Some(workload_kind(t)),
                )),
                ports,
            )
        }
        70..80 => {
            let k = slot - 70;
            let (name, p) = INFRA[(k + w) % INFRA.len()];
            let target_ns = if k < 5 { ns } else { (ns + k * 11) % NAMESPACES };
            (
                Target::Service(ServiceRef {
                    namespace: namespace(target_ns),
                    name: name.to_owned(),
                }),
                vec![port(p)],
            )
        }
        80..95 => {
            let k = slot - 80;
            let target = if k < 13 {
                let domain =
                    format!("{}.{}", SUBDOMAINS[k % 3], VENDORS[(k / 3 * 4 + c) % VENDORS.len()]);
                let mut ips = vec![format!("203.0.113.{}", seed % 250 + 1)];
                if seed % 60 < 15 {
                    ips.push(format!("2001:db8::{:x}", seed % 65_000 + 1));
                }
                let ports = if seed % 60 < 12 { vec![80, 443] } else { vec![443] };
                InternetTarget { domains: vec![domain], ips, ports }
            } else {
                InternetTarget {
                    domains: vec![],
                    ips: vec![format!("198.51.100.{}", (c * 2 + k) % 254 + 1)],
                    ports: vec![if k == 13 { 5432 } else { 8443 }],
                }
            };
            let mut target = target;
            target.ips.sort();
            (Target::Internet(target), vec![])
        }
        95..100 => {
            let account = 100_000_000_000 + ns;
            let team = namespace(ns);
            let (arn, actions): (String, &[&str]) = match slot - 95 {
                0 => (format!("arn:aws:s3:::{team}-assets"), &["s3:GetObject", "s3:PutObject"]),
                1 => (
                    format!("arn:aws:sqs:eu-west-1:{account}:{team}-{}-queue", workload(w)),
                    &["sqs:DeleteMessage", "sqs:ReceiveMessage"],
                ),
                2 => (
                    format!("arn:aws:dynamodb:eu-west-1:{account}:table/{team}-orders"),
                    &["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Query"],
                ),
                3 => (
                    format!("arn:aws:secretsmanager:eu-west-1:{account}:secret:{team}/db"),
                    &["secretsmanager:GetSecretValue"],
                ),
                _ => (
                    format!(
                        "arn:aws:kms:eu-west-1:{account}:key/{}",
                        Uuid::from_u128(ns as u128 + 1)
                    ),
                    &["kms:Decrypt"],
                ),
            };
            (
                Target::Aws(AwsTarget {
                    arn,
                    actions: actions.iter().map(|a| (*a).to_owned()).collect(),
                }),
                vec![],
            )
        }
        _ => unreachable!("{TARGETS_PER_CLIENT} targets per client"),
    };
    let first_seen =
        base_time() + chrono::Duration::seconds(((c * 37 + slot * 101) % 86_400) as i64);
    let last_seen = first_seen
        + chrono::Duration::seconds(((c + slot * 7) % 3_600) as i64)
        + chrono::Duration::hours(pass as i64);
    Edge {
        client: WorkloadRef::new(&namespace(ns), &workload(w), Some(workload_kind(w))),
        target,
        ports,
        first_seen,
        last_seen,
        connections: 1 + ((c * 31 + slot * 17) % 5_000) as u64,
        http: Vec::new(),
        kafka: Vec::new(),
        bytes: None,
    }
}

/// `total` distinct edges (`total / 100` clients with 100 targets each) as reports of about
/// `REPORT_EDGES`. Every report carries some targets of every client, as an agent's periodic
/// report would, so each one touches the whole key range. `variant` changes the report ids;
/// `pass` is as for [`edge`].
fn make_reports(total: usize, variant: u128, pass: usize) -> Vec<EdgeReport> {
    let count = total.div_ceil(REPORT_EDGES);
    let mut edges: Vec<Vec<Edge>> = (0..count).map(|_| Vec::with_capacity(REPORT_EDGES)).collect();
    for c in 0..total / TARGETS_PER_CLIENT {
        for slot in 0..TARGETS_PER_CLIENT {
            edges[(c + slot) % count].push(edge(c, slot, pass));
        }
    }
    edges
        .into_iter()
        .enumerate()
        .map(|(r, edges)| {
            let id = Uuid::from_u128((variant << 64) | (0xbe7c_0000 + r as u128));
            EdgeReport::new(
                id,
                // Recent: a report older than the replay window is refused.
                Utc::now() - chrono::Duration::seconds(r as i64),
                edges,
                vec![],
            )
        })
        .collect()
}

fn to_bodies(reports: &[EdgeReport]) -> Result<Vec<Bytes>> {
    Ok(reports.iter().map(|r| serde_json::to_vec(r).map(Bytes::from)).collect::<Result<_, _>>()?)
}

/// `1234567` as `1,234,567`.
fn group(n: u64) -> String {
    let digits = n.to_string();
    let groups: Vec<&str> = digits
        .as_bytes()
        .rchunks(3)
        .rev()
        .map(|g| std::str::from_utf8(g).expect("ASCII digits"))
        .collect();
    groups.join(",")
}
