//! The audit log: who created, revoked or deleted clusters and API tokens or changed retention,
//! when, and what. Each entry is written in the transaction of the change it records, so an
//! entry exists exactly when its change does.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Store, StoreError};

/// Who made a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    /// A request carrying this API token.
    ApiToken(Uuid),
    /// `cloud-api admin` (whoever holds a database URL).
    AdminCli,
}

impl Actor {
    fn kind(self) -> &'static str {
        match self {
            Actor::ApiToken(_) => "api_token",
            Actor::AdminCli => "admin_cli",
        }
    }

    fn token_id(self) -> Option<Uuid> {
        match self {
            Actor::ApiToken(id) => Some(id),
            Actor::AdminCli => None,
        }
    }
}

/// What was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    ClusterCreate,
    ClusterRevoke,
    ClusterDelete,
    TokenCreate,
    TokenRevoke,
    RetentionUpdate,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::ClusterCreate => "cluster.create",
            Action::ClusterRevoke => "cluster.revoke",
            Action::ClusterDelete => "cluster.delete",
            Action::TokenCreate => "token.create",
            Action::TokenRevoke => "token.revoke",
            Action::RetentionUpdate => "retention.update",
        }
    }
}

/// One audit entry as the API returns it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    /// Increases with every entry: page back with `before=<id>`.
    pub id: i64,
    pub at: DateTime<Utc>,
    /// `api_token` or `admin_cli`.
    pub actor: String,
    /// The API token that made the change, when one did.
    pub actor_token_id: Option<Uuid>,
    /// `cluster.create`, `cluster.revoke`, `cluster.delete`, `token.create`, `token.revoke` or
    /// `retention.update`.
    pub action: String,
    /// The cluster's or token's id; the organisation's for `retention.update`.
    pub target_id: Uuid,
    /// Names, scopes, or the retention before and after.
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
}

/// Records `action` on `target` by `actor` in the caller's transaction.
pub(super) async fn record(
    tx: &mut PgConnection,
    org: Uuid,
    actor: Actor,
    action: Action,
    target: Uuid,
    details: serde_json::Value,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO audit_log (org_id, actor, actor_token_id, action, target_id, details) VALUES ($1, $2, $3, $4, $5, $6)",
        org,
        actor.kind(),
        actor.token_id(),
        action.as_str(),
        target,
        details
    )
    .execute(tx)
    .await?;
    Ok(())
}

impl Store {
    /// The organisation's audit entries, newest first: at most `limit`, with ids below `before`
    /// when given.
    pub async fn audit_log(
        &self,
        org: Uuid,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let mut tx = self.tenant(org).await?;
        let rows = sqlx::query_as!(
            AuditEntry,
            "SELECT id, at, actor, actor_token_id, action, target_id, details FROM audit_log
             WHERE org_id = $1 AND ($2::bigint IS NULL OR id < $2) ORDER BY id DESC LIMIT $3",
            org,
            before,
            limit
        )
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rows)
    }
}
