//! What a credential check costs, and whether its timing tells ids apart.
//!
//! `cargo bench -p cloud-api --bench auth` (`BENCH_REQUESTS`, default 2,000 of each kind)
//!
//! - Phase A interleaves four kinds of refused requests through the real router, as the
//!   serving login role against a real PostgreSQL: `/oauth/token` with an unknown client ID and
//!   with a known one and a wrong secret, and an API request with an unknown token id and with a
//!   known one and a wrong secret. Each pair should have the same distribution: the id must not
//!   be guessable from the time the answer takes.
//! - Phase B floods `/oauth/token` with unknown client IDs from 64 tasks for `BENCH_SECONDS` (5)
//!   while a real cluster asks for tokens one after another, and prints the real cluster's
//!   latencies and the process's peak RSS growth.
//!
//! Figures are printed, never asserted.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use cloud_api::limits::AuthLimits;
use cloud_api::store::{roles, Store};
use cloud_api::tokens::{self, JwtIssuer, SigningKey};
use cloud_api::Protections;
use tower::ServiceExt;
use uuid::Uuid;

fn env_number(name: &str, default: u64) -> Result<u64> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => {
            v.trim().parse().with_context(|| format!("{name}={v:?} is not a number"))
        }
        _ => Ok(default),
    }
}

async fn timed(router: &Router, req: Request<Body>) -> Result<(StatusCode, Duration)> {
    let started = Instant::now();
    let res = router.clone().oneshot(req).await?;
    let status = res.status();
    axum::body::to_bytes(res.into_body(), usize::MAX).await?;
    Ok((status, started.elapsed()))
}

fn token_request(client_id: &str, secret: &str) -> Request<Body> {
    let form =
        format!("grant_type=client_credentials&client_id={client_id}&client_secret={secret}");
    Request::post("/oauth/token")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(form))
        .expect("a valid request")
}

fn api_request(token: &str) -> Request<Body> {
    Request::get("/api/v1/clusters")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .expect("a valid request")
}

fn summary(label: &str, mut times: Vec<Duration>) -> Duration {
    times.sort();
    let at = |q: f64| times[((times.len() as f64 - 1.0) * q).round() as usize];
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "  {label:<44} n={:<6} min {:.3} ms  median {:.3} ms  p95 {:.3} ms  p99 {:.3} ms",
        times.len(),
        ms(at(0.0)),
        ms(at(0.5)),
        ms(at(0.95)),
        ms(at(0.99))
    );
    at(0.5)
}

fn rss_mib(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

async fn run() -> Result<()> {
    let requests = env_number("BENCH_REQUESTS", 2_000)? as usize;
    let seconds = env_number("BENCH_SECONDS", 5)?;
    let server = testkit::pg::server().await.context(
        "PostgreSQL for the benchmark (set DATABASE_URL or run scripts/ensure-postgres.sh)",
    )?;
    let owner = server.fresh_database("bench_auth").await?;
    cloud_api::migrate(&owner).await?;
    let app_url = roles::dedicated_login_url(&owner)?;
    cloud_api::provision_app_login(&owner, &app_url).await?;
    let store = Store::connect(&app_url, 16).await?;
    let jwt = JwtIssuer::new(
        "https://bench.local".into(),
        "intentmap-ingest".into(),
        Duration::from_secs(300),
        vec![SigningKey::generate()],
    )?;
    // No rate limits: this measures the checks themselves.
    let auth = AuthLimits {
        per_address_per_second: 1e9,
        per_address_burst: u32::MAX,
        client_failures_per_minute: u32::MAX,
        ..Default::default()
    };
    let state = cloud_api::state_from(
        store,
        jwt,
        Default::default(),
        Protections { auth, ..Default::default() },
    );
    let router = cloud_api::app(state.clone());
    let org = state.store.create_org("bench").await?;
    let cluster = state.store.create_cluster(org.org_id, &"prod".parse()?).await?;
    let (token_id, _) =
        tokens::parse_api_token(&org.api_token).context("the org's token parses")?;

    println!("[A] refused credentials, {requests} of each kind, interleaved");
    let mut times: [Vec<Duration>; 4] = Default::default();
    for _ in 0..requests {
        let unknown_client = format!("cl_{}", Uuid::new_v4().simple());
        let reqs = [
            token_request(&unknown_client, "guess"),
            token_request(&cluster.client_id, "guess"),
            api_request(&tokens::format_api_token(Uuid::new_v4(), "guess")),
            api_request(&tokens::format_api_token(token_id, "guess")),
        ];
        for (i, req) in reqs.into_iter().enumerate() {
            let (status, took) = timed(&router, req).await?;
            anyhow::ensure!(status == StatusCode::UNAUTHORIZED, "expected 401, got {status}");
            times[i].push(took);
        }
    }
    let [unknown_client, wrong_secret, unknown_token, wrong_token] = times;
    let a = summary("/oauth/token, unknown client ID", unknown_client);
    let b = summary("/oauth/token, known client ID, wrong secret", wrong_secret);
    let c = summary("API token, unknown id", unknown_token);
    let d = summary("API token, known id, wrong secret", wrong_token);
    let diff = |x: Duration, y: Duration| (x.as_secs_f64() - y.as_secs_f64()).abs() * 1e3;
    println!(
        "  median differences: token requests {:.3} ms, API tokens {:.3} ms",
        diff(a, b),
        diff(c, d)
    );

    println!("\n[B] 64 tasks flood /oauth/token with unknown client IDs for {seconds} s; a real cluster asks meanwhile");
    let rss_before = rss_mib("VmRSS");
    let stop = Arc::new(AtomicBool::new(false));
    let flooded = Arc::new(AtomicUsize::new(0));
    let mut flood = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let (router, stop, flooded) = (router.clone(), stop.clone(), flooded.clone());
        flood.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let req = token_request(&format!("cl_{}", Uuid::new_v4().simple()), "guess");
                if timed(&router, req).await.is_ok() {
                    flooded.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut real = Vec::new();
    let mut refused = 0;
    while Instant::now() < deadline {
        let (status, took) =
            timed(&router, token_request(&cluster.client_id, &cluster.client_secret)).await?;
        if status == StatusCode::OK {
            real.push(took);
        } else {
            refused += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    while flood.join_next().await.is_some() {}
    let flood_count = flooded.load(Ordering::Relaxed);
    println!(
        "  flood: {flood_count} requests ({:.0}/s); the real cluster: {} tokens, {refused} refused (503)",
        flood_count as f64 / seconds as f64,
        real.len()
    );
    if !real.is_empty() {
        summary("real token request during the flood", real);
    }
    println!(
        "  RSS {rss_before:.1} MiB before, peak {:.1} MiB (VmHWM, whole run)",
        rss_mib("VmHWM")
    );
    Ok(())
}

fn main() -> Result<()> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(run())
}
