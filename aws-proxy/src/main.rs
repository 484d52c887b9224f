use clap::Parser as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = aws_proxy::cli::Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if args.log_format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
    aws_proxy::cli::run(args).await
}
