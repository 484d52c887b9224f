//! The query data in `cloud-api/.sqlx/`, from which `sqlx::query!` checks the store's SQL at
//! build time, must describe today's queries against today's schema. When a test here fails,
//! regenerate the data with `bash scripts/sqlx-prepare.sh` and commit `cloud-api/.sqlx/`.
//!
//! - every file is a query of the sources, named by the SHA-256 of its SQL as sqlx names it,
//!   and every query macro of the sources has its file;
//! - what PostgreSQL says of each query on a freshly migrated database (its columns, their
//!   types and nullability, its parameters' types) is what the file says.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::{Column, Connection, Executor, PgConnection};

const REGENERATE: &str =
    "regenerate it with `bash scripts/sqlx-prepare.sh` and commit cloud-api/.sqlx/";

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// One `.sqlx/query-<hash>.json`.
struct QueryFile {
    path: PathBuf,
    query: String,
    describe: Value,
}

fn query_files() -> Vec<QueryFile> {
    let dir = manifest_dir().join(".sqlx");
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}; {REGENERATE}", dir.display()));
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        if !(name.starts_with("query-") && name.ends_with(".json")) {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("a readable query file");
        let json: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{name} is not JSON ({e}); {REGENERATE}"));
        assert_eq!(json["db_name"], "PostgreSQL", "{name}: not PostgreSQL data; {REGENERATE}");
        let query = json["query"].as_str().expect("a query text").to_owned();
        let hash = sha256_hex(&query);
        assert_eq!(
            json["hash"],
            hash.as_str(),
            "{name}: the hash is not its query's; {REGENERATE}"
        );
        assert_eq!(
            name,
            format!("query-{hash}.json"),
            "{name}: named for another query; {REGENERATE}"
        );
        files.push(QueryFile { path, query, describe: json["describe"].clone() });
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    files
}

/// What sqlx names a query's data file after.
fn sha256_hex(query: &str) -> String {
    Sha256::digest(query.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("a readable source directory") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The SQL of every `sqlx::query!`, `query_as!` and `query_scalar!` in `src/`, with where it is.
fn macro_queries() -> BTreeMap<String, String> {
    let mut files = Vec::new();
    rust_files(&manifest_dir().join("src"), &mut files);
    let mut found = BTreeMap::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("a readable source file");
        for (macro_name, skip_type) in
            [("sqlx::query!(", false), ("sqlx::query_as!(", true), ("sqlx::query_scalar!(", false)]
        {
            for (at, _) in text.match_indices(macro_name) {
                let mut rest = &text[at + macro_name.len()..];
                if skip_type {
                    rest = &rest[rest.find(',').expect("query_as!(Type, ...)") + 1..];
                }
                let line = text[..at].lines().count() + 1;
                let sql = string_literal(rest.trim_start()).unwrap_or_else(|| {
                    panic!("{}:{line}: the SQL of {macro_name}...) is not a string literal this test reads", file.display())
                });
                found.insert(sql, format!("{}:{line}", file.display()));
            }
        }
    }
    found
}

/// The value of the Rust string literal `s` starts with: `"..."` (with escapes) or `r#"..."#`.
fn string_literal(s: &str) -> Option<String> {
    if let Some(raw) = s.strip_prefix('r') {
        let hashes = raw.len() - raw.trim_start_matches('#').len();
        let body = raw[hashes..].strip_prefix('"')?;
        let end = format!("\"{}", "#".repeat(hashes));
        return Some(body[..body.find(&end)?].to_owned());
    }
    let mut chars = s.strip_prefix('"')?.chars().peekable();
    let mut out = String::new();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                'r' => out.push('\r'),
                't' => out.push('\t'),
                '0' => out.push('\0'),
                '\\' => out.push('\\'),
                '\'' => out.push('\''),
                '"' => out.push('"'),
                // A line continuation: the newline and the next line's leading whitespace go.
                '\n' => {
                    while chars.peek().is_some_and(|c| c.is_whitespace()) {
                        chars.next();
                    }
                }
                _ => return None,
            },
            c => out.push(c),
        }
    }
    None
}

#[test]
fn query_files_are_the_queries_of_the_sources_else_run_scripts_sqlx_prepare_sh() {
    let files = query_files();
    let sources = macro_queries();
    assert!(
        !sources.is_empty(),
        "no query macros found in cloud-api/src: is this test looking right?"
    );
    let mut problems = Vec::new();
    for file in &files {
        if !sources.contains_key(&file.query) {
            problems
                .push(format!("{} is for a query no longer in cloud-api/src", file.path.display()));
        }
    }
    for (sql, at) in &sources {
        let path = manifest_dir().join(".sqlx").join(format!("query-{}.json", sha256_hex(sql)));
        if !path.exists() {
            problems.push(format!("the query at {at} has no {}", path.display()));
        }
    }
    assert!(
        problems.is_empty(),
        "cloud-api/.sqlx is stale; {REGENERATE}:\n{}",
        problems.join("\n")
    );
}

/// A type as the query files write it: `"Uuid"`, `"TextArray"`, ...
fn type_name(t: &sqlx::postgres::PgTypeInfo) -> String {
    // `PgTypeInfo(Uuid)`: the variant, which is also what the files serialise.
    let debug = format!("{t:?}");
    debug.strip_prefix("PgTypeInfo(").and_then(|s| s.strip_suffix(')')).unwrap_or(&debug).to_owned()
}

fn file_type_name(v: &Value) -> String {
    v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string())
}

/// `describe` as the query files write it, from what PostgreSQL says now.
fn describe_now(d: &sqlx::Describe<sqlx::Postgres>) -> Value {
    let columns: Vec<Value> = d
        .columns()
        .iter()
        .map(|c| serde_json::json!({"ordinal": c.ordinal(), "name": c.name(), "type_info": type_name(c.type_info())}))
        .collect();
    let nullable: Vec<Option<bool>> = (0..d.columns().len()).map(|i| d.nullable(i)).collect();
    let parameters = match d.parameters() {
        Some(sqlx::Either::Left(types)) => {
            serde_json::json!({"Left": types.iter().map(type_name).collect::<Vec<_>>()})
        }
        Some(sqlx::Either::Right(n)) => serde_json::json!({"Right": n}),
        None => Value::Null,
    };
    serde_json::json!({"columns": columns, "parameters": parameters, "nullable": nullable})
}

/// The file's `describe` with its types as names, to compare with [`describe_now`].
fn describe_in_file(d: &Value) -> Value {
    let columns: Vec<Value> = d["columns"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| serde_json::json!({"ordinal": c["ordinal"], "name": c["name"], "type_info": file_type_name(&c["type_info"])}))
        .collect();
    let parameters = match d["parameters"].get("Left") {
        Some(types) => serde_json::json!({
            "Left": types.as_array().into_iter().flatten().map(file_type_name).collect::<Vec<_>>()
        }),
        None => d["parameters"].clone(),
    };
    serde_json::json!({"columns": columns, "parameters": parameters, "nullable": d["nullable"]})
}

#[tokio::test]
async fn query_files_describe_the_migrated_schema_else_run_scripts_sqlx_prepare_sh() {
    let server =
        testkit::pg::server().await.expect("PostgreSQL for tests (run scripts/ensure-postgres.sh)");
    let url = server.fresh_database("sqlxoffline").await.expect("a fresh test database");
    cloud_api::migrate(&url).await.expect("migrations apply");
    let mut conn = PgConnection::connect(&url).await.expect("connect to the test database");
    let mut problems = Vec::new();
    for file in query_files() {
        let now = match (&mut conn).describe(&file.query).await {
            Ok(d) => describe_now(&d),
            Err(e) => {
                problems.push(format!(
                    "{}: PostgreSQL refuses the query now: {e}",
                    file.path.display()
                ));
                continue;
            }
        };
        let then = describe_in_file(&file.describe);
        if now != then {
            problems.push(format!(
                "{}: the file says\n  {then}\nPostgreSQL says now\n  {now}",
                file.path.display()
            ));
        }
    }
    let _ = conn.close().await;
    assert!(
        problems.is_empty(),
        "cloud-api/.sqlx is stale; {REGENERATE}:\n{}",
        problems.join("\n")
    );
}
