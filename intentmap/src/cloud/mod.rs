//! `intentmap cloud`: the cloud API from the command line. Log in once (`login` keeps the API
//! token in the user's config directory, mode 0600), then list, create and revoke clusters and
//! API tokens, read the organisation's access graph and export a cluster's ClientIntents.

pub mod client;
pub mod config;
pub mod output;
pub mod pages;

use std::io::{BufRead, IsTerminal, Read};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand, ValueEnum};
use reqwest::Method;
use serde::Deserialize;
use serde_json::{json, Value};

use self::client::{check_token, normalise_url, Cloud, Doing, Token, TokenSource};
use self::config::{Config, Login};
use self::output::{age, clean, Table};

#[derive(Debug, Args)]
pub struct CloudArgs {
    /// The cloud API's address, e.g. https://cloud.example.com (default: the last one logged in to).
    #[arg(long, env = "INTENTMAP_CLOUD_URL", global = true)]
    cloud_url: Option<String>,
    /// Send the API token over plain http:// to a host other than this machine.
    #[arg(long, global = true)]
    allow_insecure_cloud_url: bool,
    /// A PEM file of CAs to trust for the cloud's TLS, beside the public roots.
    #[arg(long, env = "INTENTMAP_CLOUD_CA_FILE", global = true)]
    cloud_ca_file: Option<PathBuf>,
    #[command(subcommand)]
    command: CloudCommand,
}

#[derive(Debug, Clone, Copy, ValueEnum, Default, PartialEq, Eq)]
pub enum ListFormat {
    /// Aligned columns.
    #[default]
    Table,
    Json,
    Yaml,
    /// Names only, one a line.
    Name,
}

#[derive(Debug, Clone, Copy, ValueEnum, Default, PartialEq, Eq)]
pub enum ObjectFormat {
    #[default]
    Text,
    Json,
    Yaml,
}

#[derive(Debug, Clone, Copy, ValueEnum, Default, PartialEq, Eq)]
pub enum GraphFormat {
    /// One call a line, aligned.
    #[default]
    Text,
    Json,
    Yaml,
    /// Graphviz.
    Dot,
}

#[derive(Debug, Clone, Copy, ValueEnum, Default, PartialEq, Eq)]
pub enum IntentsVersion {
    #[default]
    V2beta1,
    V1alpha3,
}

#[derive(Debug, Clone, Copy, ValueEnum, Default, PartialEq, Eq)]
pub enum IntentsFormat {
    #[default]
    Yaml,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum OutputType {
    /// Everything in one file.
    Single,
    /// One file per client workload.
    Dir,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// The graph, clusters, ClientIntents.
    Read,
    /// Also register, revoke and delete clusters.
    Write,
    /// Also list, create and revoke API tokens.
    Admin,
}

impl Scope {
    fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
        }
    }
}

#[derive(Debug, Subcommand)]
enum CloudCommand {
    /// Store an API token for the cloud, read from standard input and checked first.
    ///
    /// It goes to $XDG_CONFIG_HOME/intentmap/cloud.json (or ~/.config/...), mode 0600.
    /// INTENTMAP_CLOUD_TOKEN, or an imt_ token in INTENTMAP_TOKEN, is used instead when set.
    Login,
    /// Forget the stored token of the cloud (it stays valid until revoked).
    Logout,
    /// The token in use: its organisation, name and scopes.
    Whoami {
        #[arg(short = 'o', long = "output", value_enum, default_value_t)]
        output: ObjectFormat,
    },
    /// The organisation's clusters.
    #[command(subcommand)]
    Clusters(ClustersCommand),
    /// The organisation's API tokens (an admin token).
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// The organisation's access graph: every cluster merged.
    Graph {
        /// Calls with either end in this cluster.
        #[arg(long)]
        cluster: Option<String>,
        /// Calls with either end in this namespace.
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// Calls with either end named so.
        #[arg(long)]
        workload: Option<String>,
        /// Calls seen since: RFC 3339 (2026-11-24T18:00:00Z) or a window back from now (30m, 24h, 7d).
        #[arg(long)]
        since: Option<String>,
        /// Mark each call new, seen or gone relative to this time (same forms as --since).
        #[arg(long)]
        changed_since: Option<String>,
        #[arg(short = 'o', long = "output", value_enum, default_value_t)]
        output: GraphFormat,
        /// Read the graph in requests of about this many calls each (the cloud answers each
        /// within its --graph-max-edges; the CLI puts the pages together).
        #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u32).range(1..))]
        page_size: u32,
    },
    /// A cluster's ClientIntents, as the cloud exports them.
    Export {
        /// The cluster's name or id.
        #[arg(long)]
        cluster: String,
        /// Only clients in this namespace.
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// Mark each target added or not seen since this time (YAML comments; a `changes` list in JSON).
        #[arg(long)]
        diff_since: Option<String>,
        #[arg(long, value_enum, default_value_t)]
        output_version: IntentsVersion,
        #[arg(long, value_enum, default_value_t)]
        format: IntentsFormat,
        /// A file, or a directory for one file per client workload (an existing directory, a
        /// path ending in `/`, or --output-type dir). Standard output if absent.
        #[arg(short = 'o', long = "output")]
        output: Option<PathBuf>,
        #[arg(long, value_enum)]
        output_type: Option<OutputType>,
    },
}

#[derive(Debug, Subcommand)]
enum ClustersCommand {
    /// List the clusters.
    List {
        #[arg(short = 'o', long = "output", value_enum, default_value_t)]
        output: ListFormat,
    },
    /// Register a cluster: prints its client ID and secret, once (a `write` token).
    Create {
        name: String,
        #[arg(short = 'o', long = "output", value_enum, default_value_t)]
        output: ObjectFormat,
    },
    /// Revoke a cluster's credentials: its tokens stop working at once (a `write` token).
    Revoke {
        /// The cluster's name or id.
        cluster: String,
        #[arg(short = 'o', long = "output", value_enum, default_value_t)]
        output: ObjectFormat,
    },
}

#[derive(Debug, Subcommand)]
enum TokensCommand {
    /// List the organisation's API tokens (never their secrets).
    List {
        #[arg(short = 'o', long = "output", value_enum, default_value_t)]
        output: ListFormat,
    },
    /// Create an API token: prints it, once.
    Create {
        name: String,
        /// Each includes the ones before it: read < write < admin (comma-separated or repeated).
        #[arg(long, value_enum, value_delimiter = ',', required = true)]
        scopes: Vec<Scope>,
        #[arg(short = 'o', long = "output", value_enum, default_value_t)]
        output: ObjectFormat,
    },
    /// Revoke an API token, by id or by the name of an unrevoked token.
    Revoke {
        token: String,
        #[arg(short = 'o', long = "output", value_enum, default_value_t)]
        output: ObjectFormat,
    },
}

#[derive(Debug, Deserialize)]
struct ClusterInfo {
    id: String,
    name: String,
    client_id: String,
    created_at: DateTime<Utc>,
    #[serde(default)]
    last_report_at: Option<DateTime<Utc>>,
    #[serde(default)]
    revoked_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Deserialize)]
struct TokenInfo {
    id: String,
    name: String,
    scopes: Vec<String>,
    created_at: DateTime<Utc>,
    #[serde(default)]
    revoked_at: Option<DateTime<Utc>>,
}

/// Runs `intentmap cloud ...`. `global_token` is `--token` / `INTENTMAP_TOKEN`, which the
/// mapper commands share: it is used here only when it is a cloud API token (`imt_...`).
pub async fn run(args: CloudArgs, global_token: Option<String>) -> anyhow::Result<()> {
    let config_path = config::path();
    let config = match &config_path {
        Ok(path) => Config::load(path)?,
        Err(_) => Config::default(),
    };
    let base = match (&args.cloud_url, &config.current) {
        (Some(url), _) => normalise_url(url, args.allow_insecure_cloud_url)?,
        (None, Some(current)) => normalise_url(current, args.allow_insecure_cloud_url)?,
        (None, None) => bail!(
            "which cloud? Give --cloud-url https://... (or INTENTMAP_CLOUD_URL); `intentmap cloud login --cloud-url URL` remembers it"
        ),
    };
    let ca = args.cloud_ca_file.as_ref();
    if let CloudCommand::Login = args.command {
        let path = config_path?;
        return login(base, ca, config, &path).await;
    }
    if let CloudCommand::Logout = args.command {
        let path = config_path?;
        return logout(&base, config, &path);
    }
    let token = pick_token(&base, &config, config_path.as_ref().ok(), global_token)?;
    let cloud = Cloud::new(base, Some(token), ca)?;
    match args.command {
        CloudCommand::Login | CloudCommand::Logout => Ok(()),
        CloudCommand::Whoami { output } => whoami(&cloud, output).await,
        CloudCommand::Clusters(c) => clusters(&cloud, c).await,
        CloudCommand::Tokens(t) => tokens(&cloud, t).await,
        CloudCommand::Graph {
            cluster,
            namespace,
            workload,
            since,
            changed_since,
            output,
            page_size,
        } => {
            let mut query = Vec::new();
            for (key, value) in [
                ("cluster", cluster),
                ("namespace", namespace),
                ("workload", workload),
                ("since", since),
                ("changed_since", changed_since),
            ] {
                if let Some(v) = value {
                    query.push((key, v));
                }
            }
            graph(&cloud, query, output, page_size).await
        }
        CloudCommand::Export {
            cluster,
            namespace,
            diff_since,
            output_version,
            format,
            output,
            output_type,
        } => {
            check_name("cluster", &cluster)?;
            let mut query = vec![
                (
                    "version",
                    match output_version {
                        IntentsVersion::V2beta1 => "v2beta1",
                        IntentsVersion::V1alpha3 => "v1alpha3",
                    }
                    .to_owned(),
                ),
                (
                    "format",
                    match format {
                        IntentsFormat::Yaml => "yaml",
                        IntentsFormat::Json => "json",
                    }
                    .to_owned(),
                ),
            ];
            if let Some(ns) = namespace {
                query.push(("namespace", ns));
            }
            let diff = diff_since.is_some();
            if let Some(t) = diff_since {
                query.push(("diff_since", t));
            }
            let dir = match (output_type, &output) {
                (Some(t), _) => t == OutputType::Dir,
                (None, Some(p)) => p.is_dir() || p.as_os_str().to_string_lossy().ends_with('/'),
                (None, None) => false,
            };
            let answer = cloud
                .call(
                    Method::GET,
                    &["api", "v1", "clusters", &cluster, "client-intents"],
                    &query,
                    None,
                    &Doing {
                        what: &format!("export the ClientIntents of cluster {}", clean(&cluster)),
                        not_found: "`intentmap cloud clusters list` lists the clusters.",
                        unprocessable: "Export one namespace at a time with --namespace.",
                        scope: "read",
                    },
                )
                .await?;
            let text = answer.text()?;
            match (dir, output) {
                (false, None) => print!("{text}"),
                (false, Some(path)) => {
                    std::fs::write(&path, &text)
                        .with_context(|| format!("writing {}", path.display()))?;
                    eprintln!("wrote {}", path.display());
                }
                (true, None) => bail!("--output-type dir needs -o DIRECTORY"),
                (true, Some(path)) => {
                    let files = match format {
                        IntentsFormat::Json if diff => bail!(
                            "one file per workload with --diff-since is YAML only (the comments go with each document): drop --format json, or write the JSON to one file"
                        ),
                        IntentsFormat::Json => split_json(&text)?,
                        IntentsFormat::Yaml => split_yaml(&text)?,
                    };
                    write_dir(&path, &files)?;
                    eprintln!("wrote {} files to {}", files.len(), path.display());
                }
            }
            Ok(())
        }
    }
}

/// The token for `base`: INTENTMAP_CLOUD_TOKEN, an `imt_` token in --token / INTENTMAP_TOKEN,
/// or the one `login` stored for this cloud.
fn pick_token(
    base: &str,
    config: &Config,
    path: Option<&PathBuf>,
    global_token: Option<String>,
) -> anyhow::Result<Token> {
    if let Some(t) = std::env::var("INTENTMAP_CLOUD_TOKEN").ok().filter(|t| !t.trim().is_empty()) {
        let secret = t.trim().to_owned();
        check_token(&secret).context("INTENTMAP_CLOUD_TOKEN")?;
        return Ok(Token { secret, source: TokenSource::CloudEnv });
    }
    let global = global_token.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty());
    if let Some(t) = global.as_ref().filter(|t| t.starts_with("imt_")) {
        check_token(t).context("INTENTMAP_TOKEN (or --token)")?;
        return Ok(Token { secret: t.clone(), source: TokenSource::Env });
    }
    if let (Some(login), Some(path)) = (config.clouds.get(base), path) {
        check_token(&login.token)
            .with_context(|| format!("the token stored in {}", path.display()))?;
        return Ok(Token { secret: login.token.clone(), source: TokenSource::Login(path.clone()) });
    }
    let ignored = if global.is_some() {
        " (INTENTMAP_TOKEN / --token is set, but holds no cloud API token: those start with imt_; that one is the mapper's)"
    } else {
        ""
    };
    let other = if config.clouds.is_empty() {
        String::new()
    } else {
        format!(
            "; logged in to: {}",
            config.clouds.keys().map(|k| clean(k)).collect::<Vec<_>>().join(", ")
        )
    };
    bail!(
        "no API token for {base}{ignored}: run `intentmap cloud login --cloud-url {base}` (it reads the token from standard input), or set INTENTMAP_CLOUD_TOKEN{other}"
    )
}

async fn whoami_of(cloud: &Cloud) -> anyhow::Result<Value> {
    cloud
        .call(
            Method::GET,
            &["api", "v1", "whoami"],
            &[],
            None,
            &Doing {
                what: "say who this token is",
                not_found: "The token's organisation no longer exists: ask the cloud's operator.",
                unprocessable: "",
                scope: "read",
            },
        )
        .await?
        .json(&cloud.base)
}

fn describe_whoami(who: &Value, base: &str) -> String {
    let scopes: Vec<&str> = who["token"]["scopes"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    clean(&format!(
        "organisation {} ({}), token {} ({}), scopes {}, cloud {base}",
        who["org_name"].as_str().unwrap_or("?"),
        who["org_id"].as_str().unwrap_or("?"),
        who["token"]["name"].as_str().unwrap_or("?"),
        who["token"]["id"].as_str().unwrap_or("?"),
        scopes.join(", ")
    ))
}

async fn login(
    base: String,
    ca: Option<&PathBuf>,
    mut config: Config,
    path: &Path,
) -> anyhow::Result<()> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("Paste an API token for {base} (imt_...; `cloud-api admin create-org` or `intentmap cloud tokens create` prints one) and press Enter: ");
    }
    let mut line = String::new();
    stdin
        .lock()
        .take(8192)
        .read_line(&mut line)
        .context("reading the token from standard input")?;
    let secret = line.trim().to_owned();
    if secret.is_empty() {
        bail!("no token on standard input: `intentmap cloud login < token.txt`, or paste it when asked");
    }
    check_token(&secret)?;
    let cloud = Cloud::new(
        base.clone(),
        Some(Token { secret: secret.clone(), source: TokenSource::Stdin }),
        ca,
    )?;
    let who = whoami_of(&cloud).await?;
    config.clouds.insert(
        base.clone(),
        Login {
            token: secret,
            org_name: who["org_name"].as_str().unwrap_or_default().to_owned(),
            token_name: who["token"]["name"].as_str().unwrap_or_default().to_owned(),
        },
    );
    config.current = Some(base.clone());
    config.save(path)?;
    eprintln!(
        "logged in: {}\nstored in {} (mode 0600)",
        describe_whoami(&who, &base),
        path.display()
    );
    Ok(())
}

fn logout(base: &str, mut config: Config, path: &Path) -> anyhow::Result<()> {
    if config.clouds.remove(base).is_none() {
        bail!("not logged in to {base}; nothing to forget");
    }
    if config.current.as_deref() == Some(base) {
        config.current = config.clouds.keys().next().cloned();
    }
    config.save(path)?;
    eprintln!(
        "forgot the token for {base}. It still works until revoked: `intentmap cloud tokens revoke ID` (an admin token)"
    );
    Ok(())
}

async fn whoami(cloud: &Cloud, output: ObjectFormat) -> anyhow::Result<()> {
    let who = whoami_of(cloud).await?;
    print_object(&who, output, || describe_whoami(&who, &cloud.base) + "\n")
}

fn print_object(
    value: &Value,
    output: ObjectFormat,
    text: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    match output {
        ObjectFormat::Text => print!("{}", text()),
        ObjectFormat::Json => print!("{}", output::json(value)?),
        ObjectFormat::Yaml => print!("{}", output::yaml(value)?),
    }
    Ok(())
}

fn print_list(
    value: &Value,
    output: ListFormat,
    table: &Table,
    names: &[String],
    empty: &str,
) -> anyhow::Result<()> {
    match output {
        ListFormat::Json => print!("{}", output::json(value)?),
        ListFormat::Yaml => print!("{}", output::yaml(value)?),
        ListFormat::Name => names.iter().for_each(|n| println!("{}", clean(n))),
        ListFormat::Table if table.is_empty() => eprintln!("{empty}"),
        ListFormat::Table => print!("{}", table.render()),
    }
    Ok(())
}

/// A name or id given on the command line, before it goes into a URL path.
fn check_name(what: &str, name: &str) -> anyhow::Result<()> {
    if name.is_empty() || name.len() > 253 || name == "." || name == ".." {
        bail!("{what} {:?} is not a name or id (1-253 characters)", clean(name));
    }
    Ok(())
}

fn status(revoked_at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    match revoked_at {
        Some(t) => format!("Revoked {} ago", age(t, now)),
        None => "Active".into(),
    }
}

async fn clusters(cloud: &Cloud, command: ClustersCommand) -> anyhow::Result<()> {
    let now = Utc::now();
    let listed = "`intentmap cloud clusters list` lists the clusters.";
    match command {
        ClustersCommand::List { output } => {
            let value: Value = cloud
                .call(
                    Method::GET,
                    &["api", "v1", "clusters"],
                    &[],
                    None,
                    &Doing {
                        what: "list the clusters",
                        not_found: "Is --cloud-url the cloud API's address?",
                        unprocessable: "",
                        scope: "read",
                    },
                )
                .await?
                .json(&cloud.base)?;
            let list: Vec<ClusterInfo> = serde_json::from_value(value.clone()).context(
                "the cloud's cluster list is not in the form this CLI knows; update the CLI",
            )?;
            let mut table =
                Table::new(&["NAME", "ID", "CLIENT ID", "STATUS", "LAST REPORT", "AGE"]);
            for c in &list {
                table.row(vec![
                    c.name.clone(),
                    c.id.clone(),
                    c.client_id.clone(),
                    status(c.revoked_at, now),
                    c.last_report_at
                        .map(|t| format!("{} ago", age(t, now)))
                        .unwrap_or_else(|| "never".into()),
                    age(c.created_at, now),
                ]);
            }
            let names: Vec<String> = list.iter().map(|c| c.name.clone()).collect();
            print_list(&value, output, &table, &names, "No clusters in this organisation; `intentmap cloud clusters create NAME` registers one.")
        }
        ClustersCommand::Create { name, output } => {
            let value: Value = cloud
                .call(
                    Method::POST,
                    &["api", "v1", "clusters"],
                    &[],
                    Some(&json!({ "name": name })),
                    &Doing { what: &format!("register cluster {}", clean(&name)), not_found: "Is --cloud-url the cloud API's address?", unprocessable: "Cluster names are Kubernetes-style names: lower-case letters, digits and '-'.", scope: "write" },
                )
                .await?
                .json(&cloud.base)?;
            print_object(&value, output, || {
                let s = |k: &str| clean(value[k].as_str().unwrap_or("?"));
                format!(
                    "cluster {} registered (id {})\nclient ID:     {}\nclient secret: {}\nThe secret is shown only now. Give both to the cluster's mapper: cluster-agent mapper --cloud-url {} --cloud-client-id ... --cloud-client-secret ...\n",
                    s("name"), s("cluster_id"), s("client_id"), s("client_secret"), cloud.base
                )
            })
        }
        ClustersCommand::Revoke { cluster, output } => {
            check_name("cluster", &cluster)?;
            let value: Value = cloud
                .call(
                    Method::POST,
                    &["api", "v1", "clusters", &cluster, "revoke"],
                    &[],
                    None,
                    &Doing {
                        what: &format!("revoke cluster {}", clean(&cluster)),
                        not_found: listed,
                        unprocessable: "",
                        scope: "write",
                    },
                )
                .await?
                .json(&cloud.base)?;
            print_object(&value, output, || {
                format!(
                    "cluster {} revoked: its credentials and tokens are refused from now on; its data stays\n",
                    clean(value["name"].as_str().unwrap_or(&cluster))
                )
            })
        }
    }
}

/// Looks like a token id (a UUID) rather than a name.
fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

async fn list_tokens(cloud: &Cloud) -> anyhow::Result<Value> {
    cloud
        .call(
            Method::GET,
            &["api", "v1", "tokens"],
            &[],
            None,
            &Doing {
                what: "list the API tokens",
                not_found: "Is --cloud-url the cloud API's address?",
                unprocessable: "",
                scope: "admin",
            },
        )
        .await?
        .json(&cloud.base)
}

async fn tokens(cloud: &Cloud, command: TokensCommand) -> anyhow::Result<()> {
    let now = Utc::now();
    match command {
        TokensCommand::List { output } => {
            let value = list_tokens(cloud).await?;
            let list: Vec<TokenInfo> = serde_json::from_value(value.clone()).context(
                "the cloud's token list is not in the form this CLI knows; update the CLI",
            )?;
            let mut table = Table::new(&["ID", "NAME", "SCOPES", "STATUS", "AGE"]);
            for t in &list {
                table.row(vec![
                    t.id.clone(),
                    t.name.clone(),
                    t.scopes.join(","),
                    status(t.revoked_at, now),
                    age(t.created_at, now),
                ]);
            }
            let names: Vec<String> = list.iter().map(|t| t.id.clone()).collect();
            print_list(&value, output, &table, &names, "No API tokens.")
        }
        TokensCommand::Create { name, scopes, output } => {
            let mut scopes = scopes;
            scopes.sort();
            scopes.dedup();
            let names: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
            let value: Value = cloud
                .call(
                    Method::POST,
                    &["api", "v1", "tokens"],
                    &[],
                    Some(&json!({ "name": name, "scopes": names })),
                    &Doing {
                        what: &format!("create API token {}", clean(&name)),
                        not_found: "Is --cloud-url the cloud API's address?",
                        unprocessable:
                            "A token name is 1-200 characters without control characters.",
                        scope: "admin",
                    },
                )
                .await?
                .json(&cloud.base)?;
            if output == ObjectFormat::Text {
                eprintln!(
                    "created API token {} (id {}, scopes {}); it is shown only now:",
                    clean(value["name"].as_str().unwrap_or("?")),
                    clean(value["id"].as_str().unwrap_or("?")),
                    names.join(", ")
                );
            }
            print_object(&value, output, || {
                format!("{}\n", clean(value["token"].as_str().unwrap_or("")))
            })
        }
        TokensCommand::Revoke { token, output } => {
            check_name("token", &token)?;
            let id = if is_uuid(&token) {
                token.clone()
            } else {
                let list: Vec<TokenInfo> = serde_json::from_value(list_tokens(cloud).await?)
                    .context(
                        "the cloud's token list is not in the form this CLI knows; update the CLI",
                    )?;
                let matching: Vec<&TokenInfo> =
                    list.iter().filter(|t| t.name == token && t.revoked_at.is_none()).collect();
                match matching.as_slice() {
                    [one] => one.id.clone(),
                    [] => bail!("no unrevoked API token named {:?}; `intentmap cloud tokens list` lists them", clean(&token)),
                    many => bail!(
                        "{} unrevoked API tokens are named {:?}; revoke one by id: {}",
                        many.len(),
                        clean(&token),
                        many.iter().map(|t| t.id.as_str()).collect::<Vec<_>>().join(", ")
                    ),
                }
            };
            let value: Value = cloud
                .call(
                    Method::POST,
                    &["api", "v1", "tokens", &id, "revoke"],
                    &[],
                    None,
                    &Doing {
                        what: &format!("revoke API token {}", clean(&token)),
                        not_found: "`intentmap cloud tokens list` lists the tokens.",
                        unprocessable: "",
                        scope: "admin",
                    },
                )
                .await?
                .json(&cloud.base)?;
            print_object(&value, output, || {
                format!(
                    "API token {} ({}) revoked: refused from its next request on\n",
                    clean(value["name"].as_str().unwrap_or("?")),
                    clean(value["id"].as_str().unwrap_or(&id))
                )
            })
        }
    }
}

/// Reads the graph page by page (so that no read is refused for its size) and prints it whole.
async fn graph(
    cloud: &Cloud,
    query: Vec<(&str, String)>,
    output: GraphFormat,
    page_size: u32,
) -> anyhow::Result<()> {
    if output == GraphFormat::Dot && query.iter().any(|(k, _)| *k == "changed_since") {
        bail!("--changed-since marks calls in the text, JSON and YAML outputs only; drop -o dot or --changed-since");
    }
    let mut pages = pages::Pages::default();
    let mut after: Option<String> = None;
    loop {
        let mut query = query.clone();
        query.push(("limit", page_size.to_string()));
        if let Some(after) = after.take() {
            query.push(("after", after));
        }
        let answer = cloud
            .call(
                Method::GET,
                &["api", "v1", "access-graph"],
                &query,
                None,
                &Doing {
                    what: "read the access graph",
                    not_found: "`intentmap cloud clusters list` lists the clusters (--cluster takes a name).",
                    unprocessable: "Read less at once: a smaller --page-size, a shorter window with --since (e.g. --since 24h), or one --namespace or --cluster.",
                    scope: "read",
                },
            )
            .await?;
        after = pages.add(answer.json::<Value>(&cloud.base)?)?;
        if after.is_none() {
            break;
        }
        if pages.count() % 20 == 0 && std::io::stderr().is_terminal() {
            eprintln!("read {} pages of the graph ...", pages.count());
        }
    }
    let value = pages.finish();
    match output {
        GraphFormat::Dot => print!("{}", access_graph(&value)?.to_dot()),
        GraphFormat::Json => print!("{}", output::json(&value)?),
        GraphFormat::Yaml => print!("{}", output::yaml(&value)?),
        GraphFormat::Text => print!("{}", graph_text(&value, Utc::now())?),
    }
    Ok(())
}

/// The cloud's graph JSON as the model's graph.
fn access_graph(value: &Value) -> anyhow::Result<model::AccessGraph> {
    serde_json::from_value(value.clone())
        .context("the cloud's access graph is not in the form this CLI knows; update the CLI")
}

/// The graph for people: one call a line (`CHANGE` first with --changed-since), then a summary.
pub fn graph_text(value: &Value, now: DateTime<Utc>) -> anyhow::Result<String> {
    let graph = access_graph(value)?;
    let nodes: std::collections::HashMap<&str, &model::GraphNode> =
        graph.nodes.iter().map(|n| (n.id.as_str(), n)).collect();
    let label = |id: &str| match nodes.get(id) {
        Some(n) => match (n.kind, &n.cluster, &n.namespace) {
            (model::NodeKind::Workload, Some(c), Some(ns)) => format!("{c}/{ns}/{}", n.name),
            (model::NodeKind::Service, Some(c), Some(ns)) => format!("service {c}/{ns}/{}", n.name),
            (model::NodeKind::Internet, ..) => format!("internet {}", n.name),
            (model::NodeKind::Aws, ..) => format!("aws {}", n.name),
            _ => n.id.clone(),
        },
        None => id.to_owned(),
    };
    let changes = value.get("changes").filter(|c| c.is_object());
    let mut header = vec!["SOURCE", "TARGET", "PORTS", "OBSERVED IN", "LAST SEEN", "CONNECTIONS"];
    if changes.is_some() {
        header.insert(0, "CHANGE");
    }
    let mut table = Table::new(&header);
    for (i, e) in graph.edges.iter().enumerate() {
        let mut ports: Vec<String> = e.ports.iter().map(|p| p.to_string()).collect();
        ports.extend(e.actions.iter().cloned());
        let mut row = vec![
            label(&e.source),
            label(&e.target),
            if ports.is_empty() { "-".into() } else { ports.join(",") },
            e.observed_in.clone(),
            format!("{} ago", age(e.last_seen, now)),
            e.connections.to_string(),
        ];
        if changes.is_some() {
            let change = value["edges"][i]["change"].as_str().unwrap_or("?").to_owned();
            row.insert(0, change);
        }
        table.row(row);
    }
    let mut out = if table.is_empty() { String::new() } else { table.render() };
    let workloads = graph.nodes.iter().filter(|n| n.kind == model::NodeKind::Workload).count();
    out.push_str(&format!(
        "{} calls between {} nodes ({} workloads) in {} clusters",
        graph.edges.len(),
        graph.nodes.len(),
        workloads,
        graph.clusters.len()
    ));
    if let Some(c) = changes {
        out.push_str(&clean(&format!(
            "; since {}: {} new, {} seen, {} gone",
            c["since"].as_str().unwrap_or("?"),
            c["new"],
            c["seen"],
            c["gone"]
        )));
    }
    out.push('\n');
    Ok(out)
}

/// One file name per document, from its client's name and namespace.
fn file_name(name: Option<&str>, namespace: Option<&str>, ext: &str) -> anyhow::Result<String> {
    let ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 253
            && !s.starts_with('.')
            && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    match (name, namespace) {
        (Some(n), Some(ns)) if ok(n) && ok(ns) => Ok(format!("{n}.{ns}.{ext}")),
        _ => bail!(
            "a ClientIntents document from the cloud has no usable metadata.name/namespace ({:?}, {:?}); write the export to one file instead",
            name.map(clean),
            namespace.map(clean)
        ),
    }
}

/// Multi-document YAML split at its `---` lines, each document with its comments.
pub fn split_yaml(text: &str) -> anyhow::Result<Vec<(String, String)>> {
    let mut docs: Vec<String> = Vec::new();
    for line in text.split_inclusive('\n') {
        if line.trim_end() == "---" || docs.is_empty() {
            docs.push(String::new());
        }
        if let Some(doc) = docs.last_mut() {
            doc.push_str(line);
        }
    }
    let mut files = Vec::new();
    for doc in docs {
        if doc
            .lines()
            .all(|l| l.trim().is_empty() || l.trim() == "---" || l.trim_start().starts_with('#'))
        {
            continue;
        }
        let value: serde_yaml::Value =
            serde_yaml::from_str(&doc).context("the cloud's export is not YAML")?;
        let meta = &value["metadata"];
        let name = file_name(meta["name"].as_str(), meta["namespace"].as_str(), "yaml")?;
        files.push((name, doc));
    }
    Ok(files)
}

/// A JSON array of documents, one array of one document per file (as `intentmap export` writes).
pub fn split_json(text: &str) -> anyhow::Result<Vec<(String, String)>> {
    let docs: Vec<Value> =
        serde_json::from_str(text).context("the cloud's JSON export is not a list of documents")?;
    docs.into_iter()
        .map(|doc| {
            let meta = &doc["metadata"];
            let name = file_name(meta["name"].as_str(), meta["namespace"].as_str(), "json")?;
            Ok((name, output::json(&Value::Array(vec![doc.clone()]))?))
        })
        .collect()
}

fn write_dir(dir: &Path, files: &[(String, String)]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut seen = std::collections::HashSet::new();
    for (name, text) in files {
        if !seen.insert(name) {
            bail!("two ClientIntents documents would both be written to {name}; write the export to one file instead");
        }
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_split_into_one_file_per_client_with_their_comments() {
        let yaml = "---\n# diff since 2026-12-01T00:00:00Z: 1 added, 0 not seen since, 0 unchanged\napiVersion: k8s.otterize.com/v2beta1\nkind: ClientIntents\nmetadata:\n  name: frontend\n  namespace: shop\nspec:\n  targets:\n  # added: first seen 2026-12-02T00:00:00Z\n  - kubernetes:\n      name: cart\n---\napiVersion: k8s.otterize.com/v2beta1\nkind: ClientIntents\nmetadata:\n  name: cart\n  namespace: shop\nspec: {}\n";
        let files = split_yaml(yaml).unwrap();
        assert_eq!(files.len(), 2);
        assert_eq!(files[0].0, "frontend.shop.yaml");
        assert!(files[0].1.starts_with("---\n# diff since") && files[0].1.contains("# added"));
        assert_eq!(files[1].0, "cart.shop.yaml");
        assert_eq!(files.iter().map(|f| f.1.as_str()).collect::<String>(), yaml, "nothing lost");
        assert!(split_yaml("").unwrap().is_empty());
        let hostile = "---\nmetadata:\n  name: ../../etc/passwd\n  namespace: x\n";
        assert!(split_yaml(hostile).is_err());
        let json = r#"[{"metadata": {"name": "a", "namespace": "b"}}]"#;
        assert_eq!(split_json(json).unwrap()[0].0, "a.b.json");
        assert!(is_uuid("0f8fad5b-d9cb-469f-a165-70867728950e") && !is_uuid("ci-deploys"));
    }
}
