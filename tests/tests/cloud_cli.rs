//! `intentmap cloud` as a user runs it: the real `intentmap` binary against the real
//! `cloud-api` binary and PostgreSQL. Log in with the token `cloud-api admin create-org`
//! printed, register a cluster, make and revoke API tokens, let the cluster upload a report, and
//! read the graph and ClientIntents through the CLI: what it prints is what the API serves.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use chrono::{Duration, Utc};
use serde_json::{json, Value};
use tests::{
    admin, binary, cluster_jwt, fresh_db, post_report, request_cluster_token, start_cloud,
    start_cloud_with,
};

/// Runs `intentmap cloud <args>` with its own config directory and no token in the environment
/// unless `env` gives one; `stdin` is written to it.
fn cloud(home: &Path, args: &[&str], env: &[(&str, &str)], stdin: &str) -> Output {
    let mut cmd = Command::new(binary("intentmap"));
    cmd.arg("cloud")
        .args(args)
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("HOME", home)
        .env_remove("INTENTMAP_TOKEN")
        .env_remove("INTENTMAP_TOKEN_FILE")
        .env_remove("INTENTMAP_CLOUD_TOKEN")
        .env_remove("INTENTMAP_CLOUD_URL")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("intentmap runs (cargo build -p intentmap)");
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The command failed, and its error (standard error) is returned.
fn fails(out: Output, what: &str) -> String {
    assert!(
        !out.status.success(),
        "{what} should fail\nstdout:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr).unwrap()
}

struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    async fn get(&self, path: &str, query: &[(&str, &str)]) -> String {
        let res = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .query(query)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 200, "GET {path} {query:?}");
        res.text().await.unwrap()
    }

    async fn json(&self, path: &str, query: &[(&str, &str)]) -> Value {
        serde_json::from_str(&self.get(path, query).await).unwrap()
    }
}

#[tokio::test]
async fn a_user_runs_the_cloud_from_the_cli() {
    let db = fresh_db("e2e_cloud_cli").await;
    let org = admin(&db, &["create-org", "acme"]);
    let admin_token = org["api_token"].as_str().unwrap().to_owned();
    let other = admin(&db, &["create-org", "globex"]);
    let theirs =
        admin(&db, &["create-cluster", "--org", other["org_id"].as_str().unwrap(), "globex-prod"]);
    let (_server, url) = start_cloud(&db).await;
    let api = Api { http: reqwest::Client::new(), base: url.clone(), token: admin_token.clone() };

    let home: PathBuf =
        std::env::temp_dir().join(format!("e2e-cloud-cli-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&home).unwrap();
    let login_file = home.join("config/intentmap/cloud.json");

    // Before logging in, every command says how to.
    let err = fails(cloud(&home, &["clusters", "list", "--cloud-url", &url], &[], ""), "no login");
    assert!(err.contains("intentmap cloud login"), "{err}");
    let err = fails(cloud(&home, &["clusters", "list"], &[], ""), "no cloud");
    assert!(err.contains("--cloud-url"), "{err}");
    // The token never crosses the network in the clear.
    let err = fails(
        cloud(
            &home,
            &["clusters", "list", "--cloud-url", "http://cloud.example.com"],
            &[("INTENTMAP_CLOUD_TOKEN", &admin_token)],
            "",
        ),
        "plain http",
    );
    assert!(err.contains("--allow-insecure-cloud-url"), "{err}");

    // A wrong token is refused at login and nothing is stored.
    let wrong = format!("imt_{}_{}", uuid::Uuid::new_v4().simple(), "00".repeat(32));
    let err = fails(cloud(&home, &["login", "--cloud-url", &url], &[], &wrong), "wrong login");
    assert!(err.contains("401") && err.contains("does not accept this API token"), "{err}");
    assert!(!login_file.exists());
    let err =
        fails(cloud(&home, &["login", "--cloud-url", &url], &[], "eyJhbGciOi.x.y\n"), "a JWT");
    assert!(err.contains("imt_"), "{err}");

    // Login stores the token, 0600, and remembers the cloud.
    let out = cloud(&home, &["login", "--cloud-url", &url], &[], &format!("{admin_token}\n"));
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    ok(out, "login");
    assert!(said.contains("organisation acme") && said.contains("admin"), "{said}");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&login_file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the login file is the user's alone");
    }
    assert!(std::fs::read_to_string(&login_file).unwrap().contains(&admin_token));
    let who: Value =
        serde_json::from_str(&ok(cloud(&home, &["whoami", "-o", "json"], &[], ""), "whoami"))
            .unwrap();
    assert_eq!(who["org_name"], "acme");

    // Clusters: create, a taken name, list in every format.
    let creds: Value = serde_json::from_str(&ok(
        cloud(&home, &["clusters", "create", "prod", "-o", "json"], &[], ""),
        "create",
    ))
    .unwrap();
    assert!(creds["client_secret"].as_str().is_some_and(|s| !s.is_empty()));
    let text = ok(cloud(&home, &["clusters", "create", "staging"], &[], ""), "create text");
    assert!(text.contains("client secret:") && text.contains("--cloud-client-id"), "{text}");
    let err = fails(cloud(&home, &["clusters", "create", "prod"], &[], ""), "taken");
    assert!(err.contains("409") && err.contains("Choose another name"), "{err}");
    let err = fails(cloud(&home, &["clusters", "create", "Not A Name"], &[], ""), "bad name");
    assert!(err.contains("422"), "{err}");

    let table = ok(cloud(&home, &["clusters", "list"], &[], ""), "list");
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("NAME ") && lines[0].contains("CLIENT ID"), "{table}");
    let prod = lines.iter().find(|l| l.starts_with("prod ")).expect("prod is listed");
    assert!(
        prod.contains(creds["client_id"].as_str().unwrap())
            && prod.contains("Active")
            && prod.contains("never"),
        "{table}"
    );
    let column = lines[0].find("CLIENT ID").unwrap();
    assert!(lines.iter().skip(1).all(|l| l[column..].starts_with("cl")), "columns align:\n{table}");
    assert!(!table.contains("globex"), "another organisation's clusters are not listed");
    let listed: Value = serde_json::from_str(&ok(
        cloud(&home, &["clusters", "list", "-o", "json"], &[], ""),
        "json",
    ))
    .unwrap();
    assert_eq!(listed, api.json("/api/v1/clusters", &[]).await);
    let yaml: Value = serde_yaml::from_str(&ok(
        cloud(&home, &["clusters", "list", "-o", "yaml"], &[], ""),
        "yaml",
    ))
    .unwrap();
    assert_eq!(yaml, listed);
    assert_eq!(
        ok(cloud(&home, &["clusters", "list", "-o", "name"], &[], ""), "name"),
        "prod\nstaging\n"
    );

    // API tokens: create one with `read`, list it; it may read but not write.
    let out = cloud(&home, &["tokens", "create", "ci", "--scopes", "read"], &[], "");
    let ci_token = ok(out, "token create").trim().to_owned();
    assert!(ci_token.starts_with("imt_"), "{ci_token}");
    let tokens = ok(cloud(&home, &["tokens", "list"], &[], ""), "tokens list");
    let ci_line = tokens.lines().find(|l| l.contains(" ci ")).expect("ci is listed");
    assert!(ci_line.contains(" read ") && ci_line.contains("Active"), "{tokens}");
    assert!(!tokens.contains(&ci_token), "a list never shows a secret");
    let listed: Value =
        serde_json::from_str(&ok(cloud(&home, &["tokens", "list", "-o", "json"], &[], ""), "json"))
            .unwrap();
    assert_eq!(listed, api.json("/api/v1/tokens", &[]).await);
    let as_ci = [("INTENTMAP_CLOUD_TOKEN", ci_token.as_str())];
    ok(cloud(&home, &["clusters", "list"], &as_ci, ""), "ci reads");
    let err = fails(cloud(&home, &["clusters", "create", "x"], &as_ci, ""), "ci writes");
    assert!(
        err.contains("403") && err.contains("`write` scope") && err.contains("tokens create"),
        "{err}"
    );
    // The mapper's INTENTMAP_TOKEN (not a cloud token) is never sent; an imt_ one is used.
    let err = fails(
        cloud(
            &home,
            &["clusters", "list", "--cloud-url", "http://127.0.0.1:9"],
            &[("INTENTMAP_TOKEN", "eyJhbGciOi.x.y")],
            "",
        ),
        "mapper token",
    );
    assert!(err.contains("that one is the mapper's"), "{err}");
    let err = fails(
        cloud(&home, &["clusters", "create", "y"], &[("INTENTMAP_TOKEN", ci_token.as_str())], ""),
        "imt_ in INTENTMAP_TOKEN",
    );
    assert!(err.contains("403"), "INTENTMAP_TOKEN's cloud token is used: {err}");

    // The cluster uploads a report as a mapper would.
    let jwt = cluster_jwt(&api.http, &url, &creds).await;
    let now = Utc::now();
    let report = json!({"schema_version": 1, "report_id": uuid::Uuid::new_v4(), "generated_at": now,
        "edges": [
            {"client": {"namespace": "shop", "name": "frontend", "kind": "Deployment"},
             "target": {"kubernetes": {"namespace": "shop", "name": "cartservice", "kind": "Deployment"}},
             "ports": [{"port": 7070, "protocol": "TCP"}], "first_seen": now - Duration::minutes(10), "last_seen": now, "connections": 12},
            {"client": {"namespace": "shop", "name": "frontend", "kind": "Deployment"},
             "target": {"internet": {"domains": ["api.stripe.example"], "ports": [443]}},
             "first_seen": now - Duration::days(3), "last_seen": now - Duration::days(2), "connections": 1},
            {"client": {"namespace": "billing", "name": "ledger", "kind": "Deployment"},
             "target": {"kubernetes": {"namespace": "billing", "name": "postgres", "kind": "StatefulSet"}},
             "ports": [{"port": 5432, "protocol": "TCP"}], "first_seen": now - Duration::days(3), "last_seen": now, "connections": 3}]});
    assert_eq!(post_report(&api.http, &url, &jwt, &report).await.0, 202);

    // The graph, as the API serves it.
    let graph: Value =
        serde_json::from_str(&ok(cloud(&home, &["graph", "-o", "json"], &[], ""), "graph json"))
            .unwrap();
    assert_eq!(graph, api.json("/api/v1/access-graph", &[]).await);
    assert_eq!(graph["edges"].as_array().unwrap().len(), 3);
    let dot = ok(cloud(&home, &["graph", "-o", "dot"], &[], ""), "graph dot");
    assert_eq!(dot, api.get("/api/v1/access-graph", &[("format", "dot")]).await);
    assert!(dot.starts_with("digraph"));
    let narrowed: Value = serde_json::from_str(&ok(
        cloud(&home, &["graph", "--namespace", "shop", "--since", "1d", "-o", "json"], &[], ""),
        "graph narrowed",
    ))
    .unwrap();
    assert_eq!(
        narrowed,
        api.json("/api/v1/access-graph", &[("namespace", "shop"), ("since", "1d")]).await
    );
    assert_eq!(narrowed["edges"].as_array().unwrap().len(), 1, "only shop's call of the last day");
    // Read one call a page (frontend's two calls come as one page: pages hold whole clients),
    // the CLI puts together the graph one unpaged read returns.
    let paged: Value = serde_json::from_str(&ok(
        cloud(&home, &["graph", "--page-size", "1", "-o", "json"], &[], ""),
        "graph in pages",
    ))
    .unwrap();
    assert_eq!(paged, graph);
    let paged_dot = ok(cloud(&home, &["graph", "--page-size", "1", "-o", "dot"], &[], ""), "dot");
    assert_eq!(paged_dot, dot);
    let page = api.json("/api/v1/access-graph", &[("limit", "1")]).await;
    assert_eq!(page["edges"].as_array().unwrap().len(), 1, "billing's one call: {page}");
    assert!(page["next"].is_string(), "{page}");
    let err = fails(cloud(&home, &["graph", "--page-size", "0"], &[], ""), "page size 0");
    assert!(err.contains("page-size"), "{err}");
    let text = ok(cloud(&home, &["graph"], &[], ""), "graph text");
    let cart = text
        .lines()
        .find(|l| l.contains("prod/shop/cartservice"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        cart.starts_with("prod/shop/frontend") && cart.contains("7070/TCP") && cart.contains(" 12"),
        "{text}"
    );
    assert!(text.contains("internet api.stripe.example"), "{text}");
    assert!(text.ends_with("3 calls between 5 nodes (4 workloads) in 2 clusters\n"), "{text}");
    let changed = ok(cloud(&home, &["graph", "--changed-since", "1h"], &[], ""), "changes");
    assert!(changed.starts_with("CHANGE "), "{changed}");
    let line = |needle: &str| changed.lines().find(|l| l.contains(needle)).unwrap().to_owned();
    assert!(line("cartservice").starts_with("new "), "{changed}");
    assert!(line("stripe").starts_with("gone "), "{changed}");
    assert!(line("postgres").starts_with("seen "), "{changed}");
    assert!(changed.contains("1 new, 1 seen, 1 gone"), "{changed}");
    let paged = ok(
        cloud(&home, &["graph", "--changed-since", "1h", "--page-size", "1"], &[], ""),
        "changes in pages",
    );
    let without_ages =
        |t: &str| t.lines().map(|l| l.split_whitespace().count()).collect::<Vec<_>>();
    assert_eq!(without_ages(&paged), without_ages(&changed), "{paged}");
    assert!(paged.contains("1 new, 1 seen, 1 gone"), "{paged}");
    let err = fails(
        cloud(&home, &["graph", "--changed-since", "1h", "-o", "dot"], &[], ""),
        "dot with changes",
    );
    assert!(err.contains("-o dot"), "{err}");
    let err = fails(cloud(&home, &["graph", "--since", "yesterday"], &[], ""), "bad since");
    assert!(err.contains("400") && err.contains("since"), "{err}");
    let err = fails(cloud(&home, &["graph", "--cluster", "nope"], &[], ""), "no cluster");
    assert!(err.contains("404") && err.contains("intentmap cloud clusters list"), "{err}");

    // ClientIntents, as the API serves them: stdout, a file, a directory with diff comments.
    let yaml = ok(cloud(&home, &["export", "--cluster", "prod"], &[], ""), "export");
    assert_eq!(yaml, api.get("/api/v1/clusters/prod/client-intents", &[]).await);
    assert!(yaml.contains("kind: ClientIntents"));
    let file = home.join("intents.json");
    ok(
        cloud(
            &home,
            &[
                "export",
                "--cluster",
                "prod",
                "--output-version",
                "v1alpha3",
                "--format",
                "json",
                "-o",
                file.to_str().unwrap(),
            ],
            &[],
            "",
        ),
        "export json",
    );
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        api.get(
            "/api/v1/clusters/prod/client-intents",
            &[("version", "v1alpha3"), ("format", "json")]
        )
        .await
    );
    let dir = home.join("intents");
    // A fixed moment: `1h` would be a different moment for the CLI's request and the test's.
    let hour_ago = (now - Duration::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    ok(
        cloud(
            &home,
            &[
                "export",
                "--cluster",
                "prod",
                "--diff-since",
                &hour_ago,
                "-o",
                &format!("{}/", dir.display()),
            ],
            &[],
            "",
        ),
        "export dir",
    );
    let frontend = std::fs::read_to_string(dir.join("frontend.shop.yaml")).unwrap();
    let ledger = std::fs::read_to_string(dir.join("ledger.billing.yaml")).unwrap();
    assert!(
        frontend.contains("# diff since") && frontend.contains("# added: first seen"),
        "{frontend}"
    );
    assert!(frontend.contains("# not seen since"), "{frontend}");
    let served =
        api.get("/api/v1/clusters/prod/client-intents", &[("diff_since", hour_ago.as_str())]).await;
    assert!(served.contains(&frontend) && served.contains(&ledger));
    assert_eq!(served.len(), frontend.len() + ledger.len(), "the two files are the whole export");
    let err = fails(
        cloud(&home, &["export", "--cluster", theirs["cluster_id"].as_str().unwrap()], &[], ""),
        "theirs",
    );
    assert!(
        err.contains("404") && err.contains("clusters list"),
        "another organisation's cluster is not found: {err}"
    );

    // A read past the cloud's edge limit says how to narrow it.
    let (_small, small_url) = start_cloud_with(&db, &["--graph-max-edges", "1"]).await;
    let err = fails(
        cloud(
            &home,
            &["graph", "--cloud-url", &small_url],
            &[("INTENTMAP_CLOUD_TOKEN", &admin_token)],
            "",
        ),
        "too many",
    );
    assert!(err.contains("422") && err.contains("--since"), "{err}");

    // Revoking: the ci token (by name) is refused from then on, saying what to do.
    let out = ok(cloud(&home, &["tokens", "revoke", "ci"], &[], ""), "revoke ci");
    assert!(out.contains("revoked"), "{out}");
    let tokens = ok(cloud(&home, &["tokens", "list"], &[], ""), "tokens list");
    assert!(tokens.lines().find(|l| l.contains(" ci ")).unwrap().contains("Revoked"), "{tokens}");
    let err = fails(cloud(&home, &["graph"], &as_ci, ""), "revoked ci");
    assert!(
        err.contains("401")
            && err.contains("INTENTMAP_CLOUD_TOKEN")
            && err.contains("does not accept"),
        "{err}"
    );
    let err = fails(cloud(&home, &["tokens", "revoke", "ci"], &[], ""), "revoked twice by name");
    assert!(err.contains("no unrevoked API token named"), "{err}");

    // Revoking the cluster: its credentials are refused.
    let out = ok(cloud(&home, &["clusters", "revoke", "prod"], &[], ""), "revoke prod");
    assert!(out.contains("cluster prod revoked"), "{out}");
    let table = ok(cloud(&home, &["clusters", "list"], &[], ""), "list");
    assert!(table.lines().find(|l| l.starts_with("prod ")).unwrap().contains("Revoked"), "{table}");
    let refused = request_cluster_token(&api.http, &url, &creds).await;
    assert_eq!(refused.status().as_u16(), 401);

    // The stored token revoked: the next command says to log in again.
    let id = who["token"]["id"].as_str().unwrap();
    ok(cloud(&home, &["tokens", "revoke", id], &[], ""), "revoke own");
    let err = fails(cloud(&home, &["clusters", "list"], &[], ""), "stored token revoked");
    assert!(err.contains("401") && err.contains("run `intentmap cloud login`"), "{err}");

    // Logout forgets it.
    ok(cloud(&home, &["logout", "--cloud-url", &url], &[], ""), "logout");
    assert!(!std::fs::read_to_string(&login_file).unwrap().contains(&admin_token));
    let err =
        fails(cloud(&home, &["clusters", "list", "--cloud-url", &url], &[], ""), "after logout");
    assert!(err.contains("intentmap cloud login"), "{err}");
    std::fs::remove_dir_all(&home).unwrap();
}
