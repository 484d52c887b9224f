use clap::{Parser, Subcommand};
use service_shell::LogFormat;

#[derive(Debug, Parser)]
#[command(name = "cluster-agent", version, about = "The intentmap in-cluster agent")]
struct Args {
    /// Log format: text or json.
    #[arg(long, env = "LOG_FORMAT", default_value = "text", global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    role: Role,
}

#[derive(Debug, Subcommand)]
enum Role {
    /// Per cluster: resolve observations to workloads, keep the edges, serve them, upload them.
    Mapper(Box<cluster_agent::mapper::MapperArgs>),
    /// Per node: capture TCP connections and DNS answers and ship them to the mapper.
    Node(Box<cluster_agent::node::agent::NodeArgs>),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    service_shell::init_tracing(args.log_format, "info");
    match args.role {
        Role::Mapper(mapper) => cluster_agent::mapper::run(*mapper).await,
        Role::Node(node) => cluster_agent::node::agent::run(*node).await,
    }
}
