//! The cloud: tenants, credentials, report ingest, the merged access graph and ClientIntents.

mod admin;
pub mod cli;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod openapi;
pub mod retention;
pub mod secrets;
pub mod store;
pub mod tokens;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;

pub use cli::{AdminCommand, Args, Command, JwtArgs, LogFormat, Output, ServeArgs};
pub use http::{app, metrics_app, AppState, Config, Shared};
use limits::{AuthGuard, AuthLimits};
use store::{roles, ReadLimits, Store};
use tokens::JwtIssuer;

/// The cloud's logs: `RUST_LOG` filters, else `info` with sqlx's statements left out.
pub fn init_tracing(format: LogFormat) {
    service_shell::init_tracing(format, "info,sqlx=warn,tower_http=info");
}

/// The limits `serve` applies beyond the ingest `Config`; the defaults are the flags' defaults.
#[derive(Debug, Clone, Default)]
pub struct Protections {
    pub auth: AuthLimits,
    pub reads: ReadLimits,
}

/// Builds the shared state with default limits, hashing secrets with the database's key (for
/// tests and benchmarks).
pub async fn state(
    database_url: &str,
    jwt: JwtIssuer,
    config: Config,
    max_connections: u32,
) -> anyhow::Result<AppState> {
    let store = Store::connect(database_url, max_connections)
        .await
        .context("connecting to PostgreSQL (check --database-url / DATABASE_URL)")?;
    Ok(state_from(store, jwt, config, Protections::default()))
}

pub fn state_from(
    store: Store,
    jwt: JwtIssuer,
    config: Config,
    protections: Protections,
) -> AppState {
    let ingest_gate = http::ingest::IngestGate::new(config.ingest.clone());
    Arc::new(Shared {
        store,
        jwt,
        metrics: Default::default(),
        config,
        guard: AuthGuard::new(protections.auth),
        reads: protections.reads,
        ingest_gate,
    })
}

/// Applies pending migrations as the schema owner.
pub async fn migrate(database_url: &str) -> anyhow::Result<()> {
    store::migrate(database_url)
        .await
        .context("applying migrations (the database user needs to own the schema and may create the intentmap_app and intentmap_auth roles)")
}

/// As the schema owner: creates the serving login role `app_database_url` names (or updates its
/// password) with only the API's grants. Returns the role's name.
pub async fn provision_app_login(
    owner_database_url: &str,
    app_database_url: &str,
) -> anyhow::Result<String> {
    roles::provision_login(owner_database_url, app_database_url)
        .await
        .context("creating the serving login role (the owner needs CREATEROLE, or create the role yourself and GRANT intentmap_app to it)")
}

pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    if let Some(owner) = &args.migrate_database_url {
        migrate(owner).await?;
        let role = provision_app_login(owner, &args.database_url).await?;
        tracing::info!(role, "migrations applied; serving login role ready");
    }
    let keys = args.keys.keys()?;
    if keys.is_empty() {
        tracing::warn!(
            "no --token-hash-key-files given: secrets are hashed with the key stored in the database, so a copy of the database alone \
             can check guesses against them; make a key with `cloud-api admin generate-token-hash-key`"
        );
    }
    let store = Store::connect_with_keys(&args.database_url, args.database_max_connections, keys)
        .await
        .with_context(|| {
            format!(
                "connecting to PostgreSQL as {} (check --database-url / DATABASE_URL)",
                roles::redact(&args.database_url)
            )
        })?;
    roles::check_serving_role(store.pool()).await.context("checking the serving role")?;
    let config = Config {
        max_body_bytes: args.max_body_bytes,
        max_decompressed_bytes: args.max_decompressed_bytes,
        ingest: args.ingest.limits()?,
        retention: args.retention.config()?,
    };
    let protections = Protections { auth: args.auth.limits()?, reads: args.read_limits()? };
    let state = state_from(store, args.jwt.issuer()?, config, protections);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let metrics = match args.metrics_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding --metrics-listen {addr}"))?,
        ),
        None => None,
    };
    let pruner = tokio::spawn(retention::run(state.clone()));
    let served = serve_on(listener, metrics, state).await;
    pruner.abort();
    served
}

/// Serves the API on a bound listener (and `/metrics` on another) until SIGINT or SIGTERM.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    metrics: Option<tokio::net::TcpListener>,
    state: AppState,
) -> anyhow::Result<()> {
    tracing::info!(listen = %listener.local_addr()?, "cloud-api serving");
    let metrics_server = match metrics {
        Some(metrics) => {
            tracing::info!(listen = %metrics.local_addr()?, "metrics serving");
            let app = metrics_app(state.clone());
            Some(tokio::spawn(async move { axum::serve(metrics, app).await }))
        }
        None => None,
    };
    let served =
        axum::serve(listener, app(state).into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(service_shell::shutdown_signal())
            .await;
    if let Some(task) = metrics_server {
        task.abort();
    }
    Ok(served?)
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Serve(serve_args) => serve(*serve_args).await,
        Command::Migrate { database_url, app_database_url } => {
            migrate(&database_url).await?;
            println!("migrations applied");
            if let Some(app_url) = app_database_url {
                let role = provision_app_login(&database_url, &app_url).await?;
                println!("serving login role {role} ready");
            }
            Ok(())
        }
        Command::Admin(cmd) => admin::run(cmd).await,
        Command::Openapi => {
            print!("{}", openapi::json());
            Ok(())
        }
    }
}
