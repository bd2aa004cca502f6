//! The real `vertebrad serve` binary speaking systemd's notify protocol to a socket this test
//! binds in systemd's place: `READY=1` after the node listens and the engine is loaded,
//! `WATCHDOG=1` every half `WATCHDOG_USEC` while healthy, `STOPPING=1` on SIGTERM and exit 0;
//! and a PostgreSQL server frozen with SIGSTOP (a store that stops answering) stops the
//! watchdog feed until it is thawed.

mod support;

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::Connection;
use support::{ort_library, repo};

/// `WATCHDOG_USEC` the daemon gets: feeds every 500 ms; parts stall after 1 s; the store
/// must answer within 250 ms.
const WATCHDOG: Duration = Duration::from_secs(1);

/// The socket systemd would listen on, and what arrived on it.
struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
}

impl NotifySocket {
    fn bind(dir: &Path) -> Self {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("binding the notify socket");
        Self { socket, path }
    }

    /// The next message, or `None` after `limit` without one.
    fn recv(&self, limit: Duration) -> Option<String> {
        self.socket
            .set_read_timeout(Some(limit.max(Duration::from_millis(1))))
            .unwrap();
        let mut buf = vec![0_u8; 4096];
        match self.socket.recv(&mut buf) {
            Ok(n) => Some(String::from_utf8(buf[..n].to_vec()).expect("UTF-8 message")),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                None
            }
            Err(e) => panic!("reading the notify socket: {e}"),
        }
    }

    /// Messages until one satisfies `want` (returned), failing after `limit`.
    fn wait_for(
        &self,
        limit: Duration,
        what: &str,
        log: &Path,
        want: impl Fn(&str) -> bool,
    ) -> (String, Vec<String>) {
        let deadline = Instant::now() + limit;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.recv(left) {
                Some(m) if want(&m) => return (m, seen),
                Some(m) => seen.push(m),
                None => break,
            }
        }
        panic!(
            "no {what} within {limit:?}; got {seen:?}; daemon log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }

    /// Every message for `window`.
    fn collect(&self, window: Duration) -> Vec<String> {
        let deadline = Instant::now() + window;
        let mut all = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.recv(left) {
                Some(m) => all.push(m),
                None => break,
            }
        }
        all
    }
}

/// The daemon process; killed if a test fails before it stopped.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    fn start(dir: &Path, notify: &NotifySocket, database: &str, engine: bool) -> Self {
        let config = dir.join("vertebrad.toml");
        let inference = if engine {
            format!(
                "[inference]\nbundle = \"{}\"\ntrusted_keys = \"{}\"\nonnxruntime = \"{}\"\n\
                 providers = [\"cpu\"]\nintra_threads = 1\n",
                repo().join("models/demo-bundle").display(),
                repo().join("keys").display(),
                ort_library().display()
            )
        } else {
            // A bundle that is not there: the node runs without an engine (receiving only).
            format!(
                "[inference]\nbundle = \"{}\"\n",
                dir.join("no-bundle").display()
            )
        };
        std::fs::write(
            &config,
            format!(
                "[dicom]\nbind = \"127.0.0.1\"\nport = 0\nae_title = \"SPINE\"\n\
                 [[dicom.peers]]\nae_title = \"CT1\"\naddresses = [\"127.0.0.1\"]\n{inference}"
            ),
        )
        .unwrap();
        let log = dir.join("vertebrad.log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_vertebrad"))
            .args(["--state-dir"])
            .arg(dir.join("state"))
            .args(["serve", "--config"])
            .arg(&config)
            .args(["--database", database])
            .env("NOTIFY_SOCKET", &notify.path)
            .env("WATCHDOG_USEC", WATCHDOG.as_micros().to_string())
            .env_remove("WATCHDOG_PID")
            .env_remove("VERTEBRA_DATABASE_URL")
            .env("VERTEBRA_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
            .spawn()
            .expect("starting vertebrad serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(
            line.starts_with("listening on "),
            "unexpected first line {line:?}; log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        Self { child, log }
    }

    fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("running kill")
            .success();
        assert!(ok, "kill {signal} failed");
    }

    fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "vertebrad did not exit within {limit:?}; log:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn watchdogs(messages: &[String]) -> usize {
    messages
        .iter()
        .filter(|m| m.as_str() == "WATCHDOG=1")
        .count()
}

#[test]
fn serve_reports_ready_feeds_the_watchdog_and_reports_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let notify = NotifySocket::bind(dir.path());
    let url = format!("sqlite://{}/store.db", dir.path().display());
    let mut daemon = Daemon::start(dir.path(), &notify, &url, true);

    // The node listens (the line above) before the engine loads; READY=1 only after both.
    let (ready, before) = notify.wait_for(Duration::from_secs(120), "READY=1", &daemon.log, |m| {
        m.starts_with("READY=1")
    });
    assert!(
        before
            .first()
            .is_some_and(|m| m.contains("STATUS=DICOM on 127.0.0.1:") && m.contains("loading")),
        "expected a start-up STATUS before READY, got {before:?}"
    );
    assert!(
        ready.contains("engine loaded") && ready.contains("provider cpu"),
        "{ready}"
    );
    assert!(ready.contains("store Sqlite"), "{ready}");

    // Every 500 ms: six feeds in three seconds; a loaded machine may delay one or two.
    let window = notify.collect(Duration::from_secs(3));
    let fed = watchdogs(&window);
    assert!(fed >= 4, "{fed} WATCHDOG=1 in 3 s: {window:?}");

    daemon.signal("-TERM");
    let (stopping, _) = notify.wait_for(Duration::from_secs(5), "STOPPING=1", &daemon.log, |m| {
        m.starts_with("STOPPING=1")
    });
    assert!(stopping.contains("STATUS=stopping"), "{stopping}");
    let status = daemon.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "vertebrad exited with {status}");
    let log = std::fs::read_to_string(&daemon.log).unwrap();
    assert!(log.contains("systemd watchdog armed"), "{log}");
    assert!(log.contains("analysis worker stopped"), "{log}");
}

/// The PostgreSQL processes serving `db` plus the postmaster, frozen with SIGSTOP until
/// dropped (then SIGCONT, also when the test fails).
struct Frozen(Vec<u32>);

impl Frozen {
    fn signal(pids: &[u32], signal: &str) {
        for pid in pids {
            let ok = Command::new("kill")
                .args([signal, &pid.to_string()])
                .status()
                .expect("running kill")
                .success();
            assert!(ok, "kill {signal} {pid} failed");
        }
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        Self::signal(&self.0, "-CONT");
    }
}

fn parent_pid(pid: u32) -> u32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("reading /proc stat");
    // "pid (comm) state ppid …": comm may contain spaces, so split after the last ')'.
    let after = &stat[stat.rfind(')').expect("a comm field") + 2..];
    after
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("a parent pid")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_that_stops_answering_stops_the_watchdog_feed() {
    let url = support::fresh_pg_database().await;
    // postgres://user@host/NAME?host=/socket/dir&port=…
    let db = url
        .split('?')
        .next()
        .and_then(|base| base.rsplit_once('/'))
        .map(|(_, name)| name.to_owned())
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let notify = NotifySocket::bind(dir.path());
    let mut daemon = Daemon::start(dir.path(), &notify, &url, false);
    let (ready, _) = notify.wait_for(Duration::from_secs(30), "READY=1", &daemon.log, |m| {
        m.starts_with("READY=1")
    });
    assert!(
        ready.contains("engine not loaded") && ready.contains("store Postgres"),
        "{ready}"
    );
    notify.wait_for(Duration::from_secs(5), "WATCHDOG=1", &daemon.log, |m| {
        m == "WATCHDOG=1"
    });

    // Freeze the server: the postmaster (no new connections) and every backend of the
    // daemon's database (no answers on the pooled ones).
    let mut admin = sqlx::PgConnection::connect(&support::pg_admin_url())
        .await
        .unwrap();
    let own: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut admin)
        .await
        .unwrap();
    let backends: Vec<i32> =
        sqlx::query_scalar("SELECT pid FROM pg_stat_activity WHERE datname = $1")
            .bind(&db)
            .fetch_all(&mut admin)
            .await
            .unwrap();
    assert!(
        !backends.is_empty(),
        "the daemon holds no connection to {db}"
    );
    let mut pids = vec![parent_pid(u32::try_from(own).unwrap())];
    pids.extend(backends.iter().map(|p| u32::try_from(*p).unwrap()));
    Frozen::signal(&pids, "-STOP");
    let frozen = Frozen(pids);

    // Feeds already on their way may still arrive; then none while the store is silent.
    let (wedged, _) = notify.wait_for(
        Duration::from_secs(5),
        "a wedged STATUS",
        &daemon.log,
        |m| m.starts_with("STATUS=wedged"),
    );
    assert!(wedged.contains("store did not answer"), "{wedged}");
    let silent = notify.collect(Duration::from_secs(2));
    assert_eq!(
        watchdogs(&silent),
        0,
        "fed the watchdog while the store was frozen: {silent:?}"
    );
    let log = std::fs::read_to_string(&daemon.log).unwrap();
    assert!(
        log.contains("daemon wedged: not feeding the systemd watchdog"),
        "{log}"
    );

    drop(frozen);
    let (_, _) = notify.wait_for(
        Duration::from_secs(5),
        "WATCHDOG=1 after the thaw",
        &daemon.log,
        |m| m == "WATCHDOG=1",
    );
    daemon.signal("-TERM");
    notify.wait_for(Duration::from_secs(5), "STOPPING=1", &daemon.log, |m| {
        m.starts_with("STOPPING=1")
    });
    let status = daemon.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "vertebrad exited with {status}");
    admin.close().await.ok();
}
