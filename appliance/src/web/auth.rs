//! Authentication and request guarding: argon2id password hashes, session cookies, the
//! per-route access check, CSRF, lockout, first-run setup and the forced password change.
//!
//! # Sessions
//! A session is a random 256-bit token in the cookie `__Host-vertebra-session` (Secure,
//! HttpOnly, SameSite=Strict, Path=/); the store keeps only its SHA-256, so a copy of the
//! database cannot ride a session. Sessions end at logout, after `web.session_minutes`, and
//! with every password change, role change or disabling of their user.
//!
//! # CSRF
//! Every request other than GET/HEAD must (1) come from this origin: `Sec-Fetch-Site`, when
//! the browser sends it, must be `same-origin`, and `Origin`, when sent, must be this host
//! (`Origin: null`, which browsers send under the console's `no-referrer` policy, only with
//! `Sec-Fetch-Site: same-origin`);
//! and (2) carry the form field `csrf` equal to the session's token (derived from the session
//! token, so it is never stored) or, before login, to the pre-session cookie
//! `__Host-vertebra-csrf`. The guard checks URL-encoded forms itself; the bundle upload
//! (multipart) is checked by its handler on the first form field before any file byte is
//! written ([`verify_multipart_csrf`]).
//!
//! # First run
//! While no user exists, `vertebrad serve` writes a one-time setup token to
//! `<state dir>/web-setup-token` (mode 0600, readable by the service account and root only) and
//! logs that file's path, never the token. `/setup` creates the first admin only with that
//! token, once; the admin must then log in and choose a new password. Someone on the hospital
//! network who reaches the console first cannot take it over without shell access to the
//! appliance.

use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use rand::RngCore as _;
use sha2::{Digest, Sha256};

use super::AppState;
use super::routes::Access;
use crate::store::{AuditEvent, AuditOutcome, ConsoleUser, Role};

/// The session cookie (the `__Host-` prefix makes browsers insist on Secure, Path=/ and no
/// Domain).
pub const SESSION_COOKIE: &str = "__Host-vertebra-session";
/// The pre-session CSRF cookie (login and setup forms).
pub const PRE_CSRF_COOKIE: &str = "__Host-vertebra-csrf";
/// The file holding the first-run setup token.
pub const SETUP_TOKEN_FILE: &str = "web-setup-token";
/// Shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Longest password accepted (argon2 cost is per byte of input only marginally, but bound it).
pub const MAX_PASSWORD_CHARS: usize = 256;
/// Largest URL-encoded form body the guard buffers.
pub const MAX_FORM_BYTES: usize = 64 * 1024;

/// The logged-in user of a request, with its CSRF token (a request extension).
#[derive(Clone, Debug)]
pub struct CurrentUser {
    /// The user.
    pub user: ConsoleUser,
    /// The CSRF token forms must carry.
    pub csrf: String,
    /// SHA-256 of the session token (for logout).
    pub session_hash: String,
}

impl CurrentUser {
    /// Whether the user's role includes `role`.
    pub fn has(&self, role: Role) -> bool {
        rank(self.user.role) >= rank(role)
    }
}

/// admin > operator > viewer.
pub fn rank(role: Role) -> u8 {
    match role {
        Role::Viewer => 0,
        Role::Operator => 1,
        Role::Admin => 2,
    }
}

/// argon2id with the OWASP-recommended parameters (19 MiB, 2 passes, 1 lane).
fn argon2() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// The PHC string (`$argon2id$v=19$m=19456,t=2,p=1$…`) of `password` with a fresh salt.
///
/// # Errors
/// argon2's error (not expected for the bounded inputs the console passes).
pub fn hash_password(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Whether `password` matches the PHC string `hash` (false for a malformed hash).
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| argon2().verify_password(password.as_bytes(), &h).is_ok())
}

/// Hashes off the async runtime (argon2 takes tens of milliseconds by design).
///
/// # Errors
/// argon2's error, or the blocking task's failure.
pub async fn hash_password_async(password: String) -> Result<String, String> {
    tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|e| e.to_string())?
}

/// Verifies off the async runtime; with no hash, verifies against a dummy so an unknown user
/// costs the same time as a wrong password.
pub async fn verify_password_async(password: String, hash: Option<String>) -> bool {
    tokio::task::spawn_blocking(move || {
        if let Some(h) = hash {
            verify_password(&password, &h)
        } else {
            static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
            let dummy = DUMMY
                .get_or_init(|| hash_password("dummy password for timing").unwrap_or_default());
            let _ = verify_password(&password, dummy);
            false
        }
    })
    .await
    .unwrap_or(false)
}

/// The password policy: 12 to 256 characters, not the user name, not one repeated character.
///
/// # Errors
/// What is wrong, in words for the form.
pub fn check_password_policy(password: &str, username: &str) -> Result<(), String> {
    let n = password.chars().count();
    if n < MIN_PASSWORD_CHARS {
        return Err(format!(
            "The password must have at least {MIN_PASSWORD_CHARS} characters."
        ));
    }
    if n > MAX_PASSWORD_CHARS {
        return Err(format!(
            "The password must have at most {MAX_PASSWORD_CHARS} characters."
        ));
    }
    if password.eq_ignore_ascii_case(username) {
        return Err("The password must not be the user name.".into());
    }
    let mut chars = password.chars();
    let first = chars.next();
    if chars.all(|c| Some(c) == first) {
        return Err("The password must not be one repeated character.".into());
    }
    Ok(())
}

/// A user name: 1–64 characters of letters, digits, `.`, `_`, `-`, `@`.
///
/// # Errors
/// What is wrong, in words for the form.
pub fn check_username(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err("The user name must have 1 to 64 characters.".into());
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
    {
        return Err("The user name may hold only letters, digits, '.', '_', '-' and '@'.".into());
    }
    Ok(())
}

/// 256 random bits as 64 lowercase hex digits.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// SHA-256 (hex) of a token: what the store keeps.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The CSRF token of a session, derived from its (secret) session token.
pub fn csrf_for(session_token: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"vertebra-console-csrf\0");
    h.update(session_token.as_bytes());
    hex::encode(h.finalize())
}

/// Constant-time equality of two tokens.
pub fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// `Set-Cookie` for a session token valid `max_age_s`.
pub fn session_cookie(token: &str, max_age_s: u64) -> String {
    format!(
        "{SESSION_COOKIE}={token}; Secure; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age_s}"
    )
}

/// `Set-Cookie` that removes the session cookie.
pub fn clear_session_cookie() -> String {
    format!("{SESSION_COOKIE}=; Secure; HttpOnly; SameSite=Strict; Path=/; Max-Age=0")
}

/// `Set-Cookie` for the pre-session CSRF token.
pub fn pre_csrf_cookie(token: &str) -> String {
    format!("{PRE_CSRF_COOKIE}={token}; Secure; HttpOnly; SameSite=Strict; Path=/; Max-Age=3600")
}

/// The peer address of a request (set by the accept loop).
pub fn peer(req_ext: &axum::http::Extensions) -> String {
    req_ext
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "unknown".to_owned(), |c| c.0.ip().to_string())
}

/// Appends an audit event, logging (not failing the request) when the store refuses.
pub async fn audit(
    state: &AppState,
    actor: &str,
    action: &str,
    target: Option<String>,
    peer: &str,
    outcome: AuditOutcome,
) {
    let event = AuditEvent {
        actor: actor.chars().take(64).collect(),
        action: action.to_owned(),
        target,
        peer_addr: Some(peer.to_owned()),
        outcome,
    };
    if let Err(e) = state.store.append_audit(&event).await {
        tracing::error!(action, "cannot append the audit event: {e}");
    }
}

/// Whether a state-changing request comes from this origin (`Sec-Fetch-Site`, `Origin`).
fn same_origin(headers: &HeaderMap) -> bool {
    let site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if site.is_some_and(|s| s != "same-origin") {
        return false;
    }
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        // Under the console's `Referrer-Policy: no-referrer` browsers send `Origin: null` with
        // every form POST, same-origin ones included (Fetch standard, "serializing a request
        // origin"). It tells nothing, so it passes only when the browser vouches for the
        // origin with `Sec-Fetch-Site: same-origin`.
        if origin == "null" {
            return site == Some("same-origin");
        }
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        return origin == format!("https://{host}");
    }
    true
}

/// The guard every route is wrapped in (see the module docs): resolves the session, sends
/// anonymous users to the login page, users who must change their password to `/password`,
/// refuses roles below the route's, and checks origin and CSRF token of state changes.
pub async fn guard(
    State((state, access)): State<(AppState, Access)>,
    req: Request,
    next: Next,
) -> Response {
    let session_token = cookie(req.headers(), SESSION_COOKIE).map(str::to_owned);
    let user = match &session_token {
        Some(t) if t.len() == 64 => match state.store.session_console_user(&token_hash(t)).await {
            Ok(u) => u.map(|user| CurrentUser {
                user,
                csrf: csrf_for(t),
                session_hash: token_hash(t),
            }),
            Err(e) => {
                tracing::error!("session lookup: {e}");
                return super::pages::error_page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The store is not reachable; try again shortly.",
                );
            }
        },
        _ => None,
    };
    let state_changing = req.method() != Method::GET && req.method() != Method::HEAD;
    let (min_role, while_must_change) = match access {
        Access::Public => (None, true),
        Access::Role(r) => (Some(r), false),
        Access::RoleDuringPasswordChange(r) => (Some(r), true),
    };
    if let Some(min_role) = min_role {
        let Some(u) = &user else {
            return Redirect::to("/login").into_response();
        };
        if u.user.must_change_password && !while_must_change {
            return Redirect::to("/password").into_response();
        }
        if !u.has(min_role) {
            let peer = peer(req.extensions());
            let target = Some(format!("{} {}", req.method(), req.uri().path()));
            audit(
                &state,
                &u.user.username,
                "access",
                target,
                &peer,
                AuditOutcome::Denied,
            )
            .await;
            return super::pages::error_page(
                StatusCode::FORBIDDEN,
                "Your role does not allow this page or action.",
            );
        }
    }
    if !state_changing {
        let mut req = req;
        if let Some(u) = user {
            req.extensions_mut().insert(u);
        }
        return next.run(req).await;
    }
    if !same_origin(req.headers()) {
        return super::pages::error_page(
            StatusCode::FORBIDDEN,
            "Cross-site request refused (Origin / Sec-Fetch-Site).",
        );
    }
    // Public forms (login, setup) carry the pre-session token even for a logged-in browser.
    let expected = match (&user, min_role) {
        (Some(u), Some(_)) => Some(u.csrf.clone()),
        _ => cookie(req.headers(), PRE_CSRF_COOKIE)
            .filter(|t| t.len() == 64)
            .map(str::to_owned),
    };
    let Some(expected) = expected else {
        return super::pages::error_page(
            StatusCode::FORBIDDEN,
            "Missing form token: reload the page and try again.",
        );
    };
    let is_multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("multipart/form-data"));
    let (parts, body) = req.into_parts();
    let mut req = if is_multipart {
        // Checked by the handler on the first field, before the upload is written.
        let mut req = Request::from_parts(parts, body);
        req.extensions_mut().insert(ExpectedCsrf(expected));
        req
    } else {
        let Ok(bytes) = axum::body::to_bytes(body, MAX_FORM_BYTES).await else {
            return super::pages::error_page(StatusCode::PAYLOAD_TOO_LARGE, "Form too large.");
        };
        let fields: Vec<(String, String)> =
            serde_urlencoded::from_bytes(&bytes).unwrap_or_default();
        let ok = fields
            .iter()
            .find(|(k, _)| k == "csrf")
            .is_some_and(|(_, v)| same_token(v, &expected));
        if !ok {
            return super::pages::error_page(
                StatusCode::FORBIDDEN,
                "Invalid or missing form token: reload the page and try again.",
            );
        }
        Request::from_parts(parts, Body::from(bytes))
    };
    if let Some(u) = user {
        req.extensions_mut().insert(u);
    }
    next.run(req).await
}

/// The CSRF token a multipart handler must find in its first field.
#[derive(Clone, Debug)]
pub struct ExpectedCsrf(pub String);

/// Checks that the first field of a multipart form is `csrf` with the expected token.
///
/// # Errors
/// The refusal response.
pub async fn verify_multipart_csrf(
    multipart: &mut axum::extract::Multipart,
    expected: Option<&ExpectedCsrf>,
) -> Result<(), Response> {
    let refuse = || {
        super::pages::error_page(
            StatusCode::FORBIDDEN,
            "Invalid or missing form token: reload the page and try again.",
        )
    };
    let Some(expected) = expected else {
        return Err(refuse());
    };
    let Ok(Some(field)) = multipart.next_field().await else {
        return Err(refuse());
    };
    if field.name() != Some("csrf") {
        return Err(refuse());
    }
    let value = field.text().await.map_err(|_| refuse())?;
    if same_token(&value, &expected.0) {
        Ok(())
    } else {
        Err(refuse())
    }
}

/// The first-run setup token: present (as its hash) only while no user exists.
#[derive(Debug, Default)]
pub struct SetupToken {
    hash: Mutex<Option<String>>,
    file: Mutex<Option<PathBuf>>,
}

impl SetupToken {
    /// When the store has no user: makes a token, writes it to `<state_dir>/web-setup-token`
    /// (0600) and returns the file's path; otherwise removes a stale file and returns `None`.
    ///
    /// # Errors
    /// A message when the file cannot be written.
    pub fn arm(&self, no_users: bool, state_dir: &Path) -> Result<Option<PathBuf>, String> {
        let path = state_dir.join(SETUP_TOKEN_FILE);
        if !no_users {
            let _ = std::fs::remove_file(&path);
            return Ok(None);
        }
        let token = new_token();
        let _ = std::fs::remove_file(&path);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        f.write_all(format!("{token}\n").as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        *self
            .hash
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(token_hash(&token));
        *self
            .file
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(path.clone());
        Ok(Some(path))
    }

    /// Whether setup is open (a token is armed).
    pub fn armed(&self) -> bool {
        self.hash
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some()
    }

    /// Whether `token` is the armed one.
    pub fn matches(&self, token: &str) -> bool {
        self.hash
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .is_some_and(|h| same_token(h, &token_hash(token.trim())))
    }

    /// Disarms the token and removes its file (setup done).
    pub fn consume(&self) {
        *self
            .hash
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        if let Some(p) = self
            .file
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_null_passes_only_with_sec_fetch_site_same_origin() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            h.insert(header::HOST, "127.0.0.1:8443".parse().unwrap());
            for (k, v) in pairs {
                h.insert(*k, v.parse().unwrap());
            }
            h
        };
        // What Chromium sends for a form POST on a page with `Referrer-Policy: no-referrer`.
        assert!(same_origin(&headers(&[
            ("origin", "null"),
            ("sec-fetch-site", "same-origin")
        ])));
        assert!(!same_origin(&headers(&[("origin", "null")])));
        assert!(!same_origin(&headers(&[
            ("origin", "null"),
            ("sec-fetch-site", "cross-site")
        ])));
        assert!(same_origin(&headers(&[(
            "origin",
            "https://127.0.0.1:8443"
        )])));
        assert!(!same_origin(&headers(&[(
            "origin",
            "https://evil.example"
        )])));
        assert!(!same_origin(&headers(&[
            ("origin", "https://127.0.0.1:8443"),
            ("sec-fetch-site", "same-site")
        ])));
    }

    #[test]
    fn argon2id_hashes_verify_and_carry_their_parameters() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify_password("correct horse battery", &h));
        assert!(!verify_password("correct horse batterY", &h));
        assert!(!verify_password("x", "not a hash"));
        assert_ne!(h, hash_password("correct horse battery").unwrap(), "salted");
    }

    #[test]
    fn policy_refuses_short_repeated_and_username_passwords() {
        assert!(check_password_policy("short", "a").is_err());
        assert!(check_password_policy("aaaaaaaaaaaaaaa", "a").is_err());
        assert!(check_password_policy("administrator1", "Administrator1").is_err());
        check_password_policy("a long enough pass", "admin").unwrap();
        assert!(check_username("a b").is_err());
        check_username("jane.doe@rad").unwrap();
    }

    #[test]
    fn tokens_are_256_bit_and_csrf_differs_from_the_session_token() {
        let t = new_token();
        assert_eq!(t.len(), 64);
        assert_ne!(t, new_token());
        assert_ne!(csrf_for(&t), t);
        assert_ne!(csrf_for(&t), token_hash(&t));
        assert!(same_token(&t, &t.clone()));
        assert!(!same_token(&t, &new_token()));
    }

    #[test]
    fn cookies_are_found_among_several() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            "a=1; __Host-vertebra-session=abc".parse().unwrap(),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&h, PRE_CSRF_COOKIE), None);
        let c = session_cookie("t", 60);
        for attr in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
            assert!(c.contains(attr), "{c}");
        }
    }
}
