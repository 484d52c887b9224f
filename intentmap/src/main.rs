//! `intentmap`: what people run. It asks a cluster's mapper (its local API on :9090) for the
//! traffic it has seen and lists it, exports it as ClientIntents, draws it, or resets it. The
//! mapper is found through the kubeconfig (by the chart's labels, port-forwarded through the API
//! server) unless `--mapper-url` says where it is.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use intentmap::forward::{Endpoint, Reply};
use intentmap::{discover, export, filters, picture, shape};
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
    /// The mapper's local API (e.g. `http://localhost:9090` after `kubectl port-forward -n
    /// intentmap svc/intentmap-mapper 9090`). Without it the mapper is found through your
    /// kubeconfig (KUBECONFIG, ~/.kube/config): the cluster-agent chart's mapper Service, a
    /// Ready pod behind it, port-forwarded through the API server.
    #[arg(long, env = "INTENTMAP_MAPPER_URL", global = true)]
    mapper_url: Option<String>,
    /// Without --mapper-url: look for the mapper's Service in this namespace only (default: in
    /// every namespace).
    #[arg(long, env = "INTENTMAP_MAPPER_NAMESPACE", global = true)]
    mapper_namespace: Option<String>,
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
    /// Leave out these workloads or Services, as clients and as targets (`name` in any
    /// namespace or `name.namespace`, comma-separated or repeated), as Otterize's CLI does.
    /// Unlike the filters above this removes targets from the clients that remain: their
    /// exported ClientIntents no longer allow calls to the services left out.
    #[arg(long = "exclude-services", value_delimiter = ',')]
    exclude_services: Vec<String>,
    /// As Otterize's CLI: tell clients apart by name and the value of this label on their pods
    /// instead of by name and namespace. Workloads of one name whose pods carry different
    /// values are separate entries (`api (track=canary) in namespace shop`; exported as
    /// `metadata.name: api-canary` with that label); those of one name and value in several
    /// namespaces are one, listed and exported in the first namespace. Needs a mapper of this
    /// version.
    #[arg(long = "distinct-by-label", value_name = "KEY")]
    distinct_by_label: Option<String>,
    /// As Otterize's CLI: name a called workload by the Kubernetes Service in front of it
    /// (ClientIntents `service` / `kind: Service` targets) instead of by the workload. A
    /// workload behind no Service keeps its name, and a note on standard error says so; one
    /// behind several Services is named by each. Needs a mapper of this version.
    #[arg(long = "as-kubernetes-service")]
    as_kubernetes_service: bool,
}

/// The edges as `list`, `export` and `visualize` show them.
struct Shaped {
    edges: Vec<Edge>,
    /// With `--distinct-by-label KEY`: the client entries instead of `edges`.
    distinct: Option<shape::Distinct>,
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
        if !self.exclude_services.is_empty() {
            out.push_str(&format!(" · without {}", self.exclude_services.join(", ")));
        }
        if let Some(key) = &self.distinct_by_label {
            out.push_str(&format!(" · distinct by {key}"));
        }
        if self.as_kubernetes_service {
            out.push_str(" · targets as Services");
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
    /// The cloud: log in, clusters, API tokens, the access graph, ClientIntents exports.
    Cloud(intentmap::cloud::CloudArgs),
}

struct Mapper {
    endpoint: Endpoint,
    token: Option<String>,
}

impl Mapper {
    async fn request(
        &self,
        method: reqwest::Method,
        path_and_query: &str,
    ) -> anyhow::Result<Reply> {
        self.endpoint.send(method, path_and_query, self.token.as_deref()).await
    }

    /// What to say when the mapper refuses: its own message, and what to do about it.
    fn refused(&self, what: &str, reply: Reply) -> anyhow::Error {
        let status = reply.status;
        let body = String::from_utf8_lossy(&reply.body);
        let hint = match status.as_u16() {
            401 => "\nLeave out --mapper-url to reach the mapper through your kubeconfig (a port-forward: then no token is needed), or pass --token / INTENTMAP_TOKEN: a token made for the mapper's audience (`kubectl create token <serviceaccount> --audience intentmap-mapper`).",
            400 if body.contains("unknown field") => "\nThe mapper is older than this intentmap: upgrade the cluster-agent chart to use --distinct-by-label or --as-kubernetes-service, or leave them out.",
            403 => "\nThe token's account needs `get` (list, export, visualize) or `delete` (reset) on `edges.intentmap.dev` in the mapper's namespace: bind it to the chart's edges-viewer or edges-admin Role.",
            _ => "",
        };
        anyhow::anyhow!("the mapper refused to {what} ({status}): {body}{hint}")
    }

    async fn edges(&self, f: &Filters) -> anyhow::Result<Shaped> {
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
        if let Some(key) = &f.distinct_by_label {
            shape::check_label_key(key).map_err(anyhow::Error::msg)?;
            query.push(("label_values", key.clone()));
        }
        if f.as_kubernetes_service {
            query.push(("services", "true".to_owned()));
        }
        filters::check_service_names(&f.exclude_services).map_err(anyhow::Error::msg)?;
        let url = reqwest::Url::parse_with_params("http://mapper/v1/edges", &query)?;
        let path = match url.query() {
            Some(q) if !q.is_empty() => format!("{}?{q}", url.path()),
            _ => url.path().to_owned(),
        };
        let reply = self.request(reqwest::Method::GET, &path).await?;
        if !reply.status.is_success() {
            return Err(self.refused("list its edges", reply));
        }
        let context = "the mapper's answer is not a list of edges; are --mapper-url and the mapper's version right?";
        let (edges, facts) = if f.distinct_by_label.is_some() || f.as_kubernetes_service {
            let answer: shape::EdgesWithFacts =
                serde_json::from_slice(&reply.body).context(context)?;
            (answer.edges, answer.workloads)
        } else {
            (serde_json::from_slice(&reply.body).context(context)?, Vec::new())
        };
        let mut edges = filters::exclude_services(edges, &f.exclude_services);
        let mut notes = Vec::new();
        if f.as_kubernetes_service {
            let (services, said) = shape::as_kubernetes_services(edges, &facts);
            // Now also by the Services' names.
            edges = filters::exclude_services(services, &f.exclude_services);
            notes.extend(said);
        }
        let distinct = f.distinct_by_label.as_ref().map(|key| {
            let (distinct, said) =
                shape::distinct_by_label(std::mem::take(&mut edges), &facts, key);
            notes.extend(said);
            distinct
        });
        const MAX_NOTES: usize = 20;
        for note in notes.iter().take(MAX_NOTES) {
            eprintln!("intentmap: note: {note}");
        }
        if notes.len() > MAX_NOTES {
            eprintln!("intentmap: note: and {} more like these", notes.len() - MAX_NOTES);
        }
        Ok(Shaped { edges, distinct })
    }

    async fn reset(&self) -> anyhow::Result<()> {
        let reply = self.request(reqwest::Method::POST, "/v1/reset").await?;
        if !reply.status.is_success() {
            return Err(self.refused("reset", reply));
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
    if let Command::Cloud(args) = cli.command {
        return intentmap::cloud::run(args, cli.token).await;
    }
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
    let endpoint = match &cli.mapper_url {
        Some(url) => Endpoint::url(url)?,
        None => find_mapper(cli.mapper_namespace.as_deref()).await?,
    };
    let mapper = Mapper { endpoint, token: token.filter(|t| !t.is_empty()) };
    match cli.command {
        Command::List { filters, qualified } => {
            let style = if qualified { ListStyle::Qualified } else { ListStyle::Seeds };
            let shaped = mapper.edges(&filters).await?;
            match &shaped.distinct {
                Some(distinct) => print!("{}", distinct.render_list(style)),
                None => print!("{}", model::list::render_list_with(&shaped.edges, style)),
            }
        }
        Command::Export { filters, output_version, format, output, output_type } => {
            let version: IntentsVersion = output_version.parse()?;
            let shaped = mapper.edges(&filters).await?;
            let docs = match &shaped.distinct {
                Some(distinct) => distinct.client_intents(version),
                None => intents::client_intents(&shaped.edges, version),
            };
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
            let extension =
                output.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
            match extension.as_str() {
                "svg" | "png" => {}
                "jpg" | "jpeg" => anyhow::bail!("{} would be a JPEG, which intentmap does not write (no JPEG encoder under an allowed licence yet); write a PNG (-o {}) or an SVG", output.display(), output.with_extension("png").display()),
                _ => anyhow::bail!("write the picture to a file ending in .svg or .png, not {}", output.display()),
            }
            let shaped = mapper.edges(&filters).await?;
            let edges = match &shaped.distinct {
                Some(distinct) => distinct.relabelled(),
                None => shaped.edges,
            };
            let svg = picture::render_svg(&edges, &filters.describe(&mapper.endpoint.describe()));
            if extension == "png" {
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
        Command::Cloud(_) => unreachable!("run() hands cloud commands over first"),
    }
    Ok(())
}

/// The mapper through the kubeconfig: its Service by the chart's labels, a Ready pod, a
/// port-forward per request.
async fn find_mapper(namespace: Option<&str>) -> anyhow::Result<Endpoint> {
    let mut config = kube::Config::infer().await.map_err(|e| {
        anyhow::anyhow!(
            "no --mapper-url, and no usable kubeconfig to find the mapper with: {e}\nPoint KUBECONFIG at your cluster's kubeconfig (or log in so that kubectl works), or pass --mapper-url http://localhost:9090 after kubectl port-forward -n intentmap svc/intentmap-mapper 9090:9090"
        )
    })?;
    let cluster = config.cluster_url.to_string();
    config.connect_timeout = Some(std::time::Duration::from_secs(10));
    config.read_timeout = Some(intentmap::forward::TIMEOUT);
    let client = kube::Client::try_from(config).map_err(|e| {
        anyhow::anyhow!("the kubeconfig's cluster {cluster} cannot be used: {e}\nCheck it with kubectl get pods, or pass --mapper-url")
    })?;
    let target =
        tokio::time::timeout(intentmap::forward::TIMEOUT, discover::find_mapper(&client, namespace))
            .await
            .map_err(|_| {
                anyhow::anyhow!("the API server at {cluster} did not answer within {} s; is it reachable (kubectl get pods)? Or pass --mapper-url", intentmap::forward::TIMEOUT.as_secs())
            })??;
    Ok(Endpoint::forwarded(client, target))
}

#[tokio::main]
async fn main() {
    if let Err(e) = run(Cli::parse()).await {
        eprintln!("intentmap: {e:#}");
        std::process::exit(1);
    }
}
