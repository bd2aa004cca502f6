//! The store's error type.
//!
//! Messages name tables, UIDs and job ids so an operator can act on them, but never patient
//! names or IDs: store errors end up in logs, and logs must stay free of PHI.

/// Everything that can go wrong talking to the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database driver reported an error (connection, SQL, constraint).
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Applying the schema migrations failed.
    #[error("schema migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The database carries migrations this binary does not know: it was migrated by a newer
    /// `vertebrad`. Running an old binary against it could write rows the new schema forbids, so
    /// the store refuses to start instead.
    #[error(
        "the database has schema migration(s) {unknown:?} that this vertebrad does not know \
         (it knows up to {known_latest}): it was migrated by a newer release; upgrade this \
         binary (databases are never downgraded)"
    )]
    DatabaseNewer {
        /// Versions applied in the database but absent from this binary.
        unknown: Vec<i64>,
        /// The newest migration version this binary carries.
        known_latest: i64,
    },
    /// The database URL names neither PostgreSQL nor SQLite. Only the scheme is echoed, since
    /// a URL may carry a password.
    #[error("unsupported database URL scheme `{scheme}`: expected postgres:// or sqlite://")]
    UnsupportedUrl {
        /// The scheme part of the rejected URL.
        scheme: String,
    },
    /// A worker tried to act on a job whose lease it no longer holds (the lease expired and the
    /// job was reclaimed, or it already finished). The worker must drop its work: another
    /// worker owns the job now.
    #[error("job {job_id} is no longer leased by `{owner}` (lease expired or job finished)")]
    LeaseLost {
        /// The job acted on.
        job_id: i64,
        /// The worker that believed it held the lease.
        owner: String,
    },
    /// The write contradicts rows already stored (for example a series UID that already
    /// belongs to another study); nothing of the write was kept.
    #[error("conflict with stored data: {0}")]
    Conflict(String),
    /// The caller passed a value the store cannot accept.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

/// Result alias for store operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;
