//! The admin web console: HTTPS (rustls, TLS 1.2+), server-rendered pages (maud, escaped by
//! construction), sessions, roles, CSRF, `/healthz` and `/metrics`. `docs/web-console.md`
//! describes the pages, roles, first-run procedure and formats.
//!
//! - [`config`]: the `[web]` section;
//! - [`tls`]: the configured or generated (self-signed) certificate;
//! - [`server`]: the accept loop and the optional HTTP→HTTPS redirect;
//! - [`routes`]: the one route table the router is built from;
//! - [`auth`]: passwords, sessions, the per-route guard, CSRF, lockout, first-run setup;
//! - [`headers`]: security headers on every response;
//! - [`pages`]: one module per page; [`health`]: `/healthz`, `/metrics`;
//! - [`status`]: what the daemon reports about its services;
//! - [`settings`]: console-edited settings overlaid on the configuration at start.
//!
//! It is not a place for store logic (that is `crate::store`) nor for DICOM networking (the
//! C-ECHO test calls `crate::dicom::scu`).

pub mod auth;
pub mod config;
pub mod headers;
pub mod health;
pub mod pages;
pub mod routes;
pub mod server;
pub mod settings;
pub mod statics;
pub mod status;
pub mod tls;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

pub use config::WebConfig;
pub use pages::series::SeriesLink;
pub use status::{DicomStatus, EngineStatus, LoadedEngine, ServiceStatus};

use crate::config::Config;
use crate::store::Store;

/// Adds links to the per-series page (e.g. the result viewer): given the series' database id
/// and whether it has a stored result, returns the links to show in its "Actions" section.
/// Register hooks in [`ConsoleOptions::series_links`].
pub type SeriesLinkHook = fn(series_id: i64, has_result: bool) -> Vec<SeriesLink>;

/// What the handlers share; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The store.
    pub store: Store,
    /// The `[web]` settings.
    pub web: Arc<WebConfig>,
    /// The daemon's whole configuration as in effect (peers, forwarder, engine).
    pub config: Arc<Config>,
    /// What the daemon reports about its services.
    pub status: ServiceStatus,
    /// The state directory (bundles, setup token, certificate).
    pub state_dir: PathBuf,
    /// The first-run setup token.
    pub setup: Arc<auth::SetupToken>,
    /// Links added to the per-series page.
    pub series_links: Arc<Vec<SeriesLinkHook>>,
    /// Series loaded for the result viewer (bounded by bytes, least recently used evicted).
    pub viewer: Arc<pages::viewer::Cache>,
}

/// What starting the console needs.
#[derive(Clone)]
pub struct ConsoleOptions {
    /// The daemon's configuration (its `web` section configures the console).
    pub config: Config,
    /// The state directory.
    pub state_dir: PathBuf,
    /// The shared service status the daemon fills.
    pub status: ServiceStatus,
    /// Per-series page link hooks (the result viewer registers one).
    pub series_links: Vec<SeriesLinkHook>,
}

/// The running console.
#[derive(Debug)]
pub struct RunningConsole {
    addr: SocketAddr,
    redirect_addr: Option<SocketAddr>,
    fingerprint: String,
    setup_file: Option<PathBuf>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl RunningConsole {
    /// Loads or generates the certificate, arms first-run setup when no user exists, binds
    /// and starts serving.
    ///
    /// # Errors
    /// A message for an operator: the certificate, the setup token file or the port.
    pub async fn start(opts: ConsoleOptions, store: Store) -> Result<Self, String> {
        let web = opts.config.web.clone();
        web.validate()?;
        let tls = tls::load(&web, &opts.state_dir)?;
        if tls.generated {
            tracing::warn!(
                certificate = %tls.certificate.display(),
                sha256 = %tls.fingerprint,
                "web console uses a generated self-signed certificate: compare this \
                 fingerprint with the one the browser shows, or configure web.certificate"
            );
        } else {
            tracing::info!(sha256 = %tls.fingerprint, "web console certificate");
        }
        let setup = Arc::new(auth::SetupToken::default());
        let users = store.user_count().await.map_err(|e| e.to_string())?;
        let setup_file = setup.arm(users == 0, &opts.state_dir)?;
        let listener = TcpListener::bind((web.bind, web.port)).await.map_err(|e| {
            format!(
                "cannot listen on {}:{} (web console): {e}",
                web.bind, web.port
            )
        })?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("web console address: {e}"))?;
        if let Some(f) = &setup_file {
            tracing::warn!(
                file = %f.display(),
                "no console user yet: open https://<appliance>:{}/setup and enter the one-time \
                 setup token from this file (root or the service account can read it)",
                addr.port()
            );
        }
        let redirect =
            match web.redirect_http_port {
                Some(p) => Some(TcpListener::bind((web.bind, p)).await.map_err(|e| {
                    format!("cannot listen on {}:{p} (HTTP redirect): {e}", web.bind)
                })?),
                None => None,
            };
        let redirect_addr = redirect.as_ref().and_then(server::bound);
        let state = AppState {
            store,
            web: Arc::new(web),
            config: Arc::new(opts.config),
            status: opts.status,
            state_dir: opts.state_dir,
            setup,
            series_links: Arc::new(
                std::iter::once(pages::viewer::series_link as SeriesLinkHook)
                    .chain(opts.series_links)
                    .collect(),
            ),
            viewer: Arc::new(pages::viewer::Cache::new(
                crate::viewer::cache::DEFAULT_CACHE_BYTES,
            )),
        };
        let app = routes::router(state);
        let (stop, stopped) = watch::channel(false);
        let mut tasks = vec![tokio::spawn(server::serve_https(
            listener,
            tls.acceptor.clone(),
            app,
            stopped.clone(),
        ))];
        if let Some(l) = redirect {
            tasks.push(tokio::spawn(server::serve_redirect(
                l,
                addr.port(),
                stopped,
            )));
        }
        Ok(Self {
            addr,
            redirect_addr,
            fingerprint: tls.fingerprint,
            setup_file,
            stop,
            tasks,
        })
    }

    /// Where the console listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where the HTTP→HTTPS redirect listens, if configured.
    pub fn redirect_addr(&self) -> Option<SocketAddr> {
        self.redirect_addr
    }

    /// SHA-256 fingerprint of the certificate served.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The setup token file, when first-run setup is open.
    pub fn setup_file(&self) -> Option<&Path> {
        self.setup_file.as_deref()
    }

    /// Stops accepting, lets requests in progress finish (bounded), and returns.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}
