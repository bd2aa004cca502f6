//! The audit log: who did what, when, from where, with what outcome.
//!
//! Append-only by construction: the store offers no update or delete, and database triggers
//! reject `UPDATE` and `DELETE` (and `TRUNCATE` on PostgreSQL) from any client, so even a
//! direct SQL session cannot rewrite history. Events name users, actions and object UIDs,
//! never patient names or IDs.

use super::{Error, Result, Store};

/// How an audited action ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuditOutcome {
    /// It was done.
    Success,
    /// It was attempted and failed.
    Failure,
    /// It was refused (authentication, authorisation).
    Denied,
}

impl AuditOutcome {
    fn as_str(self) -> &'static str {
        match self {
            AuditOutcome::Success => "success",
            AuditOutcome::Failure => "failure",
            AuditOutcome::Denied => "denied",
        }
    }

    pub(crate) fn parse(s: &str) -> Result<Self> {
        match s {
            "success" => Ok(AuditOutcome::Success),
            "failure" => Ok(AuditOutcome::Failure),
            "denied" => Ok(AuditOutcome::Denied),
            other => Err(Error::Conflict(format!("unknown audit outcome `{other}`"))),
        }
    }
}

/// An event to append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEvent {
    /// Who: a user name, or `system`/an AE title for machine actions.
    pub actor: String,
    /// What, e.g. `login`, `destination.add`, `study.view`.
    pub action: String,
    /// On what (an object UID or id), if anything.
    pub target: Option<String>,
    /// From where (peer address).
    pub peer_addr: Option<String>,
    /// How it ended.
    pub outcome: AuditOutcome,
}

/// An appended event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredAuditEvent {
    /// `audit_events.id`, increasing.
    pub id: i64,
    /// When (ms since the Unix epoch).
    pub at_ms: i64,
    /// The event.
    pub event: AuditEvent,
}

type AuditRow = (
    i64,
    i64,
    String,
    String,
    Option<String>,
    Option<String>,
    String,
);

impl Store {
    /// Appends an audit event and returns its id.
    ///
    /// # Errors
    /// The driver's error.
    pub async fn append_audit(&self, event: &AuditEvent) -> Result<i64> {
        let now = self.now_ms();
        Ok(on_backend!(self, |pool| {
            sqlx::query_scalar::<_, i64>(
                "INSERT INTO audit_events (at_ms, actor, action, target, peer_addr, outcome)
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            )
            .bind(now)
            .bind(&event.actor)
            .bind(&event.action)
            .bind(&event.target)
            .bind(&event.peer_addr)
            .bind(event.outcome.as_str())
            .fetch_one(pool)
            .await?
        }))
    }

    /// The newest `limit` events, newest first.
    ///
    /// # Errors
    /// The driver's error.
    pub async fn recent_audit_events(&self, limit: u32) -> Result<Vec<StoredAuditEvent>> {
        let rows: Vec<AuditRow> = on_backend!(self, |pool| {
            sqlx::query_as(
                "SELECT id, at_ms, actor, action, target, peer_addr, outcome
                 FROM audit_events ORDER BY id DESC LIMIT $1",
            )
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
        });
        rows.into_iter()
            .map(|(id, at_ms, actor, action, target, peer_addr, outcome)| {
                Ok(StoredAuditEvent {
                    id,
                    at_ms,
                    event: AuditEvent {
                        actor,
                        action,
                        target,
                        peer_addr,
                        outcome: AuditOutcome::parse(&outcome)?,
                    },
                })
            })
            .collect()
    }
}
