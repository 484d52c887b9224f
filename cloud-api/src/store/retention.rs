//! Retention: each organisation keeps edges for `edge_retention_days` after they were last seen;
//! report ids are kept for the server's replay window. Pruning deletes in small batches, each its
//! own short transaction under the organisation's row-level security, so no lock is held long.

use uuid::Uuid;

use super::audit::{self, Action, Actor};
use super::{Store, StoreError};

/// The retention an organisation may choose, in days.
pub const RETENTION_DAYS: std::ops::RangeInclusive<i32> = 1..=3650;
/// What a new organisation keeps.
pub const DEFAULT_RETENTION_DAYS: i32 = 90;

impl Store {
    /// The organisation's edge retention in days (`None`: no such organisation).
    pub async fn retention_days(&self, org: Uuid) -> Result<Option<i32>, StoreError> {
        let mut tx = self.tenant(org).await?;
        let days =
            sqlx::query_scalar!("SELECT edge_retention_days FROM organizations WHERE id = $1", org)
                .fetch_optional(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok(days)
    }

    /// Sets the organisation's edge retention and records it in the audit log, in one
    /// transaction. Returns the retention before (`None`: no such organisation). `days` must be
    /// within [`RETENTION_DAYS`] (the database refuses others too).
    pub async fn set_retention_days(
        &self,
        org: Uuid,
        days: i32,
        actor: Actor,
    ) -> Result<Option<i32>, StoreError> {
        let mut tx = self.tenant(org).await?;
        let before = sqlx::query_scalar!(
            "SELECT edge_retention_days FROM organizations WHERE id = $1 FOR UPDATE",
            org
        )
        .fetch_optional(&mut *tx)
        .await?;
        let Some(before) = before else {
            return Ok(None);
        };
        sqlx::query!("UPDATE organizations SET edge_retention_days = $2 WHERE id = $1", org, days)
            .execute(&mut *tx)
            .await?;
        audit::record(
            &mut tx,
            org,
            actor,
            Action::RetentionUpdate,
            org,
            serde_json::json!({"edge_retention_days": {"from": before, "to": days}}),
        )
        .await?;
        tx.commit().await?;
        Ok(Some(before))
    }

    /// Every organisation's id, for the pruner (through `retention_orgs()`, which returns
    /// nothing else).
    pub async fn retention_orgs(&self) -> Result<Vec<Uuid>, StoreError> {
        let ids = sqlx::query_scalar!(r#"SELECT org_id AS "org_id!" FROM retention_orgs()"#)
            .fetch_all(&self.pool)
            .await?;
        Ok(ids)
    }

    /// Looks at the next `batch` of the organisation's edges after `from` (in primary-key
    /// order) and deletes those last seen longer ago than its retention, in one short
    /// transaction. A run walks the organisation once, from [`Cursor::START`] until
    /// [`Pruned::next`] is `None`.
    pub async fn prune_edges_batch(
        &self,
        org: Uuid,
        from: &Cursor,
        batch: i64,
    ) -> Result<Pruned, StoreError> {
        let mut tx = self.tenant(org).await?;
        let row = sqlx::query!(
            r#"WITH scan AS (
                   SELECT cluster_id, edge_key, last_seen FROM edges
                   WHERE org_id = $1 AND (cluster_id, edge_key) > ($2, $3)
                   ORDER BY cluster_id, edge_key LIMIT $4
               ), gone AS (
                   DELETE FROM edges e USING scan s
                   WHERE e.org_id = $1 AND e.cluster_id = s.cluster_id AND e.edge_key = s.edge_key
                     AND s.last_seen < now() - make_interval(days => (SELECT edge_retention_days FROM organizations WHERE id = $1))
                   RETURNING 1
               )
               SELECT (SELECT count(*) FROM gone) AS "deleted!", (SELECT count(*) FROM scan) AS "scanned!",
                      last.cluster_id AS "last_cluster?", last.edge_key AS "last_key?"
               FROM (SELECT 1) one
               LEFT JOIN LATERAL (SELECT cluster_id, edge_key FROM scan ORDER BY cluster_id DESC, edge_key DESC LIMIT 1) last ON true"#,
            org,
            from.cluster,
            &from.key,
            batch
        )
        .fetch_one(&mut *tx)
        .await?;
        if row.deleted > 0 {
            // The stored aggregated views no longer match the edges (see `summary`).
            sqlx::query!(
                "UPDATE organizations SET edges_version = edges_version + 1 WHERE id = $1",
                org
            )
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(Pruned::of(row.deleted, row.scanned, batch, row.last_cluster, row.last_key))
    }

    /// Like [`Store::prune_edges_batch`] for report ids generated more than
    /// `older_than_seconds` ago.
    pub async fn prune_reports_batch(
        &self,
        org: Uuid,
        from: &Cursor,
        older_than_seconds: f64,
        batch: i64,
    ) -> Result<Pruned, StoreError> {
        let report_from = Uuid::from_slice(&from.key).unwrap_or(Uuid::nil());
        let mut tx = self.tenant(org).await?;
        let row = sqlx::query!(
            r#"WITH scan AS (
                   SELECT cluster_id, report_id, generated_at FROM reports
                   WHERE org_id = $1 AND (cluster_id, report_id) > ($2, $3)
                   ORDER BY cluster_id, report_id LIMIT $5
               ), gone AS (
                   DELETE FROM reports r USING scan s
                   WHERE r.org_id = $1 AND r.cluster_id = s.cluster_id AND r.report_id = s.report_id
                     AND s.generated_at < now() - make_interval(secs => $4)
                   RETURNING 1
               )
               SELECT (SELECT count(*) FROM gone) AS "deleted!", (SELECT count(*) FROM scan) AS "scanned!",
                      last.cluster_id AS "last_cluster?", last.report_id AS "last_report?"
               FROM (SELECT 1) one
               LEFT JOIN LATERAL (SELECT cluster_id, report_id FROM scan ORDER BY cluster_id DESC, report_id DESC LIMIT 1) last ON true"#,
            org,
            from.cluster,
            report_from,
            older_than_seconds,
            batch
        )
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        let last_key = row.last_report.map(|id| id.as_bytes().to_vec());
        Ok(Pruned::of(row.deleted, row.scanned, batch, row.last_cluster, last_key))
    }
}

/// Where a pruning walk over one organisation's rows goes on from: after this primary key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub cluster: Uuid,
    /// The rest of the key: an edge's 16-byte key, or a report id's bytes.
    pub key: Vec<u8>,
}

impl Cursor {
    /// Before every row: cluster ids are random UUIDs, keys never empty.
    pub const START: Cursor = Cursor { cluster: Uuid::nil(), key: Vec::new() };
}

/// What one batch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pruned {
    pub deleted: u64,
    /// Where the next batch starts; `None` when this batch reached the end.
    pub next: Option<Cursor>,
}

impl Pruned {
    fn of(
        deleted: i64,
        scanned: i64,
        batch: i64,
        cluster: Option<Uuid>,
        key: Option<Vec<u8>>,
    ) -> Pruned {
        let next = match (cluster, key) {
            (Some(cluster), Some(key)) if scanned >= batch => Some(Cursor { cluster, key }),
            _ => None,
        };
        Pruned { deleted: u64::try_from(deleted).unwrap_or(0), next }
    }
}
