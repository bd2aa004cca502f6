//! Multi-process tests of the store: concurrent workers on one PostgreSQL, a worker killed
//! with SIGKILL mid-job, and SIGKILL at random points during indexing transactions.
//!
//! The workers are this test binary itself, started with a role argument (`worker`,
//! `indexer`), so no extra binary ships for tests. That needs our own `main`
//! (`harness = false`); it speaks the part of libtest's command line that `cargo test` and
//! `cargo nextest` use (`--list --format terse`, `--ignored`, `<name> --exact`).

mod support;

use std::io::{BufRead, BufReader, Write};
use std::panic::AssertUnwindSafe;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sqlx::Connection;
use vertebrad::store::queue::{JobState, NewJob};
use vertebrad::store::{BackendKind, NewInstance, NewSeries, NewStudy, Store};

type Test = (
    &'static str,
    fn() -> std::pin::Pin<Box<dyn Future<Output = ()>>>,
);

const TESTS: &[Test] = &[
    ("four_worker_processes_run_1000_jobs_exactly_once", || {
        Box::pin(four_worker_processes_run_1000_jobs_exactly_once())
    }),
    ("a_killed_workers_job_is_reclaimed_and_finishes", || {
        Box::pin(a_killed_workers_job_is_reclaimed_and_finishes())
    }),
    (
        "sigkill_during_indexing_leaves_no_half_written_state_postgres",
        || Box::pin(sigkill_during_indexing(Backend::Postgres)),
    ),
    (
        "sigkill_during_indexing_leaves_no_half_written_state_sqlite",
        || Box::pin(sigkill_during_indexing(Backend::Sqlite)),
    ),
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("worker") => return role(worker(args[1..].to_vec())),
        Some("indexer") => return role(indexer(args[1..].to_vec())),
        _ => {}
    }
    let has = |flag: &str| args.iter().any(|a| a == flag);
    if has("--list") {
        if !has("--ignored") {
            for (name, _) in TESTS {
                println!("{name}: test");
            }
        }
        return ExitCode::SUCCESS;
    }
    if has("--ignored") {
        return ExitCode::SUCCESS;
    }
    let filter = args.iter().find(|a| !a.starts_with('-'));
    let selected = TESTS.iter().filter(|(name, _)| match filter {
        None => true,
        Some(f) if has("--exact") => name == f,
        Some(f) => name.contains(f.as_str()),
    });
    let mut failed = 0;
    for (name, test) in selected {
        let start = Instant::now();
        let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| runtime.block_on(test())));
        let verdict = if outcome.is_ok() { "ok" } else { "FAILED" };
        failed += usize::from(outcome.is_err());
        println!(
            "test {name} ... {verdict} ({:.1} s)",
            start.elapsed().as_secs_f64()
        );
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(101)
    }
}

fn role(work: impl Future<Output = Result<(), String>>) -> ExitCode {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    match runtime.block_on(work) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("worker: {e}");
            ExitCode::from(3)
        }
    }
}

fn spawn_self(args: &[&str]) -> Child {
    Command::new(std::env::current_exe().expect("own path"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawning a worker process")
}

/// Reads the first line a child prints (its "ready"/"claimed" signal).
fn first_line(child: &mut Child) -> String {
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().expect("piped"))
        .read_line(&mut line)
        .expect("reading the child's stdout");
    line.trim().to_owned()
}

/// Worker role: `worker URL OWNER LEASE_MS MODE`. `drain` runs jobs until none are left,
/// recording each run in `job_runs` (primary key on the job: a second run of a job fails);
/// `hang` claims one job, reports it and then hangs, to be killed.
async fn worker(args: Vec<String>) -> Result<(), String> {
    let [url, owner, lease_ms, mode] = &args[..] else {
        return Err(format!(
            "usage: worker URL OWNER LEASE_MS MODE, got {args:?}"
        ));
    };
    let store = Store::connect(url).await.map_err(|e| e.to_string())?;
    let lease = Duration::from_millis(lease_ms.parse().map_err(|_| "bad lease")?);
    let err = |e: vertebrad::store::Error| e.to_string();
    if mode == "hang" {
        let job = store
            .claim(owner, lease)
            .await
            .map_err(err)?
            .ok_or("no job to claim")?;
        println!("claimed {}", job.id);
        std::io::stdout().flush().ok();
        tokio::time::sleep(Duration::from_secs(3600)).await;
        return Ok(());
    }
    let mut conn = sqlx::PgConnection::connect(url)
        .await
        .map_err(|e| e.to_string())?;
    println!("ready");
    std::io::stdout().flush().ok();
    loop {
        if let Some(job) = store.claim(owner, lease).await.map_err(err)? {
            sqlx::query("INSERT INTO job_runs (job_id, owner) VALUES ($1, $2)")
                .bind(job.id)
                .bind(owner)
                .execute(&mut conn)
                .await
                .map_err(|e| format!("job {} ran twice? {e}", job.id))?;
            store.complete(&job).await.map_err(err)?;
        } else if store.count_jobs(JobState::Queued).await.map_err(err)?
            + store.count_jobs(JobState::Running).await.map_err(err)?
            == 0
        {
            return Ok(());
        } else {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn job_runs_table(url: &str) -> sqlx::PgConnection {
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query("CREATE TABLE job_runs (job_id BIGINT PRIMARY KEY, owner TEXT NOT NULL)")
        .execute(&mut conn)
        .await
        .unwrap();
    conn
}

fn new_job(n: usize) -> NewJob {
    NewJob {
        kind: "analyze".into(),
        series_id: None,
        dedup_key: Some(format!("job-{n}")),
        max_attempts: 3,
    }
}

async fn four_worker_processes_run_1000_jobs_exactly_once() {
    let url = support::fresh_pg_database().await;
    let store = Store::open(&url).await.unwrap();
    let mut conn = job_runs_table(&url).await;
    for n in 0..1000 {
        store.enqueue(&new_job(n)).await.unwrap();
    }
    let mut workers: Vec<Child> = (0..4)
        .map(|w| spawn_self(&["worker", &url, &format!("w{w}"), "30000", "drain"]))
        .collect();
    for w in &mut workers {
        assert_eq!(first_line(w), "ready");
    }
    for mut w in workers {
        assert!(
            w.wait().unwrap().success(),
            "a worker failed (see its stderr)"
        );
    }
    let (runs, owners): (i64, i64) =
        sqlx::query_as("SELECT COUNT(*), COUNT(DISTINCT owner) FROM job_runs")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(runs, 1000);
    assert!(
        owners >= 2,
        "only {owners} worker(s) got jobs: no concurrency was exercised"
    );
    assert_eq!(store.count_jobs(JobState::Succeeded).await.unwrap(), 1000);
    let retried: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE attempts <> 1")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(retried, 0, "every job was claimed exactly once");
}

async fn a_killed_workers_job_is_reclaimed_and_finishes() {
    let url = support::fresh_pg_database().await;
    let store = Store::open(&url).await.unwrap();
    let mut conn = job_runs_table(&url).await;
    let id = store.enqueue(&new_job(0)).await.unwrap();
    let mut doomed = spawn_self(&["worker", &url, "doomed", "1000", "hang"]);
    assert_eq!(first_line(&mut doomed), format!("claimed {id}"));
    doomed.kill().unwrap(); // SIGKILL
    doomed.wait().unwrap();
    let record = store.job(id).await.unwrap().unwrap();
    assert_eq!(
        (record.state, record.lease_owner.as_deref()),
        (JobState::Running, Some("doomed"))
    );

    let start = Instant::now();
    let mut rescuer = spawn_self(&["worker", &url, "rescuer", "30000", "drain"]);
    assert_eq!(first_line(&mut rescuer), "ready");
    assert!(rescuer.wait().unwrap().success());
    assert!(start.elapsed() < Duration::from_secs(10));
    let record = store.job(id).await.unwrap().unwrap();
    assert_eq!((record.state, record.attempts), (JobState::Succeeded, 2));
    assert_eq!(
        record.last_error.as_deref(),
        Some("lease of doomed expired")
    );
    let owners: Vec<String> = sqlx::query_scalar("SELECT owner FROM job_runs")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert_eq!(owners, ["rescuer"]);
}

#[derive(Clone, Copy)]
enum Backend {
    Postgres,
    Sqlite,
}

/// Instances indexed per transaction by the indexer (each with its own study and series).
const BATCH: usize = 20;

/// Indexer role: `indexer URL PREFIX`. Indexes batches of [`BATCH`] instances, each in its
/// own new study and series, forever; the parent kills it.
async fn indexer(args: Vec<String>) -> Result<(), String> {
    let [url, prefix] = &args[..] else {
        return Err(format!("usage: indexer URL PREFIX, got {args:?}"));
    };
    let store = Store::connect(url).await.map_err(|e| e.to_string())?;
    println!("ready");
    std::io::stdout().flush().ok();
    for batch in 0_u64.. {
        let instances: Vec<NewInstance> = (0..BATCH)
            .map(|i| {
                let uid = format!("{prefix}.{batch}.{i}");
                NewInstance {
                    study: NewStudy {
                        study_uid: uid.clone(),
                        patient_name: None,
                        patient_id: None,
                        study_date: None,
                    },
                    series: NewSeries {
                        series_uid: format!("{uid}.1"),
                        modality: "CT".into(),
                    },
                    sop_instance_uid: format!("{uid}.1.1"),
                    sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
                    transfer_syntax: "1.2.840.10008.1.2.1".into(),
                    spool_path: format!("/spool/{uid}"),
                    size_bytes: 1,
                    sha256: "0".repeat(64),
                    received_at_ms: 0,
                    calling_ae: "AE".into(),
                    peer_addr: "127.0.0.1:1".into(),
                }
            })
            .collect();
        store
            .index_instances(&instances)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

async fn sigkill_during_indexing(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let url = match backend {
        Backend::Postgres => support::fresh_pg_database().await,
        Backend::Sqlite => format!("sqlite://{}/crash.db", dir.path().display()),
    };
    Store::open(&url).await.unwrap().close().await;
    let mut rng = ChaCha8Rng::seed_from_u64(0x5EED_0004);
    let mut indexed_total = 0;
    for iteration in 0..6 {
        let prefix = format!("9.{iteration}");
        let mut child = spawn_self(&["indexer", &url, &prefix]);
        assert_eq!(first_line(&mut child), "ready");
        let delay = rng.random_range(5..120);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        child.kill().unwrap();
        child.wait().unwrap();

        // Reopening runs recovery (SQLite replays or discards its WAL tail).
        let store = Store::open(&url).await.unwrap();
        let pattern = format!("{prefix}.%");
        let (studies, series, instances, orphans) = counts(&url, &pattern, backend).await;
        assert_eq!(
            (studies, series),
            (instances, instances),
            "iteration {iteration} (kill after {delay} ms): studies/series/instances disagree"
        );
        assert_eq!(
            orphans, 0,
            "iteration {iteration}: a study without its series+instance"
        );
        assert_eq!(
            instances % BATCH as i64,
            0,
            "iteration {iteration}: a batch was partly committed"
        );
        indexed_total += instances;
        println!("  iteration {iteration}: killed after {delay} ms, {instances} instances indexed");
        if store.backend() == BackendKind::Sqlite {
            let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
            let check: String = sqlx::query_scalar("PRAGMA integrity_check")
                .fetch_one(&mut c)
                .await
                .unwrap();
            assert_eq!(check, "ok");
        }
        store.close().await;
    }
    assert!(
        indexed_total > 0,
        "no kill landed after indexing began: the test proved nothing"
    );
}

async fn counts(url: &str, pattern: &str, backend: Backend) -> (i64, i64, i64, i64) {
    const SQL: &str = "SELECT
        (SELECT COUNT(*) FROM studies WHERE study_uid LIKE $1),
        (SELECT COUNT(*) FROM series WHERE series_uid LIKE $1),
        (SELECT COUNT(*) FROM instances WHERE sop_instance_uid LIKE $1),
        (SELECT COUNT(*) FROM studies s WHERE s.study_uid LIKE $1 AND NOT EXISTS (
            SELECT 1 FROM series se JOIN instances i ON i.series_id = se.id
            WHERE se.study_id = s.id))";
    match backend {
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::query_as(SQL)
                .bind(pattern)
                .fetch_one(&mut c)
                .await
                .unwrap()
        }
        Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
            sqlx::query_as(SQL)
                .bind(pattern)
                .fetch_one(&mut c)
                .await
                .unwrap()
        }
    }
}
