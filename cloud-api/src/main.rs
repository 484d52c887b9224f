use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = cloud_api::Args::parse();
    cloud_api::init_tracing(args.log_format);
    cloud_api::run(args).await
}
