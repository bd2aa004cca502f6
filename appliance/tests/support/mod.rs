//! Test support: throwaway databases for both backends.
//!
//! PostgreSQL: if `DATABASE_URL` names a server, each test gets a fresh database on it (the
//! role needs CREATEDB). Otherwise the test binary starts its own server: an `initdb` template
//! is made once per machine and user (in the temp dir), then each test process copies it into a
//! private temp dir and runs `postgres` there on a unix socket only (no TCP port to collide
//! on). Fault tests can stop and start that server ([`stop_pg_server`], [`start_pg_server`]).
//! The server is run by a small shell wrapper that waits on a pipe from this process: when
//! the process exits (even on kill -9), the pipe closes and the wrapper stops the server and
//! removes its directory. As root (CI), the server runs as the `postgres` user via `runuser`,
//! since PostgreSQL refuses to run as root. A missing PostgreSQL fails the test with the reason;
//! it never skips.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

pub mod browser;
pub mod e2e;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use sqlx::Connection;
use vertebrad::store::{Clock, ManualClock, NewResult, ResultStatus, Store, Timings};

/// The epoch tests start their manual clocks at (2023-11-14).
pub const T0_MS: i64 = 1_700_000_000_000;

/// A store on a fresh database plus what a test needs around it.
pub struct Harness {
    /// The store, reading time from `clock`.
    pub store: Store,
    /// The manual clock the store reads.
    pub clock: ManualClock,
    /// The database URL (for raw connections and worker processes).
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

/// A migrated SQLite store in a fresh temp file.
pub async fn sqlite() -> Harness {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}/store.db", dir.path().display());
    harness(url, Some(dir)).await
}

/// A migrated PostgreSQL store on a fresh database.
pub async fn postgres() -> Harness {
    let url = fresh_pg_database().await;
    harness(url, None).await
}

async fn harness(url: String, dir: Option<tempfile::TempDir>) -> Harness {
    let clock = ManualClock::new(T0_MS);
    let store = Store::open(&url)
        .await
        .unwrap_or_else(|e| panic!("opening the store at {url}: {e}"))
        .with_clock(Clock::Manual(clock.clone()));
    Harness {
        store,
        clock,
        url,
        _dir: dir,
    }
}

/// Creates an empty database on the test server and returns its URL.
pub async fn fresh_pg_database() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    static CLEANED: AtomicBool = AtomicBool::new(false);
    let admin = pg_admin_url();
    let name = format!(
        "vt_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    );
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("connecting to the test PostgreSQL ({admin}): {e}"));
    if !CLEANED.swap(true, Ordering::SeqCst) {
        drop_databases_of_dead_test_processes(&mut conn).await;
    }
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name}"))
        .execute(&mut conn)
        .await
        .expect("drop stale test database");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("CREATE DATABASE on the test server (needs CREATEDB): {e}"));
    conn.close().await.ok();
    with_database(&admin, &name)
}

/// On a shared server (`DATABASE_URL`) test databases outlive their process: drop those whose
/// process (the pid in the name) is gone. Our own private server vanishes with us anyway.
async fn drop_databases_of_dead_test_processes(conn: &mut sqlx::PgConnection) {
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'vt\\_%'")
            .fetch_all(&mut *conn)
            .await
            .unwrap_or_default();
    for name in names {
        let pid = name.split('_').nth(1).unwrap_or_default();
        if !pid.is_empty() && !Path::new("/proc").join(pid).exists() {
            // Another process may be dropping it too; losing that race is fine.
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut *conn)
                .await;
        }
    }
}

/// `url` with its database name replaced by `db`.
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{db}", &base[..host_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// The private server of this process, started on first use.
static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();

/// The URL of a database on the test server with the right to create databases.
pub fn pg_admin_url() -> String {
    if let Ok(url) = std::env::var("DATABASE_URL") {
        return url;
    }
    cluster().admin_url.clone()
}

fn cluster() -> &'static Cluster {
    match CLUSTER.get_or_init(Cluster::start) {
        Ok(c) => c,
        Err(reason) => panic!(
            "PostgreSQL tests need a server and none could be started: {reason}\n\
             Install Debian's `postgresql` (scripts/provision-system.sh) or set DATABASE_URL."
        ),
    }
}

/// Stops this process's private PostgreSQL server (fast shutdown: open connections are cut)
/// and returns once it is down. Every test of the process shares the server: tests that
/// stop it must not run alongside other PostgreSQL tests of the same binary.
pub fn stop_pg_server() {
    cluster().control("stop", "stopped");
}

/// Starts this process's private PostgreSQL server again on the same data and socket after
/// [`stop_pg_server`], and returns once it accepts connections.
pub fn start_pg_server() {
    let c = cluster();
    c.control("start", "started");
    wait_ready(&c.bin, &c.dir).unwrap_or_else(|e| panic!("restarting PostgreSQL: {e}"));
}

/// A private PostgreSQL server living as long as this process.
struct Cluster {
    admin_url: String,
    bin: PathBuf,
    dir: PathBuf,
    /// The wrapper's stdin (its lifeline and command channel) and stdout (its answers).
    control: std::sync::Mutex<(
        std::process::ChildStdin,
        BufReader<std::process::ChildStdout>,
    )>,
    _wrapper: Child,
}

impl Cluster {
    /// Sends `command` to the wrapper and waits for its `answer` line.
    fn control(&self, command: &str, answer: &str) {
        assert!(
            std::env::var_os("DATABASE_URL").is_none(),
            "stopping PostgreSQL needs the tests' private server: unset DATABASE_URL"
        );
        let mut guard = self
            .control
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (stdin, stdout) = &mut *guard;
        std::io::Write::write_all(stdin, format!("{command}\n").as_bytes())
            .and_then(|()| std::io::Write::flush(stdin))
            .unwrap_or_else(|e| panic!("telling the PostgreSQL wrapper to {command}: {e}"));
        let mut line = String::new();
        stdout
            .read_line(&mut line)
            .unwrap_or_else(|e| panic!("waiting for the PostgreSQL wrapper ({command}): {e}"));
        assert_eq!(
            line.trim(),
            answer,
            "PostgreSQL wrapper answer to {command}"
        );
    }
}

const SERVER_SCRIPT: &str = r#"set -e
bin=$1
template="${TMPDIR:-/tmp}/vertebrad-pg-template-$(id -un)-$(echo "$bin" | tr / _)"
if [ ! -f "$template/PG_VERSION" ]; then
  work=$(mktemp -d "${TMPDIR:-/tmp}/vertebrad-initdb.XXXXXX")
  "$bin/initdb" -D "$work/data" -U postgres --auth=trust --no-sync -E UTF8 --locale=C \
    >"$work/initdb.log" 2>&1 || { cat "$work/initdb.log" >&2; exit 1; }
  mv -T "$work/data" "$template" 2>/dev/null || true
  rm -rf "$work"
fi
d=$(mktemp -d "${TMPDIR:-/tmp}/vertebrad-pg.XXXXXX")
cp -a "$template" "$d/data"
start() {
  "$bin/postgres" -D "$d/data" -k "$d" -c listen_addresses= -c fsync=off \
    -c synchronous_commit=off -c full_page_writes=off -c max_connections=300 \
    >>"$d/server.log" 2>&1 &
  pid=$!
}
start
echo "$d"
# Detach from the test's stderr: a test runner waits for every holder of its pipes to exit.
# Stdout stays: it is a private pipe to the test process, which reads the answers below.
exec 2>/dev/null
# Commands on stdin (`stop`, `start`: tests of a database outage); end of input (the test
# process exited, even by kill -9) stops the server and removes its directory.
while read -r cmd; do
  case "$cmd" in
    stop) kill -INT "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; echo stopped ;;
    start) start; echo started ;;
  esac
done
kill -INT "$pid" 2>/dev/null || true
wait "$pid" 2>/dev/null || true
rm -rf "$d"
"#;

impl Cluster {
    fn start() -> Result<Self, String> {
        let bin = pg_bindir()?;
        let root = Command::new("id")
            .arg("-u")
            .output()
            .map_err(|e| format!("running `id -u`: {e}"))?
            .stdout
            .starts_with(b"0\n");
        let mut cmd = if root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", "sh", "-c", SERVER_SCRIPT, "sh"]);
            c
        } else {
            let mut c = Command::new("sh");
            c.args(["-c", SERVER_SCRIPT, "sh"]);
            c
        };
        let mut wrapper = cmd
            .arg(&bin)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            // Piped, not inherited: `runuser` stays alive until the server has stopped, and a
            // test runner waits for every holder of the test's own stderr.
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting the server wrapper (root: {root}): {e}"))?;
        let mut line = String::new();
        let mut stdout = BufReader::new(wrapper.stdout.take().expect("piped stdout"));
        stdout
            .read_line(&mut line)
            .map_err(|e| format!("reading the server directory: {e}"))?;
        let dir = PathBuf::from(line.trim());
        if line.trim().is_empty() {
            let mut stderr = String::new();
            if let Some(mut pipe) = wrapper.stderr.take() {
                std::io::Read::read_to_string(&mut pipe, &mut stderr).ok();
            }
            return Err(format!(
                "the server wrapper failed (initdb or cp): {stderr}"
            ));
        }
        wait_ready(&bin, &dir)?;
        let stdin = wrapper.stdin.take().expect("piped stdin");
        Ok(Self {
            admin_url: format!(
                "postgres://postgres@localhost/postgres?host={}&port=5432",
                dir.display()
            ),
            bin,
            dir,
            control: std::sync::Mutex::new((stdin, stdout)),
            _wrapper: wrapper,
        })
    }
}

fn wait_ready(bin: &Path, dir: &Path) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ok = Command::new(bin.join("pg_isready"))
            .arg("-q")
            .arg("-h")
            .arg(dir)
            .arg("-p")
            .arg("5432")
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Ok(());
        }
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
            return Err(format!(
                "the server did not become ready in 30 s; its log:\n{log}"
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Where PostgreSQL's server programs are: `PG_BINDIR`, else the newest Debian
/// `/usr/lib/postgresql/<major>/bin`.
fn pg_bindir() -> Result<PathBuf, String> {
    if let Ok(dir) = std::env::var("PG_BINDIR") {
        return Ok(PathBuf::from(dir));
    }
    let base = Path::new("/usr/lib/postgresql");
    let mut majors: Vec<(u32, PathBuf)> = std::fs::read_dir(base)
        .map_err(|e| format!("{} is not readable ({e})", base.display()))?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((major, bin))
        })
        .collect();
    majors.sort();
    majors
        .pop()
        .map(|(_, bin)| bin)
        .ok_or_else(|| format!("no PostgreSQL server under {}", base.display()))
}

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The ONNX Runtime library the tests use: `ORT_DYLIB_PATH` or the provisioned cache.
pub fn ort_library() -> PathBuf {
    let p = std::env::var_os("ORT_DYLIB_PATH")
        .map(PathBuf::from)
        .or_else(|| {
            vertebra_export::runtime::standard_locations()
                .into_iter()
                .find(|p| p.is_file())
        })
        .unwrap_or_default();
    assert!(
        p.is_file(),
        "the ONNX Runtime library is missing: run scripts/provision-onnxruntime.sh (or set \
         ORT_DYLIB_PATH)"
    );
    p
}

/// The reference venv's Python (same rule as scripts/provision-python.sh).
pub fn venv_python() -> PathBuf {
    let venv = std::env::var_os("VERTEBRA_VENV")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|c| Path::new(&c).join("vertebra/venv")))
        .unwrap_or_else(|| {
            Path::new(&std::env::var_os("HOME").expect("HOME is not set"))
                .join(".cache/vertebra/venv")
        });
    let py = venv.join("bin/python");
    assert!(
        py.is_file(),
        "{} is missing: run scripts/provision-python.sh (or set VERTEBRA_VENV)",
        py.display()
    );
    py
}

/// A succeeded result for `series_id` with no findings (store tests that need a result to
/// hang outputs and deliveries on).
pub fn succeeded_result(series_id: i64) -> NewResult {
    NewResult {
        series_id,
        job_id: None,
        bundle_id: "b".into(),
        bundle_version: "1".into(),
        status: ResultStatus::Succeeded,
        timings: Timings::default(),
        vertebrae: vec![],
        lesions: vec![],
    }
}
