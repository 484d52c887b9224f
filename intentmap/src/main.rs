//! `intentmap`: what people run. It asks a cluster's mapper (its local API on :9090) for the
//! traffic it has seen and lists it, exports it as ClientIntents, draws it, or resets it.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use intentmap::{export, picture};
use model::intents::{self, IntentsVersion};
use model::list::ListStyle;
use model::Edge;

#[derive(Debug, Parser)]
#[command(
    name = "intentmap",
    version,
    about = "List, export, visualize or reset the traffic a cluster's mapper has seen"
)]
struct Cli {
    /// The mapper's local API (e.g. after `kubectl port-forward svc/intentmap-mapper 9090`).
    #[arg(
        long,
        env = "INTENTMAP_MAPPER_URL",
        default_value = "http://localhost:9090",
        global = true
    )]
    mapper_url: String,
    /// Needed only when the mapper is reached other than through `kubectl port-forward` (e.g.
    /// from a pod): a ServiceAccount token made for the mapper's audience, whose account may
    /// read (`get`) or reset (`delete`) `edges.intentmap.dev` in the mapper's namespace, e.g.
    /// `$(kubectl create token ci -n ci --audience intentmap-mapper)`.
    #[arg(long, env = "INTENTMAP_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// A file holding that token (a projected ServiceAccount token in a pod).
    #[arg(long, env = "INTENTMAP_TOKEN_FILE", global = true, conflicts_with = "token")]
    token_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args, Default)]
struct Filters {
    /// Only clients in these namespaces (comma-separated or repeated).
    #[arg(short = 'n', long = "namespaces", value_delimiter = ',')]
    namespaces: Vec<String>,
    /// Only clients that call this server, as `name.namespace`, with all their calls (a
    /// ClientIntents document must list every target of its client: applying one that lists
    /// only some would take the others' access away).
    #[arg(long)]
    server: Option<String>,
    /// Leave out clients whose pods carry any of these labels (`key=value`, comma-separated or repeated).
    #[arg(long = "exclude-labels", value_delimiter = ',')]
    exclude_labels: Vec<String>,
}

impl Filters {
    /// Where a picture's edges came from: the mapper, and the filters that narrowed them.
    fn describe(&self, mapper: &str) -> String {
        let mut out = format!("mapper {mapper}");
        if !self.namespaces.is_empty() {
            out.push_str(&format!(" · namespaces {}", self.namespaces.join(", ")));
        }
        if let Some(server) = &self.server {
            out.push_str(&format!(" · clients of {server}"));
        }
        if !self.exclude_labels.is_empty() {
            out.push_str(&format!(" · without {}", self.exclude_labels.join(", ")));
        }
        out
    }
}

#[derive(Debug, Clone, Copy, ValueEnum, Default, PartialEq, Eq)]
enum ExportFormat {
    #[default]
    Yaml,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum, Default, PartialEq, Eq)]
enum OutputType {
    /// Everything in one file (or standard output).
    #[default]
    Single,
    /// One file per client workload in the `--output` directory.
    Dir,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print who calls whom, per client workload.
    List {
        #[command(flatten)]
        filters: Filters,
        /// Name every in-cluster target `<name> in namespace <namespace>`, also in the
        /// client's own namespace (as some Otterize CLI versions print); by default those are
        /// bare names, as in Otterize's docs.
        #[arg(long)]
        qualified: bool,
    },
    /// Export ClientIntents (YAML by default) for the observed traffic.
    Export {
        #[command(flatten)]
        filters: Filters,
        /// ClientIntents API version: v2beta1 or v1alpha3.
        #[arg(long, default_value = "v2beta1")]
        output_version: String,
        #[arg(long, value_enum, default_value_t)]
        format: ExportFormat,
        /// A file (or, with `--output-type dir`, a directory). Standard output if absent.
        #[arg(short, long)]
        output: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t)]
        output_type: OutputType,
    },
    /// Draw the traffic as a picture: SVG, or PNG when the file name ends in .png.
    Visualize {
        #[command(flatten)]
        filters: Filters,
        #[arg(short, long, default_value = "intentmap.svg")]
        output: PathBuf,
    },
    /// Forget all traffic the mapper has seen so far.
    Reset,
}

struct Mapper {
    base: String,
    http: reqwest::Client,
    token: Option<String>,
}

impl Mapper {
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// What to say when the mapper refuses: its own message, and what to do about it.
    async fn refused(&self, what: &str, reply: reqwest::Response) -> anyhow::Error {
        let status = reply.status();
        let body = reply.text().await.unwrap_or_default();
        let hint = match status.as_u16() {
            401 => "\nReach the mapper through `kubectl port-forward -n intentmap svc/intentmap-mapper 9090:9090` (then no token is needed), or pass --token / INTENTMAP_TOKEN: a token made for the mapper's audience (`kubectl create token <serviceaccount> --audience intentmap-mapper`).",
            403 => "\nThe token's account needs `get` (list, export, visualize) or `delete` (reset) on `edges.intentmap.dev` in the mapper's namespace: bind it to the chart's edges-viewer or edges-admin Role.",
            _ => "",
        };
        anyhow::anyhow!("the mapper refused to {what} ({status}): {body}{hint}")
    }

    fn unreachable(&self, e: reqwest::Error) -> anyhow::Error {
        anyhow::anyhow!(
            "cannot reach the mapper at {}: {e}\nIs it running? In a cluster: kubectl port-forward -n intentmap svc/intentmap-mapper 9090:9090 (or set --mapper-url / INTENTMAP_MAPPER_URL)",
            self.base
        )
    }

    async fn edges(&self, f: &Filters) -> anyhow::Result<Vec<Edge>> {
        let mut query: Vec<(&str, String)> = Vec::new();
        if !f.namespaces.is_empty() {
            query.push(("namespaces", f.namespaces.join(",")));
        }
        if let Some(server) = &f.server {
            query.push(("server", server.clone()));
        }
        if !f.exclude_labels.is_empty() {
            query.push(("exclude_labels", f.exclude_labels.join(",")));
        }
        let reply = self
            .request(reqwest::Method::GET, "/v1/edges")
            .query(&query)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        if !reply.status().is_success() {
            return Err(self.refused("list its edges", reply).await);
        }
        reply.json().await.context("the mapper's answer is not a list of edges; are --mapper-url and the mapper's version right?")
    }

    async fn reset(&self) -> anyhow::Result<()> {
        let reply = self
            .request(reqwest::Method::POST, "/v1/reset")
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        if !reply.status().is_success() {
            return Err(self.refused("reset", reply).await);
        }
        Ok(())
    }
}

fn write_out(path: &Option<PathBuf>, text: &str) -> anyhow::Result<()> {
    match path {
        Some(p) => std::fs::write(p, text).with_context(|| format!("writing {}", p.display())),
        None => {
            print!("{text}");
            Ok(())
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let token = match (&cli.token, &cli.token_file) {
        (Some(token), _) => Some(token.trim().to_owned()),
        (None, Some(file)) => Some(
            std::fs::read_to_string(file)
                .with_context(|| format!("reading the token in {}", file.display()))?
                .trim()
                .to_owned(),
        ),
        (None, None) => None,
    };
    let http = reqwest::Client::builder().timeout(std::time::Duration::from_secs(30)).build()?;
    let mapper = Mapper {
        base: cli.mapper_url.trim_end_matches('/').to_owned(),
        http,
        token: token.filter(|t| !t.is_empty()),
    };
    match cli.command {
        Command::List { filters, qualified } => {
            let style = if qualified { ListStyle::Qualified } else { ListStyle::Seeds };
            print!("{}", model::list::render_list_with(&mapper.edges(&filters).await?, style))
        }
        Command::Export { filters, output_version, format, output, output_type } => {
            let version: IntentsVersion = output_version.parse()?;
            let docs = intents::client_intents(&mapper.edges(&filters).await?, version);
            let render = |docs: &[serde_json::Value]| {
                export::render(
                    docs,
                    match format {
                        ExportFormat::Yaml => export::Format::Yaml,
                        ExportFormat::Json => export::Format::Json,
                    },
                )
            };
            match output_type {
                OutputType::Single => write_out(&output, &render(&docs))?,
                OutputType::Dir => {
                    let dir = output.context("--output-type dir needs --output DIRECTORY")?;
                    std::fs::create_dir_all(&dir)
                        .with_context(|| format!("creating {}", dir.display()))?;
                    let ext = if format == ExportFormat::Json { "json" } else { "yaml" };
                    for doc in &docs {
                        let name = format!(
                            "{}.{}.{ext}",
                            doc["metadata"]["name"].as_str().unwrap_or("client"),
                            doc["metadata"]["namespace"].as_str().unwrap_or("default")
                        );
                        let path = dir.join(name);
                        std::fs::write(&path, render(std::slice::from_ref(doc)))
                            .with_context(|| format!("writing {}", path.display()))?;
                    }
                    eprintln!("wrote {} files to {}", docs.len(), dir.display());
                }
            }
        }
        Command::Visualize { filters, output } => {
            let svg = picture::render_svg(
                &mapper.edges(&filters).await?,
                &filters.describe(&mapper.base),
            );
            let png = output.extension().is_some_and(|e| e.eq_ignore_ascii_case("png"));
            if png {
                std::fs::write(&output, picture::svg_to_png(&svg)?)
            } else {
                std::fs::write(&output, svg)
            }
            .with_context(|| format!("writing {}", output.display()))?;
            eprintln!("wrote {}", output.display());
        }
        Command::Reset => {
            mapper.reset().await?;
            eprintln!("the mapper's traffic was reset");
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() {
    if let Err(e) = run(Cli::parse()).await {
        eprintln!("intentmap: {e:#}");
        std::process::exit(1);
    }
}
