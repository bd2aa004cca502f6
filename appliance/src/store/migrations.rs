//! Versioned schema migrations, embedded in the binary and applied at start-up.
//!
//! The SQL lives in `appliance/migrations/{postgres,sqlite}/NNNN_name.sql`, one directory per
//! dialect with the same version numbers. sqlx's migrator applies what is missing and checks
//! checksums of what was applied; before it runs we check the one case an operator must hear
//! about in plain words: a database migrated by a newer `vertebrad` than this one.

use sqlx::migrate::Migrator;

use super::{Backend, Error, Result, Store};

static POSTGRES: Migrator = sqlx::migrate!("./migrations/postgres");
static SQLITE: Migrator = sqlx::migrate!("./migrations/sqlite");

/// A migration recorded as applied in the database.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct AppliedMigration {
    /// Its version (the `NNNN` of the file name).
    pub version: i64,
    /// Its description (the rest of the file name).
    pub description: String,
}

impl Store {
    /// Applies the migrations this database lacks and returns every migration now applied,
    /// oldest first. Safe to run concurrently from several daemons on PostgreSQL (sqlx holds
    /// an advisory lock while migrating).
    ///
    /// # Errors
    /// [`Error::DatabaseNewer`] when the database carries migrations unknown to this binary
    /// (nothing is changed then), [`Error::Migrate`] when a migration fails or an applied one
    /// was altered.
    pub async fn migrate(&self) -> Result<Vec<AppliedMigration>> {
        let migrator = match &self.backend {
            Backend::Postgres(_) => &POSTGRES,
            Backend::Sqlite(_) => &SQLITE,
        };
        let known: Vec<i64> = migrator.iter().map(|m| m.version).collect();
        let applied = self.applied_migrations().await?;
        let unknown: Vec<i64> = applied
            .iter()
            .map(|m| m.version)
            .filter(|v| !known.contains(v))
            .collect();
        if !unknown.is_empty() {
            return Err(Error::DatabaseNewer {
                unknown,
                known_latest: known.iter().copied().max().unwrap_or(0),
            });
        }
        match &self.backend {
            Backend::Postgres(pool) => POSTGRES.run(pool).await?,
            Backend::Sqlite(pool) => SQLITE.run(pool).await?,
        }
        self.applied_migrations().await
    }

    /// The migrations recorded in the database (none for a fresh one).
    ///
    /// # Errors
    /// The driver's error.
    pub async fn applied_migrations(&self) -> Result<Vec<AppliedMigration>> {
        const SQL: &str = "SELECT version, description FROM _sqlx_migrations
            WHERE success ORDER BY version";
        let exists: bool = match &self.backend {
            Backend::Postgres(pool) => {
                sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
                    .fetch_one(pool)
                    .await?
            }
            Backend::Sqlite(pool) => {
                sqlx::query_scalar(
                    "SELECT COUNT(*) > 0 FROM sqlite_master
                     WHERE type = 'table' AND name = '_sqlx_migrations'",
                )
                .fetch_one(pool)
                .await?
            }
        };
        if !exists {
            return Ok(Vec::new());
        }
        Ok(on_backend!(self, |pool| {
            sqlx::query_as::<_, AppliedMigration>(SQL)
                .fetch_all(pool)
                .await?
        }))
    }

    /// The newest migration version this binary carries for its backend.
    pub fn latest_known_migration(&self) -> i64 {
        let migrator = match &self.backend {
            Backend::Postgres(_) => &POSTGRES,
            Backend::Sqlite(_) => &SQLITE,
        };
        migrator.iter().map(|m| m.version).max().unwrap_or(0)
    }
}
