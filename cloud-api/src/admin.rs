//! `cloud-api admin`: organisations, clusters, API tokens and keys, straight in the database.
//! With the schema owner's URL it applies pending migrations first; with the serving role's URL
//! (what a serving pod has) it works under row-level security like the API does.

use anyhow::Context;

use crate::cli::{AdminCommand, HashKeyArgs, Output};
use crate::http::api_tokens::{check_token_name, parse_scopes};
use crate::secrets;
use crate::store::{roles, ClusterName, Store, StoreError};
use crate::tokens::SigningKey;

async fn store(database_url: &str, keys: &HashKeyArgs) -> anyhow::Result<Store> {
    if roles::may_migrate(database_url)
        .await
        .context("connecting to PostgreSQL (check --database-url / DATABASE_URL)")?
    {
        crate::migrate(database_url).await?;
    }
    Store::connect_with_keys(database_url, 2, keys.keys()?).await.context(
        "connecting to PostgreSQL (check --database-url / DATABASE_URL; run `cloud-api migrate`)",
    )
}

pub async fn run(cmd: AdminCommand) -> anyhow::Result<()> {
    match cmd {
        AdminCommand::CreateOrg { name, database_url, keys, output } => {
            let org = store(&database_url, &keys).await?.create_org(&name).await?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&org)?),
                Output::Text => println!(
                    "organisation {} ({})\nAPI token, scope admin (shown once): {}",
                    org.name, org.org_id, org.api_token
                ),
            }
        }
        AdminCommand::CreateCluster { org, name, database_url, keys, output } => {
            let name = ClusterName::new(name)?;
            let store = store(&database_url, &keys).await?;
            anyhow::ensure!(
                store.org_exists(org).await?,
                "no organisation {org}; create one with `cloud-api admin create-org NAME`"
            );
            let creds = store.create_cluster(org, &name).await.map_err(|e| match e {
                StoreError::NameTaken { .. } => {
                    anyhow::anyhow!(
                        "a cluster named {:?} already exists in organisation {org}",
                        name.as_str()
                    )
                }
                StoreError::ClusterGone => anyhow::anyhow!(
                    "organisation {org} was deleted meanwhile; create one with `cloud-api admin create-org NAME`"
                ),
                other => anyhow::Error::new(other).context("storing the cluster"),
            })?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&creds)?),
                Output::Text => println!(
                    "cluster {} ({})\nclient ID: {}\nclient secret (shown once): {}",
                    creds.name, creds.cluster_id, creds.client_id, creds.client_secret
                ),
            }
        }
        AdminCommand::CreateToken { org, name, scopes, database_url, keys, output } => {
            check_token_name(&name).map_err(anyhow::Error::msg)?;
            let scopes = parse_scopes(&scopes).map_err(anyhow::Error::msg)?;
            let store = store(&database_url, &keys).await?;
            anyhow::ensure!(
                store.org_exists(org).await?,
                "no organisation {org}; create one with `cloud-api admin create-org NAME`"
            );
            let token = store.create_api_token(org, &name, &scopes).await?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&token)?),
                Output::Text => {
                    let names: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
                    println!(
                        "API token {} ({}), scopes {}\ntoken (shown once): {}",
                        token.info.name,
                        token.info.id,
                        names.join(", "),
                        token.token
                    )
                }
            }
        }
        AdminCommand::GenerateJwtKey => print!("{}", SigningKey::generate().to_pem()),
        AdminCommand::GenerateTokenHashKey => print!("{}", secrets::generate_key_file()),
    }
    Ok(())
}
