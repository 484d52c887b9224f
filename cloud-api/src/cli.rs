//! The command line: one clap `Args`, every flag also an environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args as ClapArgs, Parser, Subcommand, ValueEnum};
use uuid::Uuid;

use crate::limits::AuthLimits;
use crate::secrets::HashKey;
use crate::store::ReadLimits;
use crate::tokens::{JwtIssuer, SigningKey};

#[derive(Debug, Parser)]
#[command(
    name = "cloud-api",
    version,
    about = "The intentmap cloud: multi-tenant access graphs and ClientIntents"
)]
pub struct Args {
    /// Log format: `text` for people, `json` for log pipelines.
    #[arg(long, env = "LOG_FORMAT", default_value = "text", global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

pub use service_shell::LogFormat;

#[derive(Debug, Clone, Copy, ValueEnum, Default)]
pub enum Output {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the API as the serving login role (with --migrate-database-url, apply pending
    /// migrations and set that role up first).
    Serve(Box<ServeArgs>),
    /// Apply pending database migrations as the schema owner and exit; with --app-database-url,
    /// also create (or update the password of) the serving login role.
    Migrate {
        /// The schema owner's URL.
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
        /// The serving login role's URL, postgres://<role>:<password>@<host>/<database>.
        #[arg(long, env = "APP_DATABASE_URL")]
        app_database_url: Option<String>,
    },
    /// Administer organisations, clusters and API tokens directly in the database.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Print the API's OpenAPI 3.1 document (what GET /api/v1/openapi.json serves) and exit.
    Openapi,
}

#[derive(Debug, ClapArgs)]
pub struct ServeArgs {
    #[arg(long, env = "LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// The serving login role's URL. `serve` refuses a role that is a superuser, bypasses
    /// row-level security or owns tables (or can SET ROLE to one that does).
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
    /// The schema owner's URL: apply pending migrations and create the serving role of
    /// --database-url before serving. Without it, run `cloud-api migrate` first.
    #[arg(long, env = "MIGRATE_DATABASE_URL")]
    pub migrate_database_url: Option<String>,
    /// Serve `/metrics` on this address only (it counts across organisations). None: no metrics.
    #[arg(long, env = "METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    #[command(flatten)]
    pub jwt: JwtArgs,
    #[command(flatten)]
    pub keys: HashKeyArgs,
    #[command(flatten)]
    pub auth: AuthArgs,
    #[command(flatten)]
    pub ingest: crate::http::ingest::IngestArgs,
    #[command(flatten)]
    pub retention: RetentionArgs,
    /// The most edges one access-graph or ClientIntents read returns; larger reads get 422.
    #[arg(long, env = "GRAPH_MAX_EDGES", default_value_t = ReadLimits::default().max_edges)]
    pub graph_max_edges: usize,
    /// PostgreSQL statement timeout for those reads, in seconds; slower ones get 503.
    #[arg(long, env = "READ_TIMEOUT_SECONDS", default_value_t = 10.0)]
    pub read_timeout_seconds: f64,
    /// Once edges change, the stored aggregated view (`/access-graph/summary`) is still served,
    /// marked `stale`, while a newer one is computed, for at most this many seconds after it was
    /// computed; 0 computes it at the read instead.
    #[arg(long, env = "SUMMARY_MAX_STALE_SECONDS", default_value_t = 300.0)]
    pub summary_max_stale_seconds: f64,
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 16 << 20)]
    pub max_body_bytes: usize,
    #[arg(long, env = "MAX_DECOMPRESSED_BYTES", default_value_t = 64 << 20)]
    pub max_decompressed_bytes: usize,
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 16)]
    pub database_max_connections: u32,
}

impl ServeArgs {
    pub fn read_limits(&self) -> anyhow::Result<ReadLimits> {
        anyhow::ensure!(self.graph_max_edges > 0, "--graph-max-edges must be at least 1");
        let timeout =
            Duration::try_from_secs_f64(self.read_timeout_seconds).ok().filter(|t| !t.is_zero());
        let statement_timeout =
            timeout.context("--read-timeout-seconds must be a positive number of seconds")?;
        let summary_max_stale = Duration::try_from_secs_f64(self.summary_max_stale_seconds)
            .ok()
            .context("--summary-max-stale-seconds must be 0 or a positive number of seconds")?;
        Ok(ReadLimits { max_edges: self.graph_max_edges, statement_timeout, summary_max_stale })
    }
}

/// Background pruning (edges past their organisation's retention, report ids past the replay
/// window).
#[derive(Debug, Clone, ClapArgs)]
pub struct RetentionArgs {
    /// Seconds between pruning runs.
    #[arg(long, env = "RETENTION_INTERVAL_SECONDS", default_value_t = 3600.0)]
    pub retention_interval_seconds: f64,
    /// Rows deleted per transaction while pruning (1-100000).
    #[arg(long, env = "RETENTION_BATCH", default_value_t = 1000)]
    pub retention_batch: i64,
    /// Days a report id is remembered; a report generated longer ago is refused (422), since
    /// applying it again could count its connections twice (1-3650).
    #[arg(long, env = "REPORT_REPLAY_WINDOW_DAYS", default_value_t = 30)]
    pub report_replay_window_days: u32,
}

impl RetentionArgs {
    pub fn config(&self) -> anyhow::Result<crate::retention::RetentionConfig> {
        let interval = Duration::try_from_secs_f64(self.retention_interval_seconds)
            .ok()
            .filter(|t| *t >= Duration::from_millis(100));
        let interval = interval
            .context("--retention-interval-seconds must be a number of seconds, at least 0.1")?;
        anyhow::ensure!(
            (1..=100_000).contains(&self.retention_batch),
            "--retention-batch must be between 1 and 100000"
        );
        anyhow::ensure!(
            (1..=3650).contains(&self.report_replay_window_days),
            "--report-replay-window-days must be between 1 and 3650"
        );
        Ok(crate::retention::RetentionConfig {
            interval,
            batch: self.retention_batch,
            replay_window: Duration::from_secs(u64::from(self.report_replay_window_days) * 86_400),
            ..Default::default()
        })
    }
}

/// Limits on credential checks (`/oauth/token` and API tokens).
#[derive(Debug, Clone, ClapArgs)]
pub struct AuthArgs {
    /// Token requests (and failed API-token checks) per second per caller address; IPv6 callers
    /// count per /64.
    #[arg(long, env = "AUTH_RATE_PER_ADDRESS", default_value_t = AuthLimits::default().per_address_per_second)]
    pub auth_rate_per_address: f64,
    /// How many of those an address may make at once before the rate applies.
    #[arg(long, env = "AUTH_BURST_PER_ADDRESS", default_value_t = AuthLimits::default().per_address_burst)]
    pub auth_burst_per_address: u32,
    /// Failed token requests per minute per client ID; past it, that client ID gets 429.
    #[arg(long, env = "AUTH_CLIENT_FAILURES_PER_MINUTE", default_value_t = AuthLimits::default().client_failures_per_minute)]
    pub auth_client_failures_per_minute: u32,
    /// Token requests checked at once; others wait up to a second, then get 503.
    #[arg(long, env = "AUTH_CONCURRENCY", default_value_t = AuthLimits::default().concurrency)]
    pub auth_concurrency: usize,
    /// Rate-limit by the last address of X-Forwarded-For (what the proxy in front added), not
    /// by the peer. Only behind a proxy that sets it: otherwise callers choose their address.
    #[arg(long, env = "TRUST_FORWARDED_FOR")]
    pub trust_forwarded_for: bool,
}

impl AuthArgs {
    pub fn limits(&self) -> anyhow::Result<AuthLimits> {
        anyhow::ensure!(
            self.auth_rate_per_address > 0.0 && self.auth_rate_per_address.is_finite(),
            "--auth-rate-per-address must be positive"
        );
        anyhow::ensure!(
            self.auth_burst_per_address > 0,
            "--auth-burst-per-address must be at least 1"
        );
        anyhow::ensure!(
            self.auth_client_failures_per_minute > 0,
            "--auth-client-failures-per-minute must be at least 1"
        );
        anyhow::ensure!(self.auth_concurrency > 0, "--auth-concurrency must be at least 1");
        Ok(AuthLimits {
            per_address_per_second: self.auth_rate_per_address,
            per_address_burst: self.auth_burst_per_address,
            client_failures_per_minute: self.auth_client_failures_per_minute,
            concurrency: self.auth_concurrency,
            trust_forwarded_for: self.trust_forwarded_for,
            ..AuthLimits::default()
        })
    }
}

#[derive(Debug, Clone, ClapArgs)]
pub struct JwtArgs {
    /// PEM files with Ed25519 PKCS#8 private keys (comma-separated). The first signs; all verify,
    /// so a rotated-out key keeps its tokens valid until they expire. Without any, an ephemeral
    /// key is generated and tokens do not survive a restart.
    #[arg(long, env = "JWT_KEY_FILES", value_delimiter = ',')]
    pub jwt_key_files: Vec<PathBuf>,
    #[arg(long, env = "JWT_ISSUER", default_value = "intentmap-cloud")]
    pub jwt_issuer: String,
    #[arg(long, env = "JWT_AUDIENCE", default_value = "intentmap-ingest")]
    pub jwt_audience: String,
    /// Lifetime of cluster access tokens, in seconds.
    #[arg(long, env = "JWT_LIFETIME_SECONDS", default_value_t = 300)]
    pub jwt_lifetime_seconds: u64,
}

impl JwtArgs {
    pub fn issuer(&self) -> anyhow::Result<JwtIssuer> {
        let mut keys = Vec::new();
        for path in &self.jwt_key_files {
            let pem = std::fs::read_to_string(path)
                .with_context(|| format!("reading JWT key {}", path.display()))?;
            keys.push(SigningKey::from_pem(&pem).with_context(|| {
                format!(
                    "JWT key {}; make one with `cloud-api admin generate-jwt-key`",
                    path.display()
                )
            })?);
        }
        if keys.is_empty() {
            tracing::warn!("no --jwt-key-files given: using an ephemeral signing key; cluster tokens will not survive a restart");
            keys.push(SigningKey::generate());
        }
        Ok(JwtIssuer::new(
            self.jwt_issuer.clone(),
            self.jwt_audience.clone(),
            Duration::from_secs(self.jwt_lifetime_seconds),
            keys,
        )?)
    }
}

#[derive(Debug, Clone, ClapArgs)]
pub struct HashKeyArgs {
    /// Files holding the keys secrets are hashed with (comma-separated, each at least 32
    /// bytes). The first hashes new secrets; all verify, and a secret under another key is
    /// rehashed the next time it is used. Without any, the key the migrations stored in the
    /// database is used, so a copy of the database alone can check guesses against the hashes.
    #[arg(long, env = "TOKEN_HASH_KEY_FILES", value_delimiter = ',')]
    pub token_hash_key_files: Vec<PathBuf>,
}

impl HashKeyArgs {
    pub fn keys(&self) -> anyhow::Result<Vec<HashKey>> {
        self.token_hash_key_files
            .iter()
            .map(|path| {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading token hash key {}", path.display()))?;
                HashKey::from_file_contents(&text)
                    .with_context(|| format!("token hash key {}", path.display()))
            })
            .collect()
    }
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create an organisation; prints its id and a first API token (scope admin).
    CreateOrg {
        name: String,
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
        #[command(flatten)]
        keys: HashKeyArgs,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Register a cluster; prints its client ID and client secret (shown only once).
    CreateCluster {
        /// The organisation's id.
        #[arg(long)]
        org: Uuid,
        name: String,
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
        #[command(flatten)]
        keys: HashKeyArgs,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Create an API token; prints it (shown only once). Also the way back in when an
    /// organisation has no admin token left.
    CreateToken {
        /// The organisation's id.
        #[arg(long)]
        org: Uuid,
        name: String,
        /// read, write and/or admin (comma-separated); each includes the ones before it.
        #[arg(long, value_delimiter = ',', default_value = "read")]
        scopes: Vec<String>,
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
        #[command(flatten)]
        keys: HashKeyArgs,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Print a new Ed25519 JWT signing key (PEM) for --jwt-key-files.
    GenerateJwtKey,
    /// Print a new key for --token-hash-key-files.
    GenerateTokenHashKey,
}
