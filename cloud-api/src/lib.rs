//! The cloud: tenants, credentials, report ingest, the merged access graph and ClientIntents.

pub mod http;
pub mod metrics;
pub mod store;
pub mod tokens;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args as ClapArgs, Parser, Subcommand, ValueEnum};
use uuid::Uuid;

pub use http::{app, AppState, Config, Shared};
use store::Store;
use tokens::{JwtIssuer, SigningKey, VerifiedTokenCache};

#[derive(Debug, Parser)]
#[command(name = "cloud-api", version, about = "The intentmap cloud: multi-tenant access graphs and ClientIntents")]
pub struct Args {
    /// Log format: `text` for people, `json` for log pipelines.
    #[arg(long, env = "LOG_FORMAT", default_value = "text", global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum, Default)]
pub enum Output {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the API (applies pending migrations first).
    Serve(ServeArgs),
    /// Apply pending database migrations and exit.
    Migrate {
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
    },
    /// Administer organisations and clusters directly in the database.
    #[command(subcommand)]
    Admin(AdminCommand),
}

#[derive(Debug, ClapArgs)]
pub struct ServeArgs {
    #[arg(long, env = "LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
    #[command(flatten)]
    pub jwt: JwtArgs,
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 16 << 20)]
    pub max_body_bytes: usize,
    #[arg(long, env = "MAX_DECOMPRESSED_BYTES", default_value_t = 64 << 20)]
    pub max_decompressed_bytes: usize,
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 16)]
    pub database_max_connections: u32,
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
            let pem = std::fs::read_to_string(path).with_context(|| format!("reading JWT key {}", path.display()))?;
            keys.push(SigningKey::from_pem(&pem).with_context(|| format!("JWT key {}; make one with `cloud-api admin generate-jwt-key`", path.display()))?);
        }
        if keys.is_empty() {
            tracing::warn!("no --jwt-key-files given: using an ephemeral signing key; cluster tokens will not survive a restart");
            keys.push(SigningKey::generate());
        }
        Ok(JwtIssuer::new(self.jwt_issuer.clone(), self.jwt_audience.clone(), Duration::from_secs(self.jwt_lifetime_seconds), keys)?)
    }
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create an organisation; prints its id and a first API token.
    CreateOrg {
        name: String,
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
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
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Print a new Ed25519 JWT signing key (PEM) for --jwt-key-files.
    GenerateJwtKey,
}

pub fn init_tracing(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Builds the shared state for `serve` (and for tests and the demo).
pub async fn state(database_url: &str, jwt: JwtIssuer, config: Config, max_connections: u32) -> anyhow::Result<AppState> {
    let store = Store::connect(database_url, max_connections).await.context("connecting to PostgreSQL (check --database-url / DATABASE_URL)")?;
    Ok(Arc::new(Shared { store, jwt, token_cache: VerifiedTokenCache::new(Duration::from_secs(30)), metrics: Default::default(), config }))
}

pub async fn migrate(database_url: &str) -> anyhow::Result<()> {
    store::migrate(database_url).await.context("applying migrations (the database user needs to own the schema and may create the intentmap_app role)")
}

pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    migrate(&args.database_url).await?;
    let config = Config { max_body_bytes: args.max_body_bytes, max_decompressed_bytes: args.max_decompressed_bytes };
    let state = state(&args.database_url, args.jwt.issuer()?, config, args.database_max_connections).await?;
    let listener = tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    serve_on(listener, state).await
}

/// Serves the API on a bound listener until SIGINT or SIGTERM.
pub async fn serve_on(listener: tokio::net::TcpListener, state: AppState) -> anyhow::Result<()> {
    tracing::info!(listen = %listener.local_addr()?, "cloud-api serving");
    axum::serve(listener, app(state)).with_graceful_shutdown(shutdown_signal()).await?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Serve(serve_args) => serve(serve_args).await,
        Command::Migrate { database_url } => {
            migrate(&database_url).await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Admin(admin) => run_admin(admin).await,
    }
}

async fn admin_store(database_url: &str) -> anyhow::Result<Store> {
    migrate(database_url).await?;
    Store::connect(database_url, 2).await.context("connecting to PostgreSQL (check --database-url / DATABASE_URL)")
}

async fn run_admin(cmd: AdminCommand) -> anyhow::Result<()> {
    match cmd {
        AdminCommand::CreateOrg { name, database_url, output } => {
            let org = admin_store(&database_url).await?.create_org(&name).await?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&org)?),
                Output::Text => println!("organisation {} ({})\nAPI token (shown once): {}", org.name, org.org_id, org.api_token),
            }
        }
        AdminCommand::CreateCluster { org, name, database_url, output } => {
            http::clusters::check_cluster_name(&name).map_err(anyhow::Error::msg)?;
            let store = admin_store(&database_url).await?;
            anyhow::ensure!(store.org_exists(org).await?, "no organisation {org}; create one with `cloud-api admin create-org NAME`");
            let creds = store.create_cluster(org, &name).await.map_err(|e| match ApiError::from(e) {
                ApiError::Conflict(_) => anyhow::anyhow!("a cluster named {name:?} already exists in organisation {org}"),
                other => anyhow::anyhow!("{other}"),
            })?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&creds)?),
                Output::Text => println!(
                    "cluster {} ({})\nclient ID: {}\nclient secret (shown once): {}",
                    creds.name, creds.cluster_id, creds.client_id, creds.client_secret
                ),
            }
        }
        AdminCommand::GenerateJwtKey => print!("{}", SigningKey::generate().to_pem()),
    }
    Ok(())
}

use http::error::ApiError;
