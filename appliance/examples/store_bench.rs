//! Store benchmark: instance indexing rate (batched vs one row per transaction) and job-claim
//! latency with 4 concurrent workers, on PostgreSQL and SQLite.
//!
//! ```text
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//!     cargo run -p vertebrad --example store_bench
//! ```
//!
//! `DATABASE_URL` names a PostgreSQL server whose role may create databases; the benchmark
//! works in a fresh database `vertebrad_bench` (dropped and recreated). SQLite runs in a temp
//! file. Both use the store's production settings (PostgreSQL as configured on the server,
//! SQLite with WAL and `synchronous = FULL`).

use std::time::{Duration, Instant};

use sqlx::Connection;
use vertebrad::store::queue::NewJob;
use vertebrad::store::{NewInstance, NewSeries, NewStudy, Store};

/// Instances indexed in batches, and the batch size (a series-sized commit).
const BATCHED: usize = 20_000;
const BATCH: usize = 500;
/// Instances indexed one per transaction (the baseline).
const SINGLE: usize = 2_000;
/// Jobs claimed by the workers.
const JOBS: usize = 2_000;
const WORKERS: usize = 4;

fn instance(run: &str, n: usize) -> NewInstance {
    // 500 instances per series, 2 series per study, like CT series arriving in bulk.
    let series = n / 500;
    NewInstance {
        study: NewStudy {
            study_uid: format!("1.2.826.0.1.{run}.{}", series / 2),
            patient_name: Some("BENCH^PATIENT".into()),
            patient_id: Some("BENCH-1".into()),
            study_date: Some("20260101".into()),
        },
        series: NewSeries {
            series_uid: format!("1.2.826.0.2.{run}.{series}"),
            modality: "CT".into(),
        },
        sop_instance_uid: format!("1.2.826.0.3.{run}.{n}"),
        sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
        transfer_syntax: "1.2.840.10008.1.2.1".into(),
        spool_path: format!("/var/lib/vertebra/spool/{run}/{n:08}.dcm"),
        size_bytes: 526_336,
        sha256: format!("{n:064x}"),
        received_at_ms: 1_764_000_000_000 + n as i64,
        calling_ae: "CT_SCANNER_01".into(),
        peer_addr: "10.20.30.40:51234".into(),
    }
}

async fn indexing(store: &Store) -> Result<(f64, f64), vertebrad::store::Error> {
    let start = Instant::now();
    for n in 0..SINGLE {
        store.index_instance(&instance("single", n)).await?;
    }
    let single = SINGLE as f64 / start.elapsed().as_secs_f64();
    let rows: Vec<NewInstance> = (0..BATCHED).map(|n| instance("batched", n)).collect();
    let start = Instant::now();
    for chunk in rows.chunks(BATCH) {
        store.index_instances(chunk).await?;
    }
    let batched = BATCHED as f64 / start.elapsed().as_secs_f64();
    Ok((single, batched))
}

/// Returns (claims per second, p50, p99 claim latency).
async fn claims(store: &Store) -> Result<(f64, Duration, Duration), vertebrad::store::Error> {
    for n in 0..JOBS {
        store
            .enqueue(&NewJob {
                kind: "analyze".into(),
                series_id: None,
                dedup_key: Some(format!("bench-{n}")),
                max_attempts: 3,
            })
            .await?;
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..WORKERS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let t = Instant::now();
                let Some(job) = store
                    .claim(&format!("bench-{w}"), Duration::from_secs(60))
                    .await?
                else {
                    return Ok::<_, vertebrad::store::Error>(latencies);
                };
                latencies.push(t.elapsed());
                store.complete(&job).await?;
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("worker task")?);
    }
    let rate = all.len() as f64 / start.elapsed().as_secs_f64();
    all.sort();
    let pct = |p: f64| all[((all.len() - 1) as f64 * p) as usize];
    Ok((rate, pct(0.5), pct(0.99)))
}

async fn report(name: &str, store: &Store) -> Result<(), vertebrad::store::Error> {
    let (single, batched) = indexing(store).await?;
    println!(
        "{name:<10} indexing: batched ({BATCH}/tx) {batched:>8.0} rows/s | one row per tx \
         {single:>7.0} rows/s | ratio {:.1}x",
        batched / single
    );
    let (rate, p50, p99) = claims(store).await?;
    println!(
        "{name:<10} claims, {WORKERS} workers: {rate:>6.0} claim+complete/s | claim latency \
         p50 {:.2} ms, p99 {:.2} ms",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let admin = std::env::var("DATABASE_URL")
        .map_err(|_| "set DATABASE_URL to a PostgreSQL server (role with CREATEDB)")?;
    let mut conn = sqlx::PgConnection::connect(&admin).await?;
    sqlx::query("DROP DATABASE IF EXISTS vertebrad_bench")
        .execute(&mut conn)
        .await?;
    sqlx::query("CREATE DATABASE vertebrad_bench")
        .execute(&mut conn)
        .await?;
    let (base, query) = admin
        .split_once('?')
        .map_or((admin.as_str(), ""), |(b, q)| (b, q));
    let host_end = base
        .rfind('/')
        .filter(|&i| i > base.find("://").unwrap_or(0) + 2);
    let url = format!(
        "{}/vertebrad_bench{}{query}",
        &base[..host_end.unwrap_or(base.len())],
        if query.is_empty() { "" } else { "?" }
    );
    let pg = Store::open(&url).await?;
    report("postgres", &pg).await?;
    pg.close().await;

    let dir = tempfile::tempdir()?;
    let sqlite = Store::open(&format!("sqlite://{}/bench.db", dir.path().display())).await?;
    report("sqlite", &sqlite).await?;
    sqlite.close().await;
    sqlx::query("DROP DATABASE vertebrad_bench WITH (FORCE)")
        .execute(&mut conn)
        .await?;
    Ok(())
}
