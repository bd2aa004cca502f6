//! Console users and their sessions.
//!
//! The store keeps only what it is given: a password *hash* (hashing belongs to the web
//! console) and a session token *hash*, so a copy of the database lets no one log in or ride a
//! session. A session is valid while unexpired and its user is enabled; both are checked in the
//! one query that resolves it.

use super::{Error, Result, Store};

/// What a console user may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Everything, including users, destinations and model bundles.
    Admin,
    /// Day-to-day operation: re-run jobs, resend results.
    Operator,
    /// Read-only.
    Viewer,
}

impl Role {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Viewer => "viewer",
        }
    }

    pub(crate) fn parse(s: &str) -> Result<Self> {
        match s {
            "admin" => Ok(Role::Admin),
            "operator" => Ok(Role::Operator),
            "viewer" => Ok(Role::Viewer),
            other => Err(Error::Conflict(format!("unknown role `{other}`"))),
        }
    }
}

/// A console user as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    /// `users.id`.
    pub id: i64,
    /// Login name.
    pub username: String,
    /// The password hash (PHC string) the console verifies against.
    pub password_hash: String,
    /// Role.
    pub role: Role,
    /// Disabled users cannot log in and their sessions stop resolving.
    pub disabled: bool,
}

/// Leaves the password hash out, so a logged `{:?}` cannot feed an offline attack.
impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("role", &self.role)
            .field("disabled", &self.disabled)
            .finish_non_exhaustive()
    }
}

type UserRow = (i64, String, String, String, bool);

fn user_from(row: UserRow) -> Result<User> {
    let (id, username, password_hash, role, disabled) = row;
    Ok(User {
        id,
        username,
        password_hash,
        role: Role::parse(&role)?,
        disabled,
    })
}

impl Store {
    /// Adds a user and returns its id.
    ///
    /// # Errors
    /// The driver's error (a duplicate user name).
    pub async fn create_user(
        &self,
        username: &str,
        password_hash: &str,
        role: Role,
    ) -> Result<i64> {
        let now = self.now_ms();
        Ok(on_backend!(self, |pool| {
            sqlx::query_scalar::<_, i64>(
                "INSERT INTO users (username, password_hash, role, created_at_ms)
                 VALUES ($1, $2, $3, $4) RETURNING id",
            )
            .bind(username)
            .bind(password_hash)
            .bind(role.as_str())
            .bind(now)
            .fetch_one(pool)
            .await?
        }))
    }

    /// The user with this login name.
    ///
    /// # Errors
    /// The driver's error.
    pub async fn user_by_name(&self, username: &str) -> Result<Option<User>> {
        let row: Option<UserRow> = on_backend!(self, |pool| {
            sqlx::query_as(
                "SELECT id, username, password_hash, role, disabled FROM users
                 WHERE username = $1",
            )
            .bind(username)
            .fetch_optional(pool)
            .await?
        });
        row.map(user_from).transpose()
    }

    /// Enables or disables a user; returns whether the user exists.
    ///
    /// # Errors
    /// The driver's error.
    pub async fn set_user_disabled(&self, user_id: i64, disabled: bool) -> Result<bool> {
        let changed = on_backend!(self, |pool| {
            sqlx::query("UPDATE users SET disabled = $2 WHERE id = $1")
                .bind(user_id)
                .bind(disabled)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(changed == 1)
    }

    /// Opens a session identified by `token_hash` for `user_id`, valid until `expires_at_ms`.
    ///
    /// # Errors
    /// The driver's error (unknown user, duplicate token).
    pub async fn create_session(
        &self,
        token_hash: &str,
        user_id: i64,
        peer_addr: &str,
        expires_at_ms: i64,
    ) -> Result<()> {
        let now = self.now_ms();
        on_backend!(self, |pool| {
            sqlx::query(
                "INSERT INTO sessions (token_hash, user_id, peer_addr, created_at_ms,
                                       expires_at_ms)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(token_hash)
            .bind(user_id)
            .bind(peer_addr)
            .bind(now)
            .bind(expires_at_ms)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// The user a session token hash belongs to, if the session is unexpired and the user
    /// enabled.
    ///
    /// # Errors
    /// The driver's error.
    pub async fn session_user(&self, token_hash: &str) -> Result<Option<User>> {
        let now = self.now_ms();
        let row: Option<UserRow> = on_backend!(self, |pool| {
            sqlx::query_as(
                "SELECT u.id, u.username, u.password_hash, u.role, u.disabled
                 FROM sessions s JOIN users u ON u.id = s.user_id
                 WHERE s.token_hash = $1 AND s.expires_at_ms > $2 AND NOT u.disabled",
            )
            .bind(token_hash)
            .bind(now)
            .fetch_optional(pool)
            .await?
        });
        row.map(user_from).transpose()
    }

    /// Ends a session (logout); returns whether it existed.
    ///
    /// # Errors
    /// The driver's error.
    pub async fn end_session(&self, token_hash: &str) -> Result<bool> {
        let changed = on_backend!(self, |pool| {
            sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
                .bind(token_hash)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(changed == 1)
    }

    /// Deletes expired sessions; returns how many.
    ///
    /// # Errors
    /// The driver's error.
    pub async fn purge_expired_sessions(&self) -> Result<u64> {
        let now = self.now_ms();
        Ok(on_backend!(self, |pool| {
            sqlx::query("DELETE FROM sessions WHERE expires_at_ms <= $1")
                .bind(now)
                .execute(pool)
                .await?
                .rows_affected()
        }))
    }
}
