//! The admin web console over real HTTPS: a hyper client on rustls that pins the console's
//! certificate talks to the console started as `vertebrad serve` starts it, on SQLite and on
//! PostgreSQL (`support`). Covered: every route of the route table without a session, for
//! each role and without a CSRF token; first-run setup with the token file; login, forced
//! password change, logout; lockout; argon2id hashes; cookie attributes; security headers;
//! destination create + C-ECHO against DCMTK's `storescp`; peers added, edited and disabled
//! in the console admitting and refusing DCMTK's `echoscu` at a running node without restart;
//! retention settings; bundle upload (tampered refused
//! with the reason, the committed demo bundle accepted); series pages, requeue and delete;
//! audit entries and the CSV export; `/metrics` and `/healthz`.
//!
//! Needs DCMTK (`/usr/bin/storescp`, `scripts/provision-system.sh`) for the C-ECHO test; a
//! missing tool fails that test with the hint.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use vertebrad::config::Config;
use vertebrad::store::{AuditOutcome, NewInstance, NewSeries, NewStudy, Role, Store};
use vertebrad::web::routes::{Access, route_table};
use vertebrad::web::{
    ConsoleOptions, DicomStatus, EngineStatus, LoadedEngine, RunningConsole, SeriesLink,
    ServiceStatus, auth,
};

const PASSWORD: &str = "a good long password";

/// Accepts exactly one certificate (the console's), with real signature checks.
#[derive(Debug)]
struct Pinned {
    der: Vec<u8>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.der.as_slice() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General("not the pinned certificate".into()))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// An HTTP response, body as text (lossy) and bytes.
#[derive(Debug)]
struct Resp {
    status: u16,
    headers: hyper::HeaderMap,
    body: String,
}

impl Resp {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
    fn location(&self) -> &str {
        self.header("location")
    }
}

/// A browser-like client: cookie jar, same-origin headers, one TLS connection per request.
#[derive(Clone)]
struct Client {
    addr: SocketAddr,
    tls: tokio_rustls::TlsConnector,
    cookies: HashMap<String, String>,
}

impl Client {
    fn new(addr: SocketAddr, cert_pem: &Path) -> Self {
        let der = CertificateDer::pem_file_iter(cert_pem)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .as_ref()
            .to_vec();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned { der, provider }))
            .with_no_client_auth();
        Self {
            addr,
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            cookies: HashMap::new(),
        }
    }

    async fn send(
        &mut self,
        method: &str,
        path: &str,
        extra: &[(&str, String)],
        body: Option<(&str, Vec<u8>)>,
    ) -> Resp {
        let tcp = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let tls = self.tls.connect(name, tcp).await.expect("TLS handshake");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn);
        let host = format!("127.0.0.1:{}", self.addr.port());
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", &host);
        let overridden = |name: &str| extra.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
        if !overridden("sec-fetch-site") {
            req = req.header("sec-fetch-site", "same-origin");
        }
        if method != "GET" && !overridden("origin") {
            req = req.header("origin", format!("https://{host}"));
        }
        if !self.cookies.is_empty() {
            let c: Vec<String> = self
                .cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            req = req.header("cookie", c.join("; "));
        }
        for (k, v) in extra {
            req = req.header(*k, v);
        }
        let bytes = match body {
            Some((ct, b)) => {
                req = req.header("content-type", ct);
                b
            }
            None => Vec::new(),
        };
        let res = sender
            .send_request(req.body(Full::new(Bytes::from(bytes))).unwrap())
            .await
            .unwrap();
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        for sc in headers.get_all("set-cookie") {
            let sc = sc.to_str().unwrap();
            let (kv, attrs) = sc.split_once(';').unwrap_or((sc, ""));
            let (k, v) = kv.split_once('=').unwrap();
            if attrs.contains("Max-Age=0") {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.to_owned(), v.to_owned());
            }
        }
        let body = res.into_body().collect().await.unwrap().to_bytes();
        Resp {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    async fn get(&mut self, path: &str) -> Resp {
        self.send("GET", path, &[], None).await
    }

    async fn post_form(&mut self, path: &str, fields: &[(&str, &str)]) -> Resp {
        let body = serde_urlencoded::to_string(fields).unwrap();
        self.send(
            "POST",
            path,
            &[],
            Some(("application/x-www-form-urlencoded", body.into_bytes())),
        )
        .await
    }

    /// Posts with the CSRF token of the current page state (session or pre-session).
    async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Resp {
        let csrf = self.csrf().await;
        let mut all = vec![("csrf", csrf.as_str())];
        all.extend_from_slice(fields);
        self.post_form(path, &all).await
    }

    /// The CSRF token a page served to this client carries.
    async fn csrf(&mut self) -> String {
        let page = if self.cookies.contains_key(auth::SESSION_COOKIE) {
            self.get("/password").await
        } else {
            self.get("/login").await
        };
        extract_csrf(&page.body).expect("a csrf field on the page")
    }

    async fn login(&mut self, user: &str, password: &str) -> Resp {
        let csrf = extract_csrf(&self.get("/login").await.body).unwrap();
        self.post_form(
            "/login",
            &[("csrf", &csrf), ("username", user), ("password", password)],
        )
        .await
    }
}

fn extract_csrf(html: &str) -> Option<String> {
    let i = html.find("name=\"csrf\" value=\"")?;
    let rest = &html[i + 19..];
    Some(rest[..rest.find('"')?].to_owned())
}

/// A console on `store` with a fresh state directory.
struct Console {
    running: Option<RunningConsole>,
    store: Store,
    state_dir: tempfile::TempDir,
    status: ServiceStatus,
}

impl Console {
    async fn start(store: Store, tweak: impl FnOnce(&mut Config)) -> Self {
        let state_dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.web.bind = "127.0.0.1".parse().unwrap();
        config.web.port = 0;
        config.inference.trusted_keys = support::repo().join("keys");
        config.inference.bundle = support::repo().join("models/demo-bundle");
        tweak(&mut config);
        let status = ServiceStatus::default();
        let console = RunningConsole::start(
            ConsoleOptions {
                config,
                state_dir: state_dir.path().to_path_buf(),
                status: status.clone(),
                series_links: vec![viewer_hook],
            },
            store.clone(),
        )
        .await
        .unwrap();
        Self {
            running: Some(console),
            store,
            state_dir,
            status,
        }
    }

    fn client(&self) -> Client {
        let c = self.running.as_ref().unwrap();
        Client::new(
            c.local_addr(),
            &self.state_dir.path().join("web-tls/cert.pem"),
        )
    }

    async fn user(&self, name: &str, role: Role) -> Client {
        let hash = auth::hash_password(PASSWORD).unwrap();
        self.store.create_user(name, &hash, role).await.unwrap();
        let mut c = self.client();
        let r = c.login(name, PASSWORD).await;
        assert_eq!(r.status, 303, "login of {name}: {}", r.body);
        assert_eq!(r.location(), "/");
        c
    }

    async fn audit_actions(&self) -> Vec<(String, String, AuditOutcome)> {
        self.store
            .recent_audit_events(1000)
            .await
            .unwrap()
            .into_iter()
            .map(|e| (e.event.actor, e.event.action, e.event.outcome))
            .collect()
    }

    async fn stop(mut self) {
        self.running.take().unwrap().stop().await;
    }
}

fn viewer_hook(series_id: i64, has_result: bool) -> Vec<SeriesLink> {
    vec![SeriesLink {
        href: format!("/series/{series_id}/viewer-test"),
        label: format!("Viewer hook ({has_result})"),
    }]
}

fn rank(r: Role) -> u8 {
    auth::rank(r)
}

#[tokio::test]
async fn every_route_requires_login_role_and_csrf() {
    let h = support::sqlite().await;
    let console = Console::start(h.store.clone(), |_| {}).await;
    let mut admin = console.user("admin1", Role::Admin).await;
    let mut roles = vec![
        (Role::Admin, admin.clone()),
        (
            Role::Operator,
            console.user("operator1", Role::Operator).await,
        ),
        (Role::Viewer, console.user("viewer1", Role::Viewer).await),
    ];
    let mut anonymous = console.client();
    let table = route_table();
    assert!(
        table.len() >= 30,
        "the route table has {} routes",
        table.len()
    );
    for route in &table {
        let path = route.path.replace("{id}", "999999");
        let required = match route.access {
            Access::Public => {
                let r = anonymous.send(route.method, &path, &[], None).await;
                assert_ne!(r.status, 303, "{route:?} is public: {}", r.location());
                continue;
            }
            Access::Role(r) | Access::RoleDuringPasswordChange(r) => r,
        };
        // No session: to the login page, whatever the method.
        let r = anonymous.send(route.method, &path, &[], None).await;
        assert_eq!(r.status, 303, "{route:?} without a session");
        assert_eq!(r.location(), "/login", "{route:?}");
        for (role, client) in &mut roles {
            if rank(*role) < rank(required) {
                let r = if route.method == "GET" {
                    client.get(&path).await
                } else {
                    client.post(&path, &[]).await
                };
                assert_eq!(r.status, 403, "{route:?} as {role:?}");
            } else if route.method == "POST" {
                // Allowed role, but no token / a wrong token / a cross-site request.
                let r = client.post_form(&path, &[("x", "1")]).await;
                assert_eq!(r.status, 403, "{route:?} as {role:?} without a CSRF token");
                let r = client.post_form(&path, &[("csrf", &"0".repeat(64))]).await;
                assert_eq!(
                    r.status, 403,
                    "{route:?} as {role:?} with a wrong CSRF token"
                );
                let csrf = client.csrf().await;
                let r = client
                    .send(
                        "POST",
                        &path,
                        &[("sec-fetch-site", "cross-site".to_owned())],
                        Some((
                            "application/x-www-form-urlencoded",
                            format!("csrf={csrf}").into_bytes(),
                        )),
                    )
                    .await;
                assert_eq!(r.status, 403, "{route:?} as {role:?} cross-site");
                let r = client
                    .send(
                        "POST",
                        &path,
                        &[("origin", "https://evil.example".to_owned())],
                        Some((
                            "application/x-www-form-urlencoded",
                            format!("csrf={csrf}").into_bytes(),
                        )),
                    )
                    .await;
                assert_eq!(r.status, 403, "{route:?} as {role:?} from another origin");
            }
        }
    }
    // The session survived the refused logouts; a real one works.
    assert_eq!(admin.get("/").await.status, 200);
    let denied = console
        .audit_actions()
        .await
        .iter()
        .filter(|(_, a, o)| a == "access" && *o == AuditOutcome::Denied)
        .count();
    assert!(denied > 10, "role refusals are audited ({denied})");
    console.stop().await;
}

async fn first_run(store: Store) {
    let console = Console::start(store, |_| {}).await;
    let token_file = console.state_dir.path().join(auth::SETUP_TOKEN_FILE);
    let meta = std::fs::metadata(&token_file).expect("setup token file written");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let token = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_owned();
    assert_eq!(token.len(), 64);
    let mut c = console.client();
    let r = c.get("/").await;
    assert_eq!((r.status, r.location()), (303, "/login"));
    let page = c.get("/login").await;
    assert!(page.body.contains("/setup"), "login offers setup");
    let setup = c.get("/setup").await;
    assert_eq!(setup.status, 200);
    let csrf = extract_csrf(&setup.body).unwrap();
    let form = |tok: &str, pw: &str| {
        vec![
            ("csrf".to_owned(), csrf.clone()),
            ("token".to_owned(), tok.to_owned()),
            ("username".to_owned(), "chief".to_owned()),
            ("password".to_owned(), pw.to_owned()),
            ("confirm".to_owned(), pw.to_owned()),
        ]
    };
    let post = |c: &mut Client, f: Vec<(String, String)>| {
        let mut c = c.clone();
        async move {
            let body = serde_urlencoded::to_string(&f).unwrap();
            let r = c
                .send(
                    "POST",
                    "/setup",
                    &[],
                    Some(("application/x-www-form-urlencoded", body.into_bytes())),
                )
                .await;
            (c, r)
        }
    };
    let (_, r) = post(&mut c, form(&"f".repeat(64), PASSWORD)).await;
    assert_eq!(r.status, 403, "wrong token");
    assert!(r.body.contains("Wrong setup token"));
    let (_, r) = post(&mut c, form(&token, "short")).await;
    assert_eq!(r.status, 422, "password policy");
    assert!(r.body.contains("at least 12"));
    let (c2, r) = post(&mut c, form(&token, PASSWORD)).await;
    assert_eq!((r.status, r.location()), (303, "/login"), "{}", r.body);
    c = c2;
    assert!(!token_file.exists(), "the token is single-use");
    assert_eq!(c.get("/setup").await.status, 404);
    let (_, again) = post(&mut c, form(&token, PASSWORD)).await;
    assert_eq!(again.status, 404, "setup is closed");
    let stored = console.store.login_user("chief").await.unwrap().unwrap();
    assert!(
        stored
            .password_hash
            .starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{}",
        stored.password_hash
    );
    assert!(stored.user.must_change_password);
    assert_eq!(stored.user.role, Role::Admin);

    // First login: forced to change the password before anything else.
    let r = c.login("chief", PASSWORD).await;
    assert_eq!((r.status, r.location()), (303, "/password"));
    let set_cookie = r.header("set-cookie").to_owned();
    for attr in [
        "__Host-vertebra-session=",
        "Secure",
        "HttpOnly",
        "SameSite=Strict",
        "Path=/",
    ] {
        assert!(set_cookie.contains(attr), "{set_cookie}");
    }
    let token = c.cookies[auth::SESSION_COOKIE].clone();
    assert_eq!(token.len(), 64);
    let r = c.get("/").await;
    assert_eq!((r.status, r.location()), (303, "/password"));
    let r = c.get("/series").await;
    assert_eq!((r.status, r.location()), (303, "/password"));
    let r = c
        .post(
            "/password",
            &[
                ("current", PASSWORD),
                ("password", "short"),
                ("confirm", "short"),
            ],
        )
        .await;
    assert_eq!(r.status, 422);
    let r = c
        .post(
            "/password",
            &[
                ("current", PASSWORD),
                ("password", "another good passphrase"),
                ("confirm", "another good passphrase"),
            ],
        )
        .await;
    assert_eq!((r.status, r.location()), (303, "/"), "{}", r.body);
    assert_ne!(
        c.cookies[auth::SESSION_COOKIE],
        token,
        "a new session after the change"
    );
    let r = c.get("/").await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("Dashboard"));
    assert!(
        !console
            .store
            .login_user("chief")
            .await
            .unwrap()
            .unwrap()
            .user
            .must_change_password
    );

    let r = c.post("/logout", &[]).await;
    assert_eq!((r.status, r.location()), (303, "/login"));
    assert_eq!(c.get("/").await.location(), "/login");
    let actions = console.audit_actions().await;
    for (action, outcome) in [
        ("setup", AuditOutcome::Denied),
        ("setup", AuditOutcome::Success),
        ("login", AuditOutcome::Success),
        ("password.change", AuditOutcome::Success),
        ("logout", AuditOutcome::Success),
    ] {
        assert!(
            actions.iter().any(|(_, a, o)| a == action && *o == outcome),
            "audit {action} {outcome:?} in {actions:?}"
        );
    }
    console.stop().await;
}

#[tokio::test]
async fn first_run_setup_login_forced_change_logout_sqlite() {
    first_run(support::sqlite().await.store).await;
}

#[tokio::test]
async fn first_run_setup_login_forced_change_logout_postgres() {
    first_run(support::postgres().await.store).await;
}

#[tokio::test]
async fn lockout_after_repeated_failures_then_expiry() {
    let h = support::postgres().await;
    let console = Console::start(h.store.clone(), |c| {
        c.web.lockout_threshold = 3;
        c.web.lockout_minutes = 10;
    })
    .await;
    console
        .store
        .create_user(
            "tech",
            &auth::hash_password(PASSWORD).unwrap(),
            Role::Operator,
        )
        .await
        .unwrap();
    let mut c = console.client();
    for _ in 0..3 {
        let r = c.login("tech", "wrong password!!").await;
        assert_eq!(r.status, 401);
    }
    let r = c.login("tech", PASSWORD).await;
    assert_eq!(r.status, 401, "locked: even the right password is refused");
    assert!(r.body.contains("Login refused"));
    let unknown = c.login("nobody", PASSWORD).await;
    assert_eq!(
        unknown.body.contains("Login refused"),
        r.body.contains("Login refused")
    );
    let actions = console.audit_actions().await;
    assert!(
        actions
            .iter()
            .any(|(u, a, _)| u == "tech" && a == "login.lockout")
    );
    assert!(
        actions
            .iter()
            .any(|(u, a, o)| u == "tech" && a == "login.locked" && *o == AuditOutcome::Denied)
    );
    h.clock.advance(Duration::from_secs(11 * 60));
    let r = c.login("tech", PASSWORD).await;
    assert_eq!(
        (r.status, r.location()),
        (303, "/"),
        "unlocked after the lock time"
    );
    console.stop().await;
}

#[tokio::test]
async fn security_headers_on_every_response() {
    let h = support::sqlite().await;
    let console = Console::start(h.store.clone(), |_| {}).await;
    let mut viewer = console.user("v", Role::Viewer).await;
    let mut anon = console.client();
    let mut responses = vec![
        ("login", anon.get("/login").await),
        ("anonymous redirect", anon.get("/series").await),
        ("healthz", anon.get("/healthz").await),
        ("metrics", anon.get("/metrics").await),
        ("404", anon.get("/no/such/page").await),
        ("css", anon.get("/static/console.css").await),
        ("js", anon.get("/static/console.js").await),
    ];
    responses.push(("dashboard", viewer.get("/").await));
    responses.push(("403", viewer.get("/users").await));
    responses.push(("csrf refusal", viewer.post_form("/logout", &[]).await));
    for (what, r) in &responses {
        assert!(
            r.header("strict-transport-security")
                .starts_with("max-age="),
            "{what}"
        );
        let csp = r.header("content-security-policy");
        for d in [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(d), "{what}: {csp}");
        }
        assert!(!csp.contains("unsafe-inline"), "{what}: {csp}");
        assert_eq!(r.header("x-content-type-options"), "nosniff", "{what}");
        assert_eq!(r.header("referrer-policy"), "no-referrer", "{what}");
        if !what.starts_with("css") && *what != "js" {
            assert_eq!(r.header("cache-control"), "no-store", "{what}");
        }
    }
    // No inline script or style on the pages.
    let dash = &responses[7].1.body;
    assert!(dash.contains("<script src=\"/static/console.js\""));
    assert!(!dash.contains("style="), "inline style attribute");
    assert!(!dash.contains("<style"), "inline style element");
    assert!(!dash.contains("<script>"), "inline script");
    console.stop().await;
}

/// A DCMTK storescp on a free loopback port.
struct Storescp(std::process::Child, u16);

impl Storescp {
    async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir();
        let mut scp = Self(
            std::process::Command::new("/usr/bin/storescp")
            .args(["-aet", "PACS", "-od"])
            .arg(&dir)
            .arg(port.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "starting /usr/bin/storescp (install DCMTK: scripts/provision-system.sh): {e}"
                )
            }),
            port,
        );
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return scp;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = scp.0.kill();
        let _ = scp.0.wait();
        panic!("storescp did not listen on {port}");
    }
}

impl Drop for Storescp {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn destination_create_validate_and_echo_against_storescp() {
    let h = support::sqlite().await;
    let console = Console::start(h.store.clone(), |_| {}).await;
    let mut op = console.user("op", Role::Operator).await;
    let scp = Storescp::start().await;
    let port = scp.1.to_string();
    let bad = op
        .post(
            "/destinations",
            &[
                ("name", "bad"),
                ("ae_title", "AN_AE_TITLE_TOO_LONG"),
                ("host", "127.0.0.1"),
                ("port", "104"),
                ("enabled", "1"),
            ],
        )
        .await;
    assert_eq!(bad.status, 422);
    assert!(bad.body.contains("1-16 printable ASCII"), "{}", bad.body);
    let bad = op
        .post(
            "/destinations",
            &[
                ("name", "bad"),
                ("ae_title", "PACS"),
                ("host", "bad host!"),
                ("port", "104"),
            ],
        )
        .await;
    assert_eq!(bad.status, 422);
    let bad = op
        .post(
            "/destinations",
            &[
                ("name", "bad"),
                ("ae_title", "PACS"),
                ("host", "pacs"),
                ("port", "70000"),
            ],
        )
        .await;
    assert_eq!(bad.status, 422);
    let r = op
        .post(
            "/destinations",
            &[
                ("name", "Main PACS"),
                ("ae_title", "PACS"),
                ("host", "127.0.0.1"),
                ("port", &port),
                ("enabled", "1"),
            ],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let id: i64 = r.location().rsplit('/').next().unwrap().parse().unwrap();
    let d = console.store.destination(id).await.unwrap().unwrap();
    assert_eq!(
        (d.ae_title.as_str(), d.port, d.enabled, d.tls),
        ("PACS", scp.1, true, false)
    );
    let echo = op.post(&format!("/destinations/{id}/echo"), &[]).await;
    assert_eq!(echo.status, 200, "{}", echo.body);
    assert!(
        echo.body.contains("C-ECHO succeeded: status 0x0000"),
        "{}",
        echo.body
    );
    // Nothing listens there any more: the failure is shown with its reason.
    drop(scp);
    let echo = op.post(&format!("/destinations/{id}/echo"), &[]).await;
    assert_eq!(echo.status, 502);
    assert!(echo.body.contains("C-ECHO failed"), "{}", echo.body);
    let r = op
        .post(&format!("/destinations/{id}/enabled"), &[("enabled", "0")])
        .await;
    assert_eq!(r.status, 303);
    assert!(
        !console
            .store
            .destination(id)
            .await
            .unwrap()
            .unwrap()
            .enabled
    );
    let list = op.get("/destinations").await;
    assert!(list.body.contains("Main PACS") && list.body.contains("disabled"));
    let actions = console.audit_actions().await;
    for (a, o) in [
        ("destination.create", AuditOutcome::Success),
        ("destination.echo", AuditOutcome::Success),
        ("destination.echo", AuditOutcome::Failure),
        ("destination.disable", AuditOutcome::Success),
    ] {
        assert!(
            actions
                .iter()
                .any(|(u, x, y)| u == "op" && x == a && *y == o),
            "{a} {o:?}"
        );
    }
    console.stop().await;
}

/// A multipart body: the CSRF field first, then the file.
fn multipart(csrf: &str, file: &[u8]) -> (String, Vec<u8>) {
    let boundary = "----vertebra-test-boundary-7d3f";
    let mut body = Vec::new();
    body.extend_from_slice(
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n{csrf}\r\n")
            .as_bytes(),
    );
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"bundle\"; filename=\"b.tar\"\r\n\
             Content-Type: application/x-tar\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

#[tokio::test]
async fn bundle_upload_refuses_tampered_accepts_demo_and_rolls_back() {
    let h = support::sqlite().await;
    let console = Console::start(h.store.clone(), |_| {}).await;
    let mut admin = console.user("admin", Role::Admin).await;
    let work = tempfile::tempdir().unwrap();
    let demo = support::repo().join("models/demo-bundle");
    let good_tar = work.path().join("good.tar");
    vertebra_export::bundle::write_tar(&demo, &good_tar).unwrap();
    let tampered_dir = work.path().join("tampered");
    std::fs::create_dir(&tampered_dir).unwrap();
    for e in std::fs::read_dir(&demo).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), tampered_dir.join(e.file_name())).unwrap();
    }
    let manifest = tampered_dir.join("manifest.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(
        &manifest,
        text.replacen("window_overlap = 0.5", "window_overlap = 0.25", 1),
    )
    .unwrap();
    let bad_tar = work.path().join("bad.tar");
    vertebra_export::bundle::write_tar(&tampered_dir, &bad_tar).unwrap();

    let csrf = admin.csrf().await;
    let (ct, body) = multipart(&csrf, &std::fs::read(&bad_tar).unwrap());
    let r = admin
        .send("POST", "/model/upload", &[], Some((&ct, body)))
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains("The bundle was refused"), "{}", r.body);
    assert!(r.body.contains("signature does not verify"), "{}", r.body);
    assert!(console.store.list_bundles().await.unwrap().is_empty());
    // No token in the form: refused before anything is stored.
    let (ct, body) = multipart(&"0".repeat(64), b"x");
    let r = admin
        .send("POST", "/model/upload", &[], Some((&ct, body)))
        .await;
    assert_eq!(r.status, 403);

    let (ct, body) = multipart(&csrf, &std::fs::read(&good_tar).unwrap());
    let r = admin
        .send("POST", "/model/upload", &[], Some((&ct, body)))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("passed verification"), "{}", r.body);
    assert!(r.body.contains("DEMO key"), "{}", r.body);
    let bundles = console.store.list_bundles().await.unwrap();
    assert_eq!(bundles.len(), 1);
    assert!(bundles[0].active && bundles[0].demo);
    assert!(Path::new(&bundles[0].dir).join("model.onnx").is_file());
    let dir = vertebrad::web::pages::model::active_bundle_dir(&console.store)
        .await
        .unwrap();
    assert_eq!(dir, Some(PathBuf::from(&bundles[0].dir)));
    let page = admin.get("/model").await;
    assert!(
        page.body.contains("vertebraformer-cpu-demo"),
        "{}",
        page.body
    );
    // Back to the configured bundle, then roll forward to the upload again.
    assert_eq!(admin.post("/model/configured", &[]).await.status, 303);
    assert_eq!(
        vertebrad::web::pages::model::active_bundle_dir(&console.store)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        admin
            .post(&format!("/model/{}/activate", bundles[0].id), &[])
            .await
            .status,
        303
    );
    assert!(console.store.active_bundle().await.unwrap().is_some());
    let actions = console.audit_actions().await;
    assert!(
        actions
            .iter()
            .any(|(_, a, o)| a == "model.upload" && *o == AuditOutcome::Failure)
    );
    assert!(
        actions
            .iter()
            .any(|(_, a, o)| a == "model.upload" && *o == AuditOutcome::Success)
    );
    assert!(
        actions
            .iter()
            .filter(|(_, a, _)| a == "model.activate")
            .count()
            == 2
    );
    console.stop().await;
}

async fn index_series(store: &Store, n: u32, dir: &Path) -> i64 {
    let mut series_id = 0;
    for i in 0..n {
        let path = dir.join(format!("{i}.dcm"));
        std::fs::write(&path, b"DICM").unwrap();
        series_id = store
            .index_instance(&NewInstance {
                study: NewStudy {
                    study_uid: "2.25.1001".into(),
                    patient_name: Some("Doe^Jane".into()),
                    patient_id: Some("PID-4711".into()),
                    study_date: Some("20240131".into()),
                },
                series: NewSeries {
                    series_uid: "2.25.1001.1".into(),
                    modality: "CT".into(),
                },
                sop_instance_uid: format!("2.25.1001.1.{i}"),
                sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
                transfer_syntax: "1.2.840.10008.1.2.1".into(),
                spool_path: path.display().to_string(),
                size_bytes: 4,
                sha256: "00".repeat(32),
                received_at_ms: support::T0_MS,
                calling_ae: "CT_SCANNER".into(),
                peer_addr: "127.0.0.1:1".into(),
            })
            .await
            .unwrap()
            .series_id;
    }
    series_id
}

#[tokio::test]
async fn series_pages_requeue_delete_and_audit_csv() {
    let h = support::postgres().await;
    let console = Console::start(h.store.clone(), |_| {}).await;
    let spool = tempfile::tempdir().unwrap();
    let id = index_series(&console.store, 3, spool.path()).await;
    let mut viewer = console.user("viewer", Role::Viewer).await;
    let mut op = console.user("operator", Role::Operator).await;
    let mut admin = console.user("admin", Role::Admin).await;
    let list = viewer
        .get("/series?modality=ct&from=2024-01-01&to=2024-12-31&ae=CT_SCANNER")
        .await;
    assert_eq!(list.status, 200);
    assert!(
        list.body.contains(&format!("href=\"/series/{id}\"")),
        "{}",
        list.body
    );
    assert!(list.body.contains("Doe^Jane"));
    let none = viewer.get("/series?from=2025-01-01").await;
    assert!(!none.body.contains(&format!("href=\"/series/{id}\"")));
    assert_eq!(viewer.get("/series?from=31.01.2024").await.status, 422);
    let page = viewer.get(&format!("/series/{id}")).await;
    assert!(page.body.contains("2.25.1001.1") && page.body.contains("PID-4711"));
    assert!(
        page.body.contains(&format!("/series/{id}/viewer-test")),
        "the link hook renders"
    );
    assert!(
        !page.body.contains("Delete series"),
        "no delete button for a viewer"
    );
    let r = op.post(&format!("/series/{id}/requeue"), &[]).await;
    assert_eq!(r.status, 303, "{}", r.body);
    let d = console.store.series_detail(id).await.unwrap().unwrap();
    assert_eq!(d.jobs.len(), 1);
    assert_eq!(d.jobs[0].state, "queued");
    let again = op.post(&format!("/series/{id}/requeue"), &[]).await;
    assert_eq!(again.status, 422, "already queued");
    let filtered = viewer.get("/series?state=queued").await;
    assert!(filtered.body.contains(&format!("href=\"/series/{id}\"")));
    let r = admin.post(&format!("/series/{id}/delete"), &[]).await;
    assert_eq!((r.status, r.location()), (303, "/series"));
    assert!(console.store.series_detail(id).await.unwrap().is_none());
    assert_eq!(
        std::fs::read_dir(spool.path()).unwrap().count(),
        0,
        "spool files removed"
    );
    assert_eq!(admin.get(&format!("/series/{id}")).await.status, 404);

    // A failed login with a formula as user name lands in the audit log; the CSV neutralises it.
    let mut anon = console.client();
    anon.login("=HYPERLINK(\"http://x\")", "whatever password")
        .await;
    let audit = admin.get("/audit?action=series").await;
    assert!(audit.body.contains("series.requeue") && audit.body.contains("series.delete"));
    assert!(!audit.body.contains(">login<"), "filtered by action prefix");
    let csv = admin.get("/audit.csv").await;
    assert_eq!(csv.status, 200);
    assert!(csv.header("content-type").starts_with("text/csv"));
    let mut lines = csv.body.lines();
    assert_eq!(
        lines.next(),
        Some("id,time_utc,actor,action,target,peer,outcome")
    );
    assert!(
        csv.body.contains("\"'=HYPERLINK(\"\"http://x\"\")\""),
        "{}",
        csv.body
    );
    assert!(
        !csv.body.contains(",\"=HYPERLINK"),
        "formula not neutralised"
    );
    assert!(csv.body.contains("\"series.delete\""));
    assert!(
        !csv.body.contains("Doe^Jane") && !csv.body.contains("PID-4711"),
        "no PHI in the audit log"
    );
    console.stop().await;
}

#[tokio::test]
async fn users_settings_and_deliveries_pages() {
    let h = support::sqlite().await;
    let console = Console::start(h.store.clone(), |_| {}).await;
    let mut admin = console.user("boss", Role::Admin).await;
    let r = admin
        .post(
            "/users",
            &[
                ("username", "newbie"),
                ("role", "operator"),
                ("password", "short"),
            ],
        )
        .await;
    assert_eq!(r.status, 422);
    let r = admin
        .post(
            "/users",
            &[
                ("username", "newbie"),
                ("role", "operator"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let newbie = console.store.login_user("newbie").await.unwrap().unwrap();
    assert!(newbie.user.must_change_password);
    assert_eq!(newbie.user.role, Role::Operator);
    let mut n = console.client();
    assert_eq!(n.login("newbie", PASSWORD).await.location(), "/password");
    let id = newbie.user.id;
    assert_eq!(
        admin
            .post(&format!("/users/{id}/role"), &[("role", "viewer")])
            .await
            .status,
        303
    );
    assert_eq!(
        n.get("/password").await.location(),
        "/login",
        "role change ends sessions"
    );
    assert_eq!(
        admin
            .post(&format!("/users/{id}/disabled"), &[("disabled", "1")])
            .await
            .status,
        303
    );
    assert_eq!(n.login("newbie", PASSWORD).await.status, 401, "disabled");
    let me = console
        .store
        .login_user("boss")
        .await
        .unwrap()
        .unwrap()
        .user
        .id;
    assert_eq!(
        admin
            .post(&format!("/users/{me}/disabled"), &[("disabled", "1")])
            .await
            .status,
        422
    );

    let r = admin
        .post("/settings", &[("dicom.completion.stable_after_s", "0.1")])
        .await;
    assert_eq!(r.status, 422);
    assert!(r.body.contains("must lie in"), "{}", r.body);
    let r = admin
        .post(
            "/settings",
            &[
                ("dicom.completion.stable_after_s", "42"),
                ("forward.max_attempts", "9"),
            ],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let mut cfg = Config::default();
    let applied = vertebrad::web::settings::apply_stored(&console.store, &mut cfg)
        .await
        .unwrap();
    assert_eq!(applied.len(), 2);
    assert_eq!(cfg.dicom.completion.stable_after_s, 42.0);
    assert_eq!(cfg.forward.max_attempts, 9);
    let page = admin.get("/settings").await;
    assert!(page.body.contains("next restart") || page.body.contains("restarts"));

    assert_eq!(admin.get("/deliveries?state=failed").await.status, 200);
    assert_eq!(admin.get("/deliveries?state=bogus").await.status, 422);
    assert_eq!(admin.get("/peers").await.status, 200);
    let actions = console.audit_actions().await;
    for a in [
        "user.create",
        "user.role",
        "user.disable",
        "settings.change",
    ] {
        assert!(actions.iter().any(|(u, x, _)| u == "boss" && x == a), "{a}");
    }
    console.stop().await;
}

/// Checks the Prometheus text exposition format line by line.
fn parse_prometheus(text: &str) -> HashMap<String, f64> {
    let mut samples = HashMap::new();
    let mut typed = std::collections::HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split(' ');
            let name = it.next().unwrap();
            let kind = it.next().unwrap();
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            assert!(typed.insert(name.to_owned()), "TYPE twice: {line}");
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        assert!(
            !line.is_empty() && !line.starts_with('#'),
            "unexpected line {line:?}"
        );
        let (key, value) = line.rsplit_once(' ').unwrap();
        let v: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("value of {line:?}"));
        let name = key.split('{').next().unwrap();
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "{line}"
        );
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| typed.contains(*f)))
            .unwrap_or(name);
        assert!(typed.contains(family), "sample before its TYPE: {line}");
        if let Some(labels) = key.strip_prefix(name) {
            if !labels.is_empty() {
                assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
            }
        }
        samples.insert(key.to_owned(), v);
    }
    samples
}

#[tokio::test]
async fn healthz_and_metrics() {
    let h = support::sqlite().await;
    let console = Console::start(h.store.clone(), |_| {}).await;
    let mut anon = console.client();
    let r = anon.get("/healthz").await;
    assert_eq!(r.status, 503);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["store"], true);
    assert_eq!(v["dicom_listener"], false);
    assert_eq!(v["engine_loaded"], false);
    console.status.update(|s| {
        s.dicom = Some(DicomStatus {
            addr: "127.0.0.1:104".parse().unwrap(),
            ae_title: "VERTEBRAD".into(),
            tls_port: None,
        });
        s.engine = EngineStatus::Loaded(Box::new(LoadedEngine {
            bundle_dir: "/b".into(),
            model_name: "m".into(),
            manifest_sha256: "0".repeat(64),
            key_name: "k".into(),
            demo: false,
            provider: "cpu".into(),
            provider_log: Vec::new(),
            created_utc: String::new(),
            git_commit: String::new(),
            metrics: Vec::new(),
            manifest_text: String::new(),
        }));
    });
    let r = anon.get("/healthz").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["status"], "ok");
    assert_eq!(v["execution_provider"], "cpu");
    assert_eq!(r.header("content-type"), "application/json");

    vertebrad::metrics::global().instance_stored(1234);
    let r = anon.get("/metrics").await;
    assert_eq!(r.status, 200, "loopback is allowed by default");
    assert!(
        r.header("content-type")
            .starts_with("text/plain; version=0.0.4")
    );
    let samples = parse_prometheus(&r.body);
    assert!(samples["vertebra_ingest_bytes_total"] >= 1234.0);
    assert_eq!(samples["vertebra_queue_jobs{state=\"queued\"}"], 0.0);
    assert_eq!(samples["vertebra_engine_loaded"], 1.0);
    assert!(samples.contains_key("vertebra_job_latency_seconds_bucket{le=\"+Inf\"}"));
    assert!(samples.contains_key("vertebra_inference_seconds_count"));
    assert!(samples.contains_key("vertebra_delivery_failures_total"));
    assert!(samples.contains_key("vertebra_associations_current"));
    console.stop().await;

    // With a token and no allowed network: the token (or a session) is needed.
    let h = support::sqlite().await;
    let token = "0123456789abcdef-metrics";
    let console = Console::start(h.store.clone(), |c| {
        c.web.metrics_allow = Vec::new();
        c.web.metrics_token = Some(token.into());
    })
    .await;
    let mut anon = console.client();
    assert_eq!(anon.get("/metrics").await.status, 401);
    let r = anon
        .send(
            "GET",
            "/metrics",
            &[("authorization", format!("Bearer {token}"))],
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    let mut viewer = console.user("v", Role::Viewer).await;
    assert_eq!(
        viewer.get("/metrics").await.status,
        200,
        "a console session may read it"
    );
    console.stop().await;
}

/// DCMTK `echoscu` as `aet` to our node: whether the association was accepted.
fn echo_accepted(aet: &str, port: u16) -> bool {
    std::process::Command::new(support::e2e::dcmtk("echoscu"))
        .args(["-aet", aet, "-aec", "VERTEBRA", "-to", "5", "127.0.0.1"])
        .arg(port.to_string())
        .output()
        .unwrap()
        .status
        .success()
}

/// Polls `echo_accepted` until it equals `want` or the peer list's refresh time has passed
/// twice over; returns the last answer.
async fn echo_becomes(aet: &str, port: u16, want: bool) -> bool {
    let deadline =
        std::time::Instant::now() + 2 * vertebrad::dicom::PEER_REFRESH + Duration::from_secs(2);
    loop {
        let got = tokio::task::spawn_blocking({
            let aet = aet.to_owned();
            move || echo_accepted(&aet, port)
        })
        .await
        .unwrap();
        if got == want || std::time::Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_edited_in_the_console_open_and_close_the_scp_without_restart() {
    let h = support::sqlite().await;
    let spool = tempfile::tempdir().unwrap();
    let dicom = vertebrad::config::DicomConfig {
        bind: "127.0.0.1".parse().unwrap(),
        port: 0,
        peers: vec![vertebrad::config::PeerConfig {
            ae_title: "FILE_PEER".into(),
            addresses: vec![],
            stable_after_s: None,
        }],
        ..vertebrad::config::DicomConfig::default()
    };
    // The console shows the configuration the daemon runs with.
    let file_peers = dicom.peers.clone();
    let console = Console::start(h.store.clone(), |c| c.dicom.peers = file_peers).await;
    let node = vertebrad::dicom::RunningNode::start(dicom, h.store.clone(), spool.path())
        .await
        .unwrap();
    let port = node.local_addr().port();
    assert!(echo_accepted("FILE_PEER", port), "the configured peer");
    assert!(!echo_accepted("CT9", port), "CT9 is on no list yet");

    let mut op = console.user("op", Role::Operator).await;
    let form = [
        ("ae_title", "CT9"),
        ("addresses", "127.0.0.1, 10.0.0.0/8"),
        ("stable_after_s", "7.5"),
        ("enabled", "1"),
    ];
    assert_eq!(
        op.post("/peers", &form).await.status,
        403,
        "operators may not add peers"
    );
    let mut admin = console.user("boss", Role::Admin).await;
    let bad = admin
        .post(
            "/peers",
            &[
                ("ae_title", "CT9"),
                ("addresses", "127.0.0.999"),
                ("enabled", "1"),
            ],
        )
        .await;
    assert_eq!(bad.status, 422);
    assert!(bad.body.contains("addresses"), "{}", bad.body);
    let r = admin.post("/peers", &form).await;
    assert_eq!(r.status, 303, "{}", r.body);
    let id: i64 = r.location().rsplit('/').next().unwrap().parse().unwrap();
    let dup = admin.post("/peers", &form).await;
    assert_eq!(dup.status, 422, "one entry per AE title");
    assert!(
        echo_becomes("CT9", port, true).await,
        "a console peer is admitted without restart"
    );
    let list = admin.get("/peers").await;
    assert!(
        list.body.contains("CT9") && list.body.contains("FILE_PEER"),
        "{}",
        list.body
    );

    // Moved to another network: refused from loopback again.
    let r = admin
        .post(
            &format!("/peers/{id}"),
            &[
                ("ae_title", "CT9"),
                ("addresses", "10.0.0.0/8"),
                ("enabled", "1"),
            ],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert!(
        !echo_becomes("CT9", port, false).await,
        "the edited addresses apply"
    );
    let r = admin
        .post(
            &format!("/peers/{id}"),
            &[
                ("ae_title", "CT9"),
                ("addresses", "127.0.0.0/8"),
                ("enabled", "1"),
            ],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert!(echo_becomes("CT9", port, true).await);
    let r = admin
        .post(&format!("/peers/{id}/enabled"), &[("enabled", "0")])
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert!(
        !echo_becomes("CT9", port, false).await,
        "a disabled peer is refused"
    );
    assert!(
        echo_accepted("FILE_PEER", port),
        "the configured peer is unaffected"
    );

    let actions = console.audit_actions().await;
    for a in ["peer.create", "peer.update", "peer.disable"] {
        assert!(
            actions.iter().any(|(u, x, _)| u == "boss" && x == a),
            "{a}: {actions:?}"
        );
    }
    assert!(
        actions
            .iter()
            .any(|(u, x, o)| u == "CT9" && x == "dicom.associate" && *o == AuditOutcome::Denied),
        "refused associations are audited: {actions:?}"
    );

    // Retention settings are validated against each other before anything is stored.
    let r = admin
        .post("/settings", &[("retention.low_water_percent", "95")])
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains("low_water_percent"), "{}", r.body);
    let r = admin
        .post(
            "/settings",
            &[
                ("retention.delete_after_delivery", "yes"),
                ("retention.max_age_days", "30"),
            ],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let mut cfg = Config::default();
    vertebrad::web::settings::apply_stored(&console.store, &mut cfg)
        .await
        .unwrap();
    assert!(cfg.retention.delete_after_delivery);
    assert_eq!(cfg.retention.max_age_days, 30.0);

    node.stop().await;
    console.stop().await;
}
