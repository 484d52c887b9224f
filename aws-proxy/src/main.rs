use clap::Parser as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = aws_proxy::cli::Args::parse();
    service_shell::init_tracing(args.log_format, "info");
    aws_proxy::cli::run(args).await
}
