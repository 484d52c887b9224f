//! Organisations, clusters and API tokens. Secrets are stored only as keyed hashes; the look-ups
//! that run before the organisation is known go through SECURITY DEFINER functions owned by
//! `intentmap_auth`, which return only what authentication needs.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgTypeInfo, PgValueRef};
use sqlx::{PgConnection, PgPool, Postgres};
use uuid::Uuid;

use super::audit::{self, Action, Actor};
use super::{ClusterCredentials, ClusterInfo, ClusterName, NewOrg, Store, StoreError};
use crate::secrets::{self, HashKey, Purpose, SecretHasher};
use crate::tokens::{self, Scope};

/// The hasher for this database: the configured keys first, then the key the migrations stored.
pub(super) async fn load_hasher(
    pool: &PgPool,
    mut keys: Vec<HashKey>,
) -> Result<SecretHasher, sqlx::Error> {
    let stored = sqlx::query_scalar!("SELECT key FROM token_hash_key").fetch_optional(pool).await?;
    if let Some(bytes) = stored {
        let key = HashKey::new(&bytes).map_err(|e| sqlx::Error::Decode(e.into()))?;
        if !keys.iter().any(|k| k.kid() == key.kid()) {
            keys.push(key);
        }
    }
    SecretHasher::new(keys).map_err(|e| sqlx::Error::Configuration(e.into()))
}

/// An API token as listed: never its secret.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ApiTokenInfo {
    pub id: Uuid,
    pub name: String,
    #[schema(value_type = Vec<crate::tokens::Scope>)]
    pub scopes: Scopes,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A token's scopes as stored (`text[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Scopes(pub Vec<Scope>);

impl TryFrom<Vec<String>> for Scopes {
    type Error = String;

    fn try_from(stored: Vec<String>) -> Result<Self, String> {
        stored
            .iter()
            .map(|s| Scope::parse(s).ok_or_else(|| format!("unknown scope {s:?} stored")))
            .collect::<Result<_, _>>()
            .map(Scopes)
    }
}

/// Stored as `text[]`; an unknown scope fails to decode.
impl sqlx::Type<Postgres> for Scopes {
    fn type_info() -> PgTypeInfo {
        <Vec<String> as sqlx::Type<Postgres>>::type_info()
    }

    fn compatible(ty: &PgTypeInfo) -> bool {
        <Vec<String> as sqlx::Type<Postgres>>::compatible(ty)
    }
}

impl<'r> sqlx::Decode<'r, Postgres> for Scopes {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        let names = <Vec<String> as sqlx::Decode<'r, Postgres>>::decode(value)?;
        Ok(Scopes::try_from(names)?)
    }
}

/// A new API token: shown once.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct NewApiToken {
    #[serde(flatten)]
    pub info: ApiTokenInfo,
    pub token: String,
}

/// What authentication found for an id: the stored hash and who it belongs to.
#[derive(Debug, Clone)]
pub struct StoredApiToken {
    pub org_id: Uuid,
    pub secret_hash: String,
    pub scopes: Vec<Scope>,
}

fn scope_names(scopes: &[Scope]) -> Vec<&'static str> {
    scopes.iter().map(|s| s.as_str()).collect()
}

impl Store {
    // === organisations ===

    pub async fn create_org(&self, name: &str) -> Result<NewOrg, StoreError> {
        let org_id = Uuid::new_v4();
        let mut tx = self.tenant(org_id).await?;
        sqlx::query!("INSERT INTO organizations (id, name) VALUES ($1, $2)", org_id, name)
            .execute(&mut *tx)
            .await?;
        let first =
            insert_api_token(&mut tx, &self.hasher, org_id, "first token", &[Scope::Admin]).await?;
        tx.commit().await?;
        Ok(NewOrg { org_id, name: name.to_owned(), api_token: first.token })
    }

    pub async fn org_exists(&self, org: Uuid) -> Result<bool, StoreError> {
        Ok(self.org_name(org).await?.is_some())
    }

    pub async fn org_name(&self, org: Uuid) -> Result<Option<String>, StoreError> {
        let mut tx = self.tenant(org).await?;
        let name = sqlx::query_scalar!("SELECT name FROM organizations WHERE id = $1", org)
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(name)
    }

    // === clusters ===

    /// [`Store::create_cluster_by`] the admin CLI.
    pub async fn create_cluster(
        &self,
        org: Uuid,
        name: &ClusterName,
    ) -> Result<ClusterCredentials, StoreError> {
        self.create_cluster_by(org, name, Actor::AdminCli).await
    }

    /// Registers a cluster and records who did in the audit log, in one transaction.
    pub async fn create_cluster_by(
        &self,
        org: Uuid,
        name: &ClusterName,
        actor: Actor,
    ) -> Result<ClusterCredentials, StoreError> {
        let cluster_id = Uuid::new_v4();
        let client_id = format!("cl_{}", cluster_id.simple());
        let client_secret = secrets::random_secret();
        let mut tx = self.tenant(org).await?;
        sqlx::query!(
            "INSERT INTO clusters (org_id, id, name, client_id, secret_hash) VALUES ($1, $2, $3, $4, $5)",
            org,
            cluster_id,
            name.as_str(),
            &client_id,
            self.hasher.hash(Purpose::ClusterSecret, &client_secret)
        )
        .execute(&mut *tx)
        .await?;
        let details = serde_json::json!({"name": name.as_str(), "client_id": client_id});
        audit::record(&mut tx, org, actor, Action::ClusterCreate, cluster_id, details).await?;
        tx.commit().await?;
        Ok(ClusterCredentials { cluster_id, name: name.clone(), client_id, client_secret })
    }

    pub async fn list_clusters(&self, org: Uuid) -> Result<Vec<ClusterInfo>, StoreError> {
        let mut tx = self.tenant(org).await?;
        let rows = sqlx::query_as!(
            ClusterInfo,
            "SELECT id, name, client_id, created_at, revoked_at, last_report_at FROM clusters WHERE org_id = $1 ORDER BY name",
            org
        )
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rows)
    }

    /// A cluster of `org` by id or by name.
    pub async fn find_cluster(
        &self,
        org: Uuid,
        id_or_name: &str,
    ) -> Result<Option<ClusterInfo>, StoreError> {
        let id = Uuid::try_parse(id_or_name).ok();
        let mut tx = self.tenant(org).await?;
        let row = sqlx::query_as!(
            ClusterInfo,
            "SELECT id, name, client_id, created_at, revoked_at, last_report_at FROM clusters
             WHERE org_id = $1 AND (name = $2 OR id = $3)",
            org,
            id_or_name,
            id
        )
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(row)
    }

    /// [`Store::revoke_cluster_by`] the admin CLI.
    pub async fn revoke_cluster(&self, org: Uuid, cluster: Uuid) -> Result<bool, StoreError> {
        self.revoke_cluster_by(org, cluster, Actor::AdminCli).await
    }

    /// Revoking stops the cluster's secret and every token issued from it. Recorded in the
    /// audit log (in the same transaction) when it revoked something.
    pub async fn revoke_cluster_by(
        &self,
        org: Uuid,
        cluster: Uuid,
        actor: Actor,
    ) -> Result<bool, StoreError> {
        let mut tx = self.tenant(org).await?;
        let name = sqlx::query_scalar!(
            "UPDATE clusters SET revoked_at = COALESCE(revoked_at, now()) WHERE org_id = $1 AND id = $2 RETURNING name",
            org,
            cluster
        )
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(name) = &name {
            let details = serde_json::json!({"name": name});
            audit::record(&mut tx, org, actor, Action::ClusterRevoke, cluster, details).await?;
        }
        tx.commit().await?;
        Ok(name.is_some())
    }

    /// [`Store::delete_cluster_by`] the admin CLI.
    pub async fn delete_cluster(&self, org: Uuid, cluster: Uuid) -> Result<bool, StoreError> {
        self.delete_cluster_by(org, cluster, Actor::AdminCli).await
    }

    /// Deletes the cluster with all its edges and reports, and records who did in the audit
    /// log, in one transaction.
    pub async fn delete_cluster_by(
        &self,
        org: Uuid,
        cluster: Uuid,
        actor: Actor,
    ) -> Result<bool, StoreError> {
        let mut tx = self.tenant(org).await?;
        sqlx::query!("DELETE FROM edges WHERE org_id = $1 AND cluster_id = $2", org, cluster)
            .execute(&mut *tx)
            .await?;
        let name = sqlx::query_scalar!(
            "DELETE FROM clusters WHERE org_id = $1 AND id = $2 RETURNING name",
            org,
            cluster
        )
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(name) = &name {
            sqlx::query!("DELETE FROM graph_summaries WHERE org_id = $1", org)
                .execute(&mut *tx)
                .await?;
            let details = serde_json::json!({"name": name});
            audit::record(&mut tx, org, actor, Action::ClusterDelete, cluster, details).await?;
        }
        tx.commit().await?;
        Ok(name.is_some())
    }

    /// `(org, cluster, secret hash)` for an active client ID. Runs before the tenant is known,
    /// through a narrow SECURITY DEFINER function.
    pub async fn cluster_client(
        &self,
        client_id: &str,
    ) -> Result<Option<(Uuid, Uuid, String)>, StoreError> {
        // The function's columns are never NULL, but PostgreSQL cannot know that.
        let row = sqlx::query!(
            r#"SELECT org_id AS "org_id!", cluster_id AS "cluster_id!", secret_hash AS "secret_hash!" FROM auth_cluster_client($1)"#,
            client_id
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| (r.org_id, r.cluster_id, r.secret_hash)))
    }

    pub async fn cluster_is_active(&self, org: Uuid, cluster: Uuid) -> Result<bool, StoreError> {
        let mut tx = self.tenant(org).await?;
        let row = sqlx::query_scalar!(
            "SELECT 1 FROM clusters WHERE org_id = $1 AND id = $2 AND revoked_at IS NULL",
            org,
            cluster
        )
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(row.is_some())
    }

    /// Replaces a verified secret's stored hash with a fresh one (argon2id or an old key before),
    /// unless it changed meanwhile.
    pub async fn rehash_cluster_secret(
        &self,
        org: Uuid,
        cluster: Uuid,
        old_hash: &str,
        secret: &str,
    ) -> Result<(), StoreError> {
        let rehash = sqlx::query!(
            "UPDATE clusters SET secret_hash = $4 WHERE org_id = $1 AND id = $2 AND secret_hash = $3",
            org,
            cluster,
            old_hash,
            self.hasher.hash(Purpose::ClusterSecret, secret)
        );
        self.execute_as_tenant(org, rehash).await
    }

    /// Runs one already-built statement in `org`'s tenant transaction (under row-level security)
    /// and commits: what the two `rehash_*` share, since `query!` needs its SQL literal.
    async fn execute_as_tenant(
        &self,
        org: Uuid,
        statement: sqlx::query::Query<'_, Postgres, sqlx::postgres::PgArguments>,
    ) -> Result<(), StoreError> {
        let mut tx = self.tenant(org).await?;
        statement.execute(&mut *tx).await?;
        Ok(tx.commit().await?)
    }

    // === API tokens ===

    /// The stored hash and scopes of an active API token id. Runs before the tenant is known.
    pub async fn api_token(&self, token_id: Uuid) -> Result<Option<StoredApiToken>, StoreError> {
        // The function's columns are never NULL, but PostgreSQL cannot know that.
        let row = sqlx::query!(
            r#"SELECT org_id AS "org_id!", secret_hash AS "secret_hash!", scopes AS "scopes!: Scopes" FROM auth_api_token($1)"#,
            token_id
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| StoredApiToken {
            org_id: r.org_id,
            secret_hash: r.secret_hash,
            scopes: r.scopes.0,
        }))
    }

    pub async fn rehash_api_token(
        &self,
        org: Uuid,
        token_id: Uuid,
        old_hash: &str,
        secret: &str,
    ) -> Result<(), StoreError> {
        let rehash = sqlx::query!(
            "UPDATE api_tokens SET secret_hash = $4 WHERE org_id = $1 AND id = $2 AND secret_hash = $3",
            org,
            token_id,
            old_hash,
            self.hasher.hash(Purpose::ApiToken, secret)
        );
        self.execute_as_tenant(org, rehash).await
    }

    /// [`Store::create_api_token_by`] the admin CLI.
    pub async fn create_api_token(
        &self,
        org: Uuid,
        name: &str,
        scopes: &[Scope],
    ) -> Result<NewApiToken, StoreError> {
        self.create_api_token_by(org, name, scopes, Actor::AdminCli).await
    }

    /// Creates an API token and records who did in the audit log, in one transaction.
    pub async fn create_api_token_by(
        &self,
        org: Uuid,
        name: &str,
        scopes: &[Scope],
        actor: Actor,
    ) -> Result<NewApiToken, StoreError> {
        let mut tx = self.tenant(org).await?;
        let token = insert_api_token(&mut tx, &self.hasher, org, name, scopes).await?;
        let details = serde_json::json!({"name": name, "scopes": scope_names(scopes)});
        audit::record(&mut tx, org, actor, Action::TokenCreate, token.info.id, details).await?;
        tx.commit().await?;
        Ok(token)
    }

    pub async fn list_api_tokens(&self, org: Uuid) -> Result<Vec<ApiTokenInfo>, StoreError> {
        let mut tx = self.tenant(org).await?;
        let rows = sqlx::query_as!(
            ApiTokenInfo,
            r#"SELECT id, name, scopes AS "scopes: Scopes", created_at, revoked_at FROM api_tokens WHERE org_id = $1 ORDER BY created_at, id"#,
            org
        )
        .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(rows)
    }

    pub async fn find_api_token(
        &self,
        org: Uuid,
        id: Uuid,
    ) -> Result<Option<ApiTokenInfo>, StoreError> {
        let mut tx = self.tenant(org).await?;
        let row = sqlx::query_as!(
            ApiTokenInfo,
            r#"SELECT id, name, scopes AS "scopes: Scopes", created_at, revoked_at FROM api_tokens WHERE org_id = $1 AND id = $2"#,
            org,
            id
        )
        .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(row)
    }

    /// [`Store::revoke_api_token_by`] the admin CLI.
    pub async fn revoke_api_token(
        &self,
        org: Uuid,
        id: Uuid,
    ) -> Result<Option<ApiTokenInfo>, StoreError> {
        self.revoke_api_token_by(org, id, Actor::AdminCli).await
    }

    /// Revokes at once: every request checks the token in the database. Recorded in the audit
    /// log in the same transaction.
    pub async fn revoke_api_token_by(
        &self,
        org: Uuid,
        id: Uuid,
        actor: Actor,
    ) -> Result<Option<ApiTokenInfo>, StoreError> {
        let mut tx = self.tenant(org).await?;
        let row = sqlx::query_as!(
            ApiTokenInfo,
            r#"UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, now()) WHERE org_id = $1 AND id = $2
             RETURNING id, name, scopes AS "scopes: Scopes", created_at, revoked_at"#,
            org,
            id
        )
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(token) = &row {
            let details = serde_json::json!({"name": token.name});
            audit::record(&mut tx, org, actor, Action::TokenRevoke, id, details).await?;
        }
        tx.commit().await?;
        Ok(row)
    }
}

async fn insert_api_token(
    tx: &mut PgConnection,
    hasher: &SecretHasher,
    org: Uuid,
    name: &str,
    scopes: &[Scope],
) -> Result<NewApiToken, sqlx::Error> {
    let id = Uuid::new_v4();
    let secret = secrets::random_secret();
    let info = sqlx::query_as!(
        ApiTokenInfo,
        r#"INSERT INTO api_tokens (org_id, id, name, secret_hash, scopes) VALUES ($1, $2, $3, $4, $5)
         RETURNING id, name, scopes AS "scopes: Scopes", created_at, revoked_at"#,
        org,
        id,
        name,
        hasher.hash(Purpose::ApiToken, &secret),
        &scope_names(scopes) as &[&str]
    )
    .fetch_one(tx)
    .await?;
    Ok(NewApiToken { info, token: tokens::format_api_token(id, &secret) })
}
