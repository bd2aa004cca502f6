//! The HTTPS accept loop: TCP → TLS handshake (bounded in time) → HTTP/1.1 served by the
//! router, with the peer address attached to each request; and the optional plain-HTTP
//! listener that only redirects to HTTPS. Both stop gracefully: no new connections, requests
//! in progress get a grace period.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tower_service::Service as _;

/// Longest TLS handshake before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long requests in progress may finish after the stop signal.
const GRACE: Duration = Duration::from_secs(10);
/// Most connections served at once (each costs a task and TLS buffers).
const MAX_CONNECTIONS: usize = 256;

/// Serves `app` over TLS on `listener` until `stop` turns true.
pub async fn serve_https(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    app: Router,
    mut stop: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("web console accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = stop_requested(&mut stop) => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            // Over the limit: close at once rather than queue unbounded work.
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, "web console TLS handshake failed: {e}");
                    return;
                }
                Err(_) => return,
            };
            let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                let mut app = app.clone();
                async move { app.call(req.map(axum::body::Body::new)).await }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(tls), service);
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(%peer, "web console connection: {e}");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("web console: requests still running after the grace period were cut");
    }
}

/// Answers every plain-HTTP request with a redirect to the same path on `https_port`.
pub async fn serve_redirect(
    listener: TcpListener,
    https_port: u16,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let (tcp, _) = tokio::select! {
            r = listener.accept() => if let Ok(c) = r { c } else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            },
            () = stop_requested(&mut stop) => break,
        };
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                std::future::ready(Ok::<_, Infallible>(redirect(&req, https_port)))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

/// The 308 to HTTPS for `req` (host without its port, then ours; path and query kept).
fn redirect<B>(req: &hyper::Request<B>, https_port: u16) -> hyper::Response<String> {
    let host = req
        .headers()
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(host_without_port)
        .filter(|h| valid_host(h))
        .unwrap_or("localhost");
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", hyper::http::uri::PathAndQuery::as_str);
    let location = format!("https://{host}:{https_port}{path}");
    hyper::Response::builder()
        .status(hyper::StatusCode::PERMANENT_REDIRECT)
        .header(hyper::header::LOCATION, location)
        .header(hyper::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body("Use HTTPS.\n".to_owned())
        .unwrap_or_default()
}

fn host_without_port(h: &str) -> &str {
    if let Some(rest) = h.strip_prefix('[') {
        return rest
            .split(']')
            .next()
            .map_or(h, |inner| &h[..inner.len() + 2]);
    }
    h.split(':').next().unwrap_or(h)
}

/// A host name or address made only of the characters they can hold (no header injection).
fn valid_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':'))
}

/// Resolves once `stop` holds true (or its sender is gone); the borrowed value is dropped
/// inside, so the accept loops stay `Send`.
async fn stop_requested(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await.is_ok();
}

/// The address a listener bound, for messages.
pub fn bound(listener: &TcpListener) -> Option<SocketAddr> {
    listener.local_addr().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_keeps_path_and_replaces_port() {
        let req = hyper::Request::builder()
            .uri("/series?page=2")
            .header("host", "appliance.local:80")
            .body(())
            .unwrap();
        let r = redirect(&req, 8443);
        assert_eq!(r.status(), 308);
        assert_eq!(
            r.headers()["location"],
            "https://appliance.local:8443/series?page=2"
        );
        let evil = hyper::Request::builder()
            .uri("/")
            .header("host", "a\"b")
            .body(())
            .unwrap();
        assert_eq!(
            redirect(&evil, 8443).headers()["location"],
            "https://localhost:8443/"
        );
        let v6 = hyper::Request::builder()
            .uri("/")
            .header("host", "[::1]:80")
            .body(())
            .unwrap();
        assert_eq!(
            redirect(&v6, 8443).headers()["location"],
            "https://[::1]:8443/"
        );
    }
}
