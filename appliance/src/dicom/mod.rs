//! The DICOM node: a Storage SCP on tokio that makes every acknowledged object durable.
//!
//! ```text
//! TCP (TCP_NODELAY) ─▶ server.rs      slots, busy rejection
//!                    ─▶ association.rs A-ASSOCIATE ─▶ negotiation.rs (allow-list, our
//!                                      transfer-syntax order) ─▶ PDUs (pdu.rs) ─▶ DIMSE
//!                    ─▶ dimse/echo.rs  C-ECHO
//!                    ─▶ dimse/store.rs C-STORE ─▶ spool.rs (temp file, fsync, rename,
//!                                      fsync dir) ─▶ store index ─▶ answer Success
//!                    ─▶ completion.rs  series quiet for N s ─▶ job queue
//!
//! outbox (crate::forward) ─▶ scu.rs C-ECHO / C-STORE SCU: files as stored, one association
//!                                   per batch, plain or TLS ─▶ remote Storage SCP
//! ```
//!
//! The line a reader looks for: a C-STORE becomes durable in
//! [`dimse::store`]'s `commit` — fsync, rename, directory fsync, index — and the Success
//! status is built only after it returned.
//!
//! dicom-rs provides the PDU codec (`dicom_ul::pdu`) and the header parser
//! (`dicom_object`); association decisions, the DIMSE messages and the streaming spool are
//! ours. This module does not process images: it stores them, queues jobs, and sends the
//! objects it is given.

pub mod association;
pub mod completion;
pub mod daemon;
pub mod dimse;
pub mod negotiation;
pub mod pdu;
pub mod scu;
pub mod server;
pub mod spool;
pub mod tls;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use crate::config::{DicomConfig, PeerConfig};
use crate::store::Store;
use completion::SeriesTracker;
use spool::Spool;

/// Number of locks commits of the same SOP instance serialise on (by UID hash).
const COMMIT_LOCKS: usize = 64;

/// How long the allowed peers read from the store are trusted before they are read again: a
/// peer added, changed or disabled in the web console (by this daemon or another on the same
/// database) takes effect within this time.
pub const PEER_REFRESH: Duration = Duration::from_secs(2);

/// The allowed peers added in the web console (enabled ones), as last read from the store.
#[derive(Debug, Default)]
struct ConsolePeers {
    list: RwLock<Arc<Vec<PeerConfig>>>,
    read_at: tokio::sync::Mutex<Option<Instant>>,
}

/// Everything the associations share.
#[derive(Debug)]
pub struct Node {
    cfg: DicomConfig,
    store: Store,
    spool: Spool,
    tracker: SeriesTracker,
    commit_locks: Vec<tokio::sync::Mutex<()>>,
    /// Association slots, shared by the plain and the TLS listener.
    slots: Arc<Semaphore>,
    /// Tasks allowed to answer connections that found no slot with a rejection.
    rejecters: Arc<Semaphore>,
    /// Turns true when the daemon stops and its associations' grace ran out: each open
    /// association sends A-ABORT and ends.
    abort: watch::Sender<bool>,
    /// Allowed peers from the web console, besides `cfg.peers`.
    console_peers: ConsolePeers,
}

impl Node {
    /// The node for `cfg`, writing into the spool at `spool_dir` and indexing in `store`.
    ///
    /// # Errors
    /// I/O errors opening the spool.
    pub fn new(cfg: DicomConfig, store: Store, spool_dir: &Path) -> std::io::Result<Self> {
        let spool = Spool::open(spool_dir, cfg.limits.spool_high_water_percent)?;
        let max = cfg.limits.max_associations;
        Ok(Self {
            slots: Arc::new(Semaphore::new(max)),
            rejecters: Arc::new(Semaphore::new(max)),
            abort: watch::channel(false).0,
            console_peers: ConsolePeers::default(),
            cfg,
            store,
            spool,
            tracker: SeriesTracker::default(),
            commit_locks: (0..COMMIT_LOCKS)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        })
    }

    /// The enabled peers added in the web console, read again from the store when the last
    /// read is older than [`PEER_REFRESH`]. While the store cannot be read the last list read
    /// stays in force (logged): an outage neither opens nor closes the door.
    pub async fn console_peers(&self) -> Arc<Vec<PeerConfig>> {
        let mut read_at = self.console_peers.read_at.lock().await;
        if read_at.is_none_or(|t| t.elapsed() >= PEER_REFRESH) {
            match self.store.list_peers().await {
                Ok(rows) => {
                    let list: Vec<PeerConfig> = rows
                        .into_iter()
                        .filter(|p| p.peer.enabled)
                        .map(|p| PeerConfig {
                            ae_title: p.peer.ae_title,
                            addresses: p.peer.addresses,
                            stable_after_s: p.peer.stable_after_s,
                        })
                        .collect();
                    *self
                        .console_peers
                        .list
                        .write()
                        .unwrap_or_else(PoisonError::into_inner) = Arc::new(list);
                }
                Err(e) => tracing::warn!(
                    error = %e,
                    "cannot read the allowed peers of the web console; the last list read stays in force"
                ),
            }
            *read_at = Some(Instant::now());
        }
        drop(read_at);
        self.console_peers
            .list
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// How long a series from `calling_ae` must stay without new instances to be complete:
    /// the configuration file's peer entry, else the console's (as last read), else the
    /// default.
    pub fn stable_after(&self, calling_ae: &str) -> Duration {
        let configured = self
            .cfg
            .peers
            .iter()
            .any(|p| p.ae_title == calling_ae && p.stable_after_s.is_some());
        if !configured {
            let list = self
                .console_peers
                .list
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(s) = list
                .iter()
                .find(|p| p.ae_title == calling_ae)
                .and_then(|p| p.stable_after_s)
            {
                return Duration::from_secs_f64(s);
            }
        }
        self.cfg.stable_after(calling_ae)
    }

    /// Associations open now (slots taken).
    pub fn open_associations(&self) -> usize {
        self.cfg.limits.max_associations - self.slots.available_permits()
    }

    /// The series tracker (series still being received, queued jobs).
    pub fn tracker(&self) -> &SeriesTracker {
        &self.tracker
    }

    async fn commit_lock(&self, sop_uid: &str) -> tokio::sync::MutexGuard<'_, ()> {
        let h = sop_uid
            .bytes()
            .fold(0_usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize));
        self.commit_locks[h % COMMIT_LOCKS].lock().await
    }
}

/// The peer of an association, as far as services need it.
#[derive(Clone, Debug)]
pub struct Peer {
    /// Calling AE title (trimmed).
    pub calling_ae: String,
    /// Source address.
    pub addr: SocketAddr,
}

/// A running DICOM node: the listener, its associations and the series-completion task.
#[derive(Debug)]
pub struct RunningNode {
    addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
    node: Arc<Node>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    heartbeats: Vec<crate::systemd::Heartbeat>,
}

impl RunningNode {
    /// Binds `cfg.bind:cfg.port` (port 0 picks a free one), and the TLS port when
    /// configured, and starts serving.
    ///
    /// # Errors
    /// I/O errors binding the ports or opening the spool; unusable TLS certificates or keys.
    pub async fn start(cfg: DicomConfig, store: Store, spool_dir: &Path) -> std::io::Result<Self> {
        let listener = TcpListener::bind((cfg.bind, cfg.port)).await?;
        let addr = listener.local_addr()?;
        let tls = match &cfg.tls {
            None => None,
            Some(t) => {
                let acceptor = tls::acceptor(t).map_err(std::io::Error::other)?;
                let l = TcpListener::bind((cfg.bind, t.port)).await?;
                Some((acceptor, l))
            }
        };
        let tls_addr = match &tls {
            Some((_, l)) => Some(l.local_addr()?),
            None => None,
        };
        let max_attempts = cfg.completion.job_max_attempts.max(1);
        let shortest = cfg
            .peers
            .iter()
            .filter_map(|p| p.stable_after_s)
            .fold(cfg.completion.stable_after_s, f64::min);
        let tick = Duration::from_secs_f64((shortest / 4.0).clamp(0.05, 1.0));
        let node = Arc::new(Node::new(cfg, store.clone(), spool_dir)?);
        let (shutdown, rx) = watch::channel(false);
        let tracker_node = node.clone();
        let tracker_rx = rx.clone();
        let mut tasks = Vec::new();
        let mut heartbeats = vec![crate::systemd::Heartbeat::new(format!(
            "DICOM listener {addr}"
        ))];
        if let Some((acceptor, l)) = tls {
            let beat = crate::systemd::Heartbeat::new(format!(
                "DICOM TLS listener {}",
                tls_addr.map_or_else(String::new, |a| a.to_string())
            ));
            heartbeats.push(beat.clone());
            tasks.push(tokio::spawn(server::run(
                node.clone(),
                l,
                Some(acceptor),
                beat,
                rx.clone(),
            )));
        }
        tasks.extend([
            tokio::spawn(server::run(
                node.clone(),
                listener,
                None,
                heartbeats[0].clone(),
                rx,
            )),
            tokio::spawn(async move {
                let stable_after = |ae: &str| tracker_node.stable_after(ae);
                tracker_node
                    .tracker
                    .run(store, max_attempts, tick, stable_after, tracker_rx)
                    .await;
            }),
        ]);
        tracing::info!(%addr, tls = ?tls_addr, "DICOM node listening");
        Ok(Self {
            addr,
            tls_addr,
            node,
            shutdown,
            tasks,
            heartbeats,
        })
    }

    /// The accept loops' heartbeats (plain, then TLS), for the systemd watchdog.
    pub fn heartbeats(&self) -> &[crate::systemd::Heartbeat] {
        &self.heartbeats
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address of the TLS listener, when configured.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// The shared node state.
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// Stops accepting, waits for the associations in progress, stops the completion task.
    pub async fn stop(self) {
        self.stop_within(Duration::MAX).await;
    }

    /// Stops accepting and waits up to `grace` for the associations in progress to end
    /// (a peer finishing its transfer and releasing); then aborts those still open
    /// (A-ABORT: the peer retries later; every object it got a Success for is already
    /// durable) and stops the completion task.
    pub async fn stop_within(self, grace: Duration) {
        let _ = self.shutdown.send(true);
        let mut tasks = self.tasks;
        let drain = async {
            while let Some(t) = tasks.last_mut() {
                let _ = t.await;
                tasks.pop();
            }
        };
        if tokio::time::timeout(grace, drain).await.is_err() {
            tracing::warn!(
                open = self.node.open_associations(),
                grace_s = grace.as_secs_f64(),
                "associations still open after the stop grace: aborting them"
            );
            let _ = self.node.abort.send(true);
            for t in tasks {
                let _ = t.await;
            }
        }
    }

    /// Associations open now.
    pub fn open_associations(&self) -> usize {
        self.node.open_associations()
    }
}
