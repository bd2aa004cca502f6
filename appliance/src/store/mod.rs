//! The appliance's memory: one typed, async store over PostgreSQL or SQLite.
//!
//! PostgreSQL is the production store (the appliance image, and several daemons sharing one
//! server to split the job queue); SQLite is the embedded default so a bare machine runs the
//! demo. Both sit behind the one [`Store`] type, checked by one conformance suite
//! (`appliance/tests/conformance.rs`).
//!
//! # Why an enum of two pools and not a trait with two implementations
//!
//! The set of backends is closed (two), and almost every statement is the same SQL text on
//! both: SQLite accepts PostgreSQL's `$1` placeholders, `RETURNING` and `ON CONFLICT`. With an
//! enum, each operation is written once inside `on_backend!`, which expands the same body for
//! both pool types, so the compiler checks it against both drivers; the few places where the
//! dialects really differ (claiming a job, the batched insert, how a write transaction starts)
//! are small methods of the crate-private `postgres.rs`/`sqlite.rs` pool impls. A public trait
//! would need `async fn` in a trait object (boxing every future) or make every caller and the
//! conformance suite generic; the enum keeps both plain: tests receive a `Store` and run.
//!
//! # Time
//!
//! Times are integer milliseconds since the Unix epoch (`*_ms` columns), read from the
//! store's [`Clock`]: comparisons are plain integer comparisons on both backends, and tests
//! drive leases and back-off with a [`ManualClock`] instead of sleeping. Daemons sharing one
//! PostgreSQL must keep their clocks in sync (NTP), as lease expiry compares their readings.
//!
//! # PHI
//!
//! Only `studies.patient_name` and `studies.patient_id` hold patient-identifying data (see
//! `docs/store.md`). [`Study`] and [`NewStudy`] redact them in `Debug`, and no error message
//! of this module includes them.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::{PgPool, SqlitePool};

/// Expands `$body` once per backend with `$pool` bound to that backend's pool, so shared SQL is
/// written once and type-checked against both drivers.
macro_rules! on_backend {
    ($store:expr, |$pool:ident| $body:expr) => {
        match &$store.backend {
            $crate::store::Backend::Postgres($pool) => $body,
            $crate::store::Backend::Sqlite($pool) => $body,
        }
    };
}

mod audit;
mod console;
mod error;
mod index;
mod migrations;
mod outbox;
mod peers;
mod postgres;
pub mod queue;
mod results;
pub mod retention;
mod sqlite;
mod users;

pub use audit::{AuditEvent, AuditOutcome, StoredAuditEvent};
pub use console::{
    AuditFilter, ConsoleUser, DeletedSeries, FinishedJob, InstalledBundle, JobHistory, LoginUser,
    SeriesDetail, SeriesFilter, SeriesRow, StoredSetting,
};
pub use error::{Error, Result};
pub use index::{InstanceIds, NewInstance, NewSeries, NewStudy, SeriesFiles, Study};
pub use migrations::AppliedMigration;
pub use outbox::{
    ClaimedDelivery, DeliveryRecord, DeliveryState, NewDestination, RetryPolicy, StoredDestination,
};
pub use peers::{NewPeer, StoredPeer};
pub use results::{
    LesionRecord, NewResult, OutputKind, ResultStatus, StoredResult, Timings, VertebraRecord,
};
pub use users::{Role, User};

/// Where the store reads "now" from.
#[derive(Clone, Debug, Default)]
pub enum Clock {
    /// The system's wall clock (production).
    #[default]
    System,
    /// A clock that only moves when told to (tests of leases, back-off and retention).
    Manual(ManualClock),
}

impl Clock {
    /// The current time in milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        match self {
            Clock::System => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            Clock::Manual(m) => m.now_ms(),
        }
    }
}

/// A shared, manually advanced clock; clones see the same time.
#[derive(Clone, Debug)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock reading `start_ms`.
    pub fn new(start_ms: i64) -> Self {
        Self(Arc::new(AtomicI64::new(start_ms)))
    }

    /// The current reading.
    pub fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(duration_ms(by), Ordering::SeqCst);
    }
}

/// A duration in whole milliseconds, saturating (a lease of 300 million years is "forever").
pub(crate) fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The connection pool of the backend in use.
#[derive(Clone, Debug)]
pub(crate) enum Backend {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// What differs between the two dialects inside otherwise shared statements.
pub(crate) trait Dialect {
    /// The sqlx database type of this pool.
    type Db: sqlx::Database;

    /// Starts a transaction that is going to write. SQLite must take its write lock up front
    /// (`BEGIN IMMEDIATE`): a deferred transaction that reads and then writes fails with
    /// `SQLITE_BUSY` instead of waiting when another writer got in between.
    fn begin_write(
        &self,
    ) -> impl Future<Output = Result<sqlx::Transaction<'static, Self::Db>>> + Send;

    /// The statement that leases the next runnable job (see [`queue`]).
    fn claim_sql(&self) -> &'static str;

    /// The statement that leases due deliveries (see `outbox.rs`): `$1` now, `$2` the lease's
    /// expiry, `$3` how many at most; returns the ids.
    fn claim_deliveries_sql(&self) -> &'static str;
}

/// A handle to the appliance store; cheap to clone (the pool is shared).
#[derive(Clone, Debug)]
pub struct Store {
    backend: Backend,
    clock: Clock,
}

/// Which database a [`Store`] talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendKind {
    /// PostgreSQL (production, multi-node).
    Postgres,
    /// SQLite (embedded default, single box).
    Sqlite,
}

impl Store {
    /// Connects to `url` (`postgres://…` or `sqlite://…`) and brings the schema up to date.
    ///
    /// # Errors
    /// [`Error::UnsupportedUrl`] for another scheme, [`Error::DatabaseNewer`] when the database
    /// was migrated by a newer binary, or the driver's error.
    pub async fn open(url: &str) -> Result<Self> {
        let store = Self::connect(url).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Connects to `url` without touching the schema (`vertebrad migrate` and tests use this to
    /// migrate explicitly).
    ///
    /// # Errors
    /// [`Error::UnsupportedUrl`] for another scheme, or the driver's error.
    pub async fn connect(url: &str) -> Result<Self> {
        let scheme = url.split_once(':').map_or(url, |(s, _)| s);
        let backend = match scheme {
            "postgres" | "postgresql" => Backend::Postgres(postgres::connect(url).await?),
            "sqlite" => Backend::Sqlite(sqlite::connect(url).await?),
            _ => {
                return Err(Error::UnsupportedUrl {
                    scheme: scheme.chars().take(32).collect(),
                });
            }
        };
        Ok(Self {
            backend,
            clock: Clock::System,
        })
    }

    /// The same store reading time from `clock`.
    #[must_use]
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Which database this store talks to.
    pub fn backend(&self) -> BackendKind {
        match self.backend {
            Backend::Postgres(_) => BackendKind::Postgres,
            Backend::Sqlite(_) => BackendKind::Sqlite,
        }
    }

    /// Closes the pool, waiting for connections to be returned (SQLite checkpoints its WAL).
    pub async fn close(&self) {
        on_backend!(self, |pool| pool.close().await);
    }

    /// Asks the database for a trivial answer (`SELECT 1`): the watchdog's and `/healthz`'s
    /// proof that the store still answers (callers bound the wait).
    ///
    /// # Errors
    /// The driver's error.
    pub async fn ping(&self) -> Result<()> {
        on_backend!(self, |pool| {
            sqlx::query("SELECT 1").execute(pool).await?;
        });
        Ok(())
    }

    pub(crate) fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }
}

/// A non-negative count or size as the signed 64-bit integer both databases store.
pub(crate) fn to_i64(value: u64, what: &str) -> Result<i64> {
    i64::try_from(value)
        .map_err(|_| Error::InvalidArgument(format!("{what} {value} exceeds the stored range")))
}
