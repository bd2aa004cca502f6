//! The accept loop: TCP_NODELAY on every socket, a fixed number of association slots, and a
//! clear rejection when they are all taken.
//!
//! Slots are a semaphore of `max_associations` permits; an association holds one until it
//! ends. A connection that finds no slot still gets an answer — an A-ASSOCIATE-RJ (transient,
//! local limit exceeded), so a modality retries later instead of reporting a network error —
//! from a second, equally small pool; beyond that, connections are closed at once so a flood
//! costs nothing. The plain and the TLS listener share the slots.

use std::net::SocketAddr;
use std::sync::Arc;

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::{Node, association};
use crate::systemd::Heartbeat;

/// Accepts connections on `listener` (TLS first when `tls` is given) until `shutdown` turns
/// true, then waits for the associations in progress to end. Beats `heartbeat` from the
/// accept loop while it runs (the systemd watchdog's proof that the listener is alive).
pub async fn run(
    node: Arc<Node>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    heartbeat: Heartbeat,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = node.slots.clone();
    let rejecters = node.rejecters.clone();
    let mut tasks = JoinSet::new();
    let mut beat = Heartbeat::ticker();
    loop {
        let (socket, addr) = tokio::select! {
            _ = beat.tick() => {
                heartbeat.beat();
                continue;
            }
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        while tasks.try_join_next().is_some() {}
        if let Err(e) = socket.set_nodelay(true) {
            tracing::warn!(peer = %addr, error = %e, "cannot set TCP_NODELAY");
        }
        if let Ok(permit) = slots.clone().try_acquire_owned() {
            let node = node.clone();
            let tls = tls.clone();
            tasks.spawn(async move {
                match tls {
                    None => association::serve(node, socket, addr).await,
                    Some(tls) => {
                        if let Some(stream) = handshake(&node, &tls, socket, addr).await {
                            association::serve(node, stream, addr).await;
                        }
                    }
                }
                drop(permit);
            });
        } else if let Ok(permit) = rejecters.clone().try_acquire_owned() {
            let node = node.clone();
            let tls = tls.clone();
            tasks.spawn(async move {
                match tls {
                    None => reject_busy(node, socket, addr).await,
                    Some(tls) => {
                        if let Some(stream) = handshake(&node, &tls, socket, addr).await {
                            reject_busy(node, stream, addr).await;
                        }
                    }
                }
                drop(permit);
            });
        } else {
            tracing::warn!(peer = %addr, "connection flood: closing without an answer");
        }
    }
    tracing::info!("DICOM listener stopped; waiting for associations to end");
    while tasks.join_next().await.is_some() {}
}

async fn reject_busy<S>(node: Arc<Node>, stream: S, addr: SocketAddr)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    association::reject_busy(node, stream, addr).await;
}

/// The TLS handshake, bounded by the idle timeout (a peer that stalls it holds a slot no
/// longer than one that stalls its A-ASSOCIATE-RQ).
async fn handshake(
    node: &Node,
    tls: &TlsAcceptor,
    socket: TcpStream,
    addr: SocketAddr,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let idle = Duration::from_secs(node.cfg.limits.idle_timeout_s);
    match tokio::time::timeout(idle, tls.accept(socket)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            tracing::warn!(peer = %addr, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::warn!(peer = %addr, "TLS handshake timed out");
            None
        }
    }
}
