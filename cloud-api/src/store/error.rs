//! What the store's operations fail with, in the store's own terms: callers (the HTTP API, the
//! admin CLI) decide what to tell people.

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique constraint refused the row: the name (of a cluster, say) is already taken in the
    /// organisation. `constraint` names the constraint, when PostgreSQL said which.
    #[error("that name is already taken in this organisation; choose another")]
    NameTaken { constraint: Option<String> },
    /// A foreign key refused the row: what it belongs to (the cluster, or its organisation) was
    /// deleted meanwhile.
    #[error("the cluster no longer exists")]
    ClusterGone,
    /// A report holds a value the database cannot store (SQLSTATE class 22, data exception, or
    /// 23, integrity constraint): storing it again would fail again.
    #[error("the database cannot store a value in this report ({message}, SQLSTATE {code})")]
    Unstorable { code: String, message: String },
    /// Anything else: the database is unreachable, a query failed, a stored value did not decode.
    #[error(transparent)]
    Database(sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    /// Unique and foreign-key violations become [`StoreError::NameTaken`] and
    /// [`StoreError::ClusterGone`]; everything else is [`StoreError::Database`].
    fn from(e: sqlx::Error) -> Self {
        if let Some(db) = e.as_database_error() {
            if db.is_unique_violation() {
                return StoreError::NameTaken { constraint: db.constraint().map(str::to_owned) };
            }
            if db.is_foreign_key_violation() {
                return StoreError::ClusterGone;
            }
        }
        StoreError::Database(e)
    }
}

impl StoreError {
    /// An error while storing a report: one caused by the report's values (SQLSTATE class 22 or
    /// 23) is [`StoreError::Unstorable`], except that a cluster deleted meanwhile (a foreign-key
    /// violation) is [`StoreError::ClusterGone`].
    pub(super) fn storing_report(e: sqlx::Error) -> Self {
        if let Some(db) = e.as_database_error().filter(|db| !db.is_foreign_key_violation()) {
            if let Some(code) = db.code().filter(|c| c.starts_with("22") || c.starts_with("23")) {
                return StoreError::Unstorable {
                    code: code.into_owned(),
                    message: db.message().to_owned(),
                };
            }
        }
        StoreError::from(e)
    }
}
