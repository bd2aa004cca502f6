//! systemd integration: the `sd_notify` protocol (readiness, status, stopping) and a watchdog
//! that proves the daemon is alive rather than merely running a timer.
//!
//! # Notifications
//!
//! With `Type=notify` systemd passes the path of a unix datagram socket in `NOTIFY_SOCKET`
//! (a file system path, or an abstract name written with a leading `@`); the daemon sends
//! newline-separated `KEY=value` assignments to it. [`Notifier`] implements the protocol by
//! hand (one `sendto` per message) and does nothing when `NOTIFY_SOCKET` is unset, so the same
//! binary runs under systemd, in a shell, or in a test.
//!
//! # Watchdog
//!
//! With `WatchdogSec=` systemd passes the interval in `WATCHDOG_USEC` (and the process meant
//! in `WATCHDOG_PID`); if no `WATCHDOG=1` arrives within it, systemd kills the service
//! (SIGABRT, then SIGKILL) and `Restart=on-failure` starts a fresh one. A timer that feeds
//! blindly would keep a wedged daemon alive, so [`run_watchdog`] feeds at half the interval
//! only when a [`HealthCheck`] passes:
//!
//! - every registered [`Heartbeat`] (the DICOM accept loops, the analysis worker's loop) has
//!   beaten within the stall limit (the watchdog interval, at least one second). Each part
//!   beats every [`BEAT_PERIOD`] from inside its own loop, so a part whose task is stuck — a
//!   blocking call on the runtime, a deadlock, a store call that never returns — stops
//!   beating;
//! - the store answers a ping within a quarter of the interval.
//!
//! When the check fails, the feeder logs which part is wedged and why, puts it in the unit's
//! `STATUS=`, and stops feeding; systemd then restarts the daemon. When the check passes
//! again before the deadline (a short database hiccup), feeding resumes and the log says so.

use std::ffi::OsString;
use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::store::Store;

/// How often each part of the daemon beats its [`Heartbeat`] from inside its loop.
pub const BEAT_PERIOD: Duration = Duration::from_millis(100);

/// The shortest stall limit: a part counts as wedged only after this long without a beat,
/// however short the watchdog interval (scheduling jitter on a loaded two-core box).
const MIN_STALL: Duration = Duration::from_secs(1);

/// The shortest time a store ping may take before it counts as unanswered.
const MIN_PING_TIMEOUT: Duration = Duration::from_millis(100);

/// The sending side of the `sd_notify` protocol.
///
/// Sending never fails the daemon: a notification that cannot be delivered is logged.
#[derive(Debug)]
pub struct Notifier {
    target: Option<Target>,
}

#[derive(Debug)]
struct Target {
    socket: UnixDatagram,
    addr: SocketAddr,
    /// `NOTIFY_SOCKET` as given, for log messages.
    name: String,
}

impl Notifier {
    /// The notifier `NOTIFY_SOCKET` describes; disabled when it is unset.
    pub fn from_env() -> Self {
        Self::from_socket(std::env::var_os("NOTIFY_SOCKET"))
    }

    /// The notifier for a `NOTIFY_SOCKET` value: an absolute path, or `@name` for an abstract
    /// socket. An unusable value is logged and disables notifications (a daemon must still
    /// run when its supervisor's protocol is something we do not speak, e.g. `vsock:`).
    pub fn from_socket(value: Option<OsString>) -> Self {
        let Some(value) = value.filter(|v| !v.is_empty()) else {
            return Self { target: None };
        };
        let name = value.to_string_lossy().into_owned();
        match Target::open(&value) {
            Ok((socket, addr)) => Self {
                target: Some(Target { socket, addr, name }),
            },
            Err(e) => {
                tracing::warn!(notify_socket = %name, error = %e, "systemd notifications disabled");
                Self { target: None }
            }
        }
    }

    /// Whether messages go anywhere (`NOTIFY_SOCKET` was set and usable).
    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Sends one message of newline-separated `KEY=value` assignments.
    pub fn notify(&self, message: &str) {
        if let Some(t) = &self.target
            && let Err(e) = t.socket.send_to_addr(message.as_bytes(), &t.addr)
        {
            tracing::warn!(notify_socket = %t.name, error = %e, "cannot notify systemd");
        }
    }

    /// `READY=1` with a status line: start-up is complete.
    pub fn ready(&self, status: &str) {
        self.notify(&format!("READY=1\nSTATUS={}", one_line(status)));
    }

    /// A status line shown by `systemctl status`.
    pub fn status(&self, status: &str) {
        self.notify(&format!("STATUS={}", one_line(status)));
    }

    /// `STOPPING=1` with a status line: the daemon began its stop sequence.
    pub fn stopping(&self, status: &str) {
        self.notify(&format!("STOPPING=1\nSTATUS={}", one_line(status)));
    }

    /// `WATCHDOG=1`: the daemon is alive.
    pub fn watchdog(&self) {
        self.notify("WATCHDOG=1");
    }
}

impl Target {
    fn open(value: &std::ffi::OsStr) -> io::Result<(UnixDatagram, SocketAddr)> {
        use std::os::unix::ffi::OsStrExt;
        let bytes = value.as_bytes();
        let addr = match bytes.first() {
            Some(b'/') => SocketAddr::from_pathname(std::path::Path::new(value))?,
            Some(b'@') => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(&bytes[1..])?
            }
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "NOTIFY_SOCKET is neither an absolute path nor an abstract name (@…)",
                ));
            }
        };
        Ok((UnixDatagram::unbound()?, addr))
    }
}

/// A status text as one line (the protocol separates assignments by newlines).
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

/// The watchdog interval systemd asks for: `WATCHDOG_USEC`, when `WATCHDOG_PID` is unset or
/// names this process. `None`: no watchdog.
pub fn watchdog_interval() -> Option<Duration> {
    parse_watchdog(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )
}

fn parse_watchdog(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    if let Some(pid) = pid
        && pid.trim().parse::<u32>().ok() != Some(own_pid)
    {
        return None;
    }
    let usec: u64 = usec?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// A part's proof of life: the part calls [`Heartbeat::beat`] from inside its loop at least
/// every [`BEAT_PERIOD`]; the watchdog reads its age. Clones share the beat.
#[derive(Clone, Debug)]
pub struct Heartbeat {
    name: Arc<str>,
    epoch: Instant,
    /// Milliseconds from `epoch` to the latest beat.
    last_ms: Arc<AtomicU64>,
}

impl Heartbeat {
    /// A heartbeat named for log messages (e.g. `DICOM listener 0.0.0.0:104`), beaten now.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        Self {
            name: name.into(),
            epoch: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Records that the part is alive now.
    pub fn beat(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Time since the latest beat.
    pub fn age(&self) -> Duration {
        self.epoch
            .elapsed()
            .saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
    }

    /// The part's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// An interval ticking every [`BEAT_PERIOD`] for a part's `select!` loop; missed ticks
    /// are not made up (a burst of beats after a stall would hide nothing, but wastes work).
    pub fn ticker() -> tokio::time::Interval {
        let mut t = tokio::time::interval(BEAT_PERIOD);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    }
}

/// What "healthy" means for the watchdog: every part beat recently and the store answers.
#[derive(Debug)]
pub struct HealthCheck {
    parts: Vec<Heartbeat>,
    store: Store,
    stall_after: Duration,
    ping_timeout: Duration,
}

impl HealthCheck {
    /// The check for a watchdog `interval`: parts stall after the interval (at least one
    /// second), the store must answer within a quarter of it (at least 100 ms).
    pub fn new(parts: Vec<Heartbeat>, store: Store, interval: Duration) -> Self {
        Self {
            parts,
            store,
            stall_after: interval.max(MIN_STALL),
            ping_timeout: (interval / 4).max(MIN_PING_TIMEOUT),
        }
    }

    /// `Ok` when healthy, else a message naming what is wedged (for the log and `STATUS=`).
    ///
    /// # Errors
    /// The parts that have not beaten within the stall limit, or the store not answering.
    pub async fn check(&self) -> Result<(), String> {
        let mut problems: Vec<String> = self
            .parts
            .iter()
            .filter(|p| p.age() > self.stall_after)
            .map(|p| format!("{} silent for {:.1} s", p.name(), p.age().as_secs_f64()))
            .collect();
        match tokio::time::timeout(self.ping_timeout, self.store.ping()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => problems.push(format!("store ping failed: {e}")),
            Err(_) => problems.push(format!(
                "store did not answer a ping within {} ms",
                self.ping_timeout.as_millis()
            )),
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

/// Feeds systemd's watchdog every half `interval` while `check` passes, until `shutdown`
/// turns true (systemd does not watch a stopping service; its stop timeout applies).
///
/// `healthy_status` is restored as the unit's `STATUS=` when the daemon recovers.
pub async fn run_watchdog(
    notifier: Arc<Notifier>,
    interval: Duration,
    check: HealthCheck,
    healthy_status: String,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(interval / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut wedged: Option<String> = None;
    tracing::info!(
        interval_ms = interval.as_millis(),
        parts = check.parts.len(),
        "systemd watchdog armed"
    );
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => break,
        }
        if *shutdown.borrow() {
            break;
        }
        match check.check().await {
            Ok(()) => {
                notifier.watchdog();
                if wedged.take().is_some() {
                    tracing::warn!("healthy again; feeding the systemd watchdog");
                    notifier.status(&healthy_status);
                }
            }
            Err(why) => {
                if wedged.as_deref() != Some(why.as_str()) {
                    tracing::error!(
                        reason = %why,
                        "daemon wedged: not feeding the systemd watchdog (systemd restarts \
                         the service if this lasts {} ms)",
                        interval.as_millis()
                    );
                    notifier.status(&format!("wedged: {why}"));
                }
                wedged = Some(why);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_settings_follow_the_pid_rule() {
        let us = Some("400000");
        assert_eq!(
            parse_watchdog(us, None, 7),
            Some(Duration::from_millis(400))
        );
        assert_eq!(
            parse_watchdog(us, Some("7"), 7),
            Some(Duration::from_millis(400))
        );
        assert_eq!(parse_watchdog(us, Some("8"), 7), None);
        assert_eq!(parse_watchdog(None, None, 7), None);
        assert_eq!(parse_watchdog(Some("0"), None, 7), None);
        assert_eq!(parse_watchdog(Some("soon"), None, 7), None);
    }

    #[test]
    fn notifier_reaches_path_and_abstract_sockets_and_is_silent_without_one() {
        use std::os::linux::net::SocketAddrExt;
        assert!(!Notifier::from_socket(None).is_enabled());
        assert!(!Notifier::from_socket(Some("vsock:2:9".into())).is_enabled());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let rx = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::from_socket(Some(path.clone().into_os_string()));
        n.ready("line one\nline two");
        let mut buf = [0_u8; 256];
        let len = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=line one line two");

        let name = format!("vertebrad-test-{}", std::process::id());
        let rx = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(&name).unwrap()).unwrap();
        let n = Notifier::from_socket(Some(format!("@{name}").into()));
        n.watchdog();
        let len = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"WATCHDOG=1");
    }

    #[test]
    fn a_heartbeat_ages_until_it_beats() {
        let h = Heartbeat::new("part");
        std::thread::sleep(Duration::from_millis(30));
        assert!(h.age() >= Duration::from_millis(30));
        h.beat();
        assert!(h.age() < Duration::from_millis(30));
        assert_eq!(h.clone().name(), "part");
    }
}
