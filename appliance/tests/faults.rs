//! Fault tests with real processes: the `vertebrad serve` binary on PostgreSQL, DCMTK `storescu`
//! as the modality and DCMTK `storescp` as the PACS, and faults injected from outside:
//!
//! - `kill -9` of the daemon at seeded random points in four phases (mid-association, the
//!   fsync window right after an instance was answered, mid-job, mid-delivery), restarting it
//!   each time: every instance answered Success stays spooled (sha256) and indexed, every
//!   study gets one result covering all its instances, every result reaches the PACS;
//! - the test's PostgreSQL server stopped and started under the running daemon: C-STORE
//!   answers failures (never Success) while it is down, the daemon reconnects, logs the outage
//!   and the recovery, and loses nothing;
//! - the spool (a small tmpfs) above its high-water mark: C-STORE answers 0xA700, and accepts
//!   again once space is freed;
//! - 50 concurrent associations against a limit of 10: each is served or refused with a
//!   transient A-ASSOCIATE-RJ, none hangs or fails otherwise, peak RSS stays bounded.
//!
//! Seeds and sizes come from `VERTEBRA_FAULT_SEED` and `VERTEBRA_FAULT_KILLS` (defaults below,
//! printed); `scripts/soak.sh` runs the same tests longer. DICOM delivery is at-least-once: a
//! kill after the PACS stored an object but before the daemon recorded it sends the object
//! again, so the PACS is checked by distinct SOP Instance UIDs (`storescp +uf` keeps every
//! copy, and the number of copies sent twice is printed).

mod support;

use support::e2e::{
    Running, dcmtk, pacs_on, phantom_series_sized, setup_database, start_daemon_configured,
};

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dicom_dictionary_std::tags;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};
use sqlx::{Connection, PgConnection};

/// The tests of this file run one at a time: one stops the PostgreSQL server every test of
/// the process shares, and each of them loads both cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Slices of every phantom study (64 × 64 in-plane).
const SLICES: usize = 40;
/// Default seed of the kill schedule.
const DEFAULT_SEED: u64 = 20_261_128;
/// Default number of kills per run.
const DEFAULT_KILLS: usize = 24;
/// The worker's job lease in these tests (seconds): a killed job is taken over this soon.
const JOB_LEASE_S: u64 = 4;
/// The forwarder's delivery lease (seconds): longer than one batch at the slow PACS.
const DELIVERY_LEASE_S: i64 = 8;

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a non-negative integer")),
        Err(_) => default,
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Configuration shared by the tests: fast retries, short leases, many job attempts (every
/// kill mid-job costs one).
const FORWARD: &str = "backoff_base_s = 0.5\nbackoff_max_s = 2.0\nmax_attempts = 1000\n\
                       lease_s = 8\nbatch_size = 2";
fn tables(extra: &str) -> String {
    format!(
        "[worker]\nlease_s = {JOB_LEASE_S}\npoll_interval_s = 0.25\n\
         [dicom.completion]\njob_max_attempts = 1000\n{extra}"
    )
}

/// A phantom study on disk and what the modality knows about it.
struct Study {
    files: Vec<PathBuf>,
    sop_uids: Vec<String>,
    series_uid: String,
    /// Which files the daemon answered with Success.
    acked: Vec<bool>,
}

impl Study {
    fn new(dir: &Path, seed: u64) -> Self {
        let out = phantom_series_sized(dir, seed, 64, Some(SLICES));
        let mut files: Vec<PathBuf> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        let mut sop_uids = Vec::new();
        let mut series_uid = String::new();
        for f in &files {
            let obj = dicom_object::OpenFileOptions::new()
                .read_until(tags::PIXEL_DATA)
                .open_file(f)
                .unwrap();
            sop_uids.push(clean(obj.meta().media_storage_sop_instance_uid()));
            series_uid = clean(
                &obj.element(tags::SERIES_INSTANCE_UID)
                    .unwrap()
                    .to_str()
                    .unwrap(),
            );
        }
        let n = files.len();
        Self {
            files,
            sop_uids,
            series_uid,
            acked: vec![false; n],
        }
    }

    fn unacked(&self) -> Vec<PathBuf> {
        self.files
            .iter()
            .zip(&self.acked)
            .filter(|(_, a)| !**a)
            .map(|(f, _)| f.clone())
            .collect()
    }

    fn acked_count(&self) -> usize {
        self.acked.iter().filter(|a| **a).count()
    }
}

fn clean(uid: &str) -> String {
    uid.trim_end_matches(['\0', ' ']).to_owned()
}

/// What storescu reported.
#[derive(Debug)]
enum Event {
    Accepted,
    Stored(PathBuf),
    Refused(PathBuf, String),
    Rejected,
    Exited,
}

/// A running `storescu -v -nh` (it goes on after a refused instance, so every instance gets
/// its own answer), its output parsed into [`Event`]s as it happens.
struct StoreScu {
    child: Running,
    events: mpsc::Receiver<Event>,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

fn storescu(port: u16, files: &[PathBuf]) -> StoreScu {
    let mut child = Command::new(dcmtk("storescu"))
        .args(["-v", "-nh", "-aet", "MODALITY", "-aec", "VERTEBRA"])
        .args(["-to", "30", "-ta", "30", "-td", "120"])
        .arg("127.0.0.1")
        .arg(port.to_string())
        .args(files)
        .env("TCP_NODELAY", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting storescu");
    let stderr = child.stderr.take().unwrap();
    let (tx, events) = mpsc::channel();
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log2 = log.clone();
    std::thread::spawn(move || {
        let mut current: Option<PathBuf> = None;
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let event = if line.contains("Association Accepted") {
                Some(Event::Accepted)
            } else if let Some(f) = line.split("Sending file: ").nth(1) {
                current = Some(PathBuf::from(f.trim()));
                None
            } else if line.contains("Received Store Response") {
                let f = current.take().unwrap_or_default();
                if line.contains("(Success)") {
                    Some(Event::Stored(f))
                } else {
                    Some(Event::Refused(f, line.clone()))
                }
            } else if line.contains("Association Rejected") {
                Some(Event::Rejected)
            } else {
                None
            };
            log2.lock().unwrap().push(line);
            if let Some(e) = event {
                let _ = tx.send(e);
            }
        }
        let _ = tx.send(Event::Exited);
    });
    StoreScu {
        child: Running(child),
        events,
        log,
    }
}

/// Everything the modality keeps track of: the studies and which instances were answered.
struct Modality {
    dir: PathBuf,
    studies: Vec<Study>,
    index: HashMap<PathBuf, (usize, usize)>,
    next_seed: u64,
    /// storescu's output of the latest finished send (for failure messages).
    last_log: String,
}

impl Modality {
    fn new(dir: &Path, first_seed: u64) -> Self {
        Self {
            dir: dir.join("studies"),
            studies: Vec::new(),
            index: HashMap::new(),
            next_seed: first_seed,
            last_log: String::new(),
        }
    }

    fn new_study(&mut self) -> usize {
        let s = Study::new(&self.dir, self.next_seed);
        self.next_seed += 1;
        let i = self.studies.len();
        for (j, f) in s.files.iter().enumerate() {
            self.index.insert(f.clone(), (i, j));
        }
        self.studies.push(s);
        i
    }

    /// Records one storescu event; returns whether it was a Success answer.
    fn record(&mut self, e: &Event) -> bool {
        if let Event::Stored(f) = e {
            let (i, j) = self.index[f];
            self.studies[i].acked[j] = true;
            return true;
        }
        false
    }

    /// Reads the rest of `scu`'s events until it exits (bounded); returns the refusals.
    fn finish(&mut self, scu: StoreScu) -> Vec<(PathBuf, String)> {
        let deadline = Instant::now() + Duration::from_secs(180);
        let mut refused = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match scu.events.recv_timeout(left) {
                Ok(Event::Exited) => break,
                Ok(Event::Refused(f, why)) => refused.push((f, why)),
                Ok(e) => {
                    self.record(&e);
                }
                Err(e) => panic!(
                    "storescu did not finish within 180 s ({e}):\n{}",
                    scu.log.lock().unwrap().join("\n")
                ),
            }
        }
        drop(scu.child);
        self.last_log = scu.log.lock().unwrap().join("\n");
        refused
    }

    /// Sends every instance not yet answered Success (a modality retrying), one association;
    /// returns the refusals.
    fn resend(&mut self, port: u16) -> Vec<(PathBuf, String)> {
        let files: Vec<PathBuf> = self.studies.iter().flat_map(Study::unacked).collect();
        if files.is_empty() {
            return Vec::new();
        }
        let scu = storescu(port, &files);
        self.finish(scu)
    }

    fn all_acked(&self) -> bool {
        self.studies.iter().all(|s| s.acked.iter().all(|a| *a))
    }
}

/// The data set of a Part 10 file: what follows its meta group.
fn data_set(bytes: &[u8]) -> &[u8] {
    assert_eq!(&bytes[128..132], b"DICM", "not a Part 10 file");
    assert_eq!(
        &bytes[132..138],
        [2, 0, 0, 0, b'U', b'L'],
        "no group length first"
    );
    let len = u32::from_le_bytes(bytes[140..144].try_into().unwrap()) as usize;
    &bytes[144 + len..]
}

/// Every instance answered Success is indexed, its spool file is there with the indexed
/// sha256, and holds the data set that was sent, byte for byte. Returns how many were checked.
async fn check_acknowledged(db: &mut PgConnection, modality: &Modality) -> usize {
    let mut checked = 0;
    for s in &modality.studies {
        let uids: Vec<String> = s
            .sop_uids
            .iter()
            .zip(&s.acked)
            .filter(|(_, a)| **a)
            .map(|(u, _)| u.clone())
            .collect();
        let rows: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT sop_instance_uid, spool_path, sha256 FROM instances
             WHERE sop_instance_uid = ANY($1)",
        )
        .bind(&uids)
        .fetch_all(&mut *db)
        .await
        .unwrap();
        let rows: HashMap<String, (String, String)> =
            rows.into_iter().map(|(u, p, h)| (u, (p, h))).collect();
        for (j, uid) in s.sop_uids.iter().enumerate() {
            if !s.acked[j] {
                continue;
            }
            let (path, sha) = rows.get(uid).unwrap_or_else(|| {
                panic!("instance {uid} was answered Success but is not indexed")
            });
            let spooled = std::fs::read(path)
                .unwrap_or_else(|e| panic!("instance {uid} is indexed at {path}: {e}"));
            assert_eq!(
                &hex::encode(Sha256::digest(&spooled)),
                sha,
                "spooled file of {uid} does not match its indexed sha256"
            );
            let sent = std::fs::read(&s.files[j]).unwrap();
            assert_eq!(
                data_set(&spooled),
                data_set(&sent),
                "spooled data set of {uid} differs from what was sent"
            );
            checked += 1;
        }
    }
    checked
}

/// The daemon under test, restartable.
struct Daemon {
    dir: PathBuf,
    database: String,
    tables: String,
    process: Option<Running>,
    port: u16,
    started_ms: i64,
    restarts: usize,
}

impl Daemon {
    fn start(dir: &Path, database: &str, tables: String) -> Self {
        let started_ms = now_ms();
        let (process, port) = start_daemon_configured(dir, database, FORWARD, &tables);
        Self {
            dir: dir.to_owned(),
            database: database.to_owned(),
            tables,
            process: Some(process),
            port,
            started_ms,
            restarts: 0,
        }
    }

    fn pid(&self) -> u32 {
        self.process.as_ref().expect("daemon running").0.id()
    }

    /// kill -9, and wait until it is gone.
    fn kill9(&mut self) {
        let mut p = self.process.take().expect("daemon running");
        p.0.kill().unwrap();
        p.0.wait().unwrap();
    }

    fn restart(&mut self) {
        assert!(self.process.is_none());
        self.started_ms = now_ms();
        let (process, port) =
            start_daemon_configured(&self.dir, &self.database, FORWARD, &self.tables);
        self.process = Some(process);
        self.port = port;
        self.restarts += 1;
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("vertebrad.log")).unwrap_or_default()
    }

    /// Fails the test with the log when the daemon exited on its own.
    fn assert_alive(&mut self) {
        let exited = self.process.as_mut().unwrap().0.try_wait().unwrap();
        assert!(
            exited.is_none(),
            "vertebrad exited ({exited:?}); log:\n{}",
            self.log()
        );
    }

    /// Peak resident set size (VmHWM) in KiB.
    fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/<pid>/status")
    }
}

async fn scalar(db: &mut PgConnection, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(db).await.unwrap()
}

/// A job running under the current daemon: (id, attempt).
async fn running_job(db: &mut PgConnection, pid: u32) -> Option<(i64, i32)> {
    sqlx::query_as(
        "SELECT id, attempts FROM jobs WHERE state = 'running' AND lease_owner LIKE $1
         ORDER BY id LIMIT 1",
    )
    .bind(format!("%:{pid}"))
    .fetch_optional(db)
    .await
    .unwrap()
}

/// A delivery claimed by the current daemon and not yet recorded: its id.
async fn delivery_in_flight(db: &mut PgConnection, started_ms: i64) -> Option<i64> {
    sqlx::query_scalar(
        "SELECT id FROM deliveries WHERE state = 'pending' AND next_attempt_at_ms > $1
             AND next_attempt_at_ms - $2 >= $3 ORDER BY id LIMIT 1",
    )
    .bind(now_ms())
    .bind(DELIVERY_LEASE_S * 1000)
    .bind(started_ms)
    .fetch_optional(db)
    .await
    .unwrap()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    /// While storescu is sending (a random time into the association).
    MidAssociation,
    /// Right after storescu read a Success answer: the daemon is receiving, fsyncing and
    /// indexing the next instance.
    FsyncWindow,
    /// While the worker analyses a series.
    MidJob,
    /// While the forwarder is sending to the (slow) PACS.
    MidDelivery,
}

const PHASES: [Phase; 4] = [
    Phase::MidAssociation,
    Phase::FsyncWindow,
    Phase::MidJob,
    Phase::MidDelivery,
];

/// Kills the daemon in `phase`; returns what the kill hit (for the printed log).
async fn kill_in_phase(
    phase: Phase,
    rng: &mut ChaCha8Rng,
    daemon: &mut Daemon,
    modality: &mut Modality,
    db: &mut PgConnection,
    job_estimate: &mut Duration,
) -> String {
    match phase {
        Phase::MidAssociation | Phase::FsyncWindow => {
            let i = modality.new_study();
            let n = modality.studies[i].files.len();
            let target = rng.random_range(1..n);
            let delay = Duration::from_millis(rng.random_range(0..400));
            let scu = storescu(daemon.port, &modality.studies[i].files);
            let mut accepted_at = None;
            let mut acked = 0;
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                assert!(Instant::now() < deadline, "storescu made no progress");
                match scu.events.recv_timeout(Duration::from_millis(2)) {
                    Ok(Event::Accepted) => accepted_at = Some(Instant::now()),
                    Ok(Event::Exited) => panic!(
                        "storescu ended before the kill:\n{}",
                        scu.log.lock().unwrap().join("\n")
                    ),
                    Ok(e) => {
                        if modality.record(&e) {
                            acked += 1;
                        }
                    }
                    Err(_) => {}
                }
                let due = match phase {
                    Phase::FsyncWindow => acked >= target,
                    _ => accepted_at.is_some_and(|t| t.elapsed() >= delay) || acked + 1 >= n,
                };
                if due {
                    break;
                }
            }
            daemon.kill9();
            modality.finish(scu);
            let acked = modality.studies[i].acked_count();
            format!("{acked}/{n} instances of a new study answered Success before the kill")
        }
        Phase::MidJob => {
            for _ in 0..10 {
                if scalar(
                    db,
                    "SELECT COUNT(*) FROM jobs WHERE state IN ('queued', 'running')",
                )
                .await
                    == 0
                {
                    let i = modality.new_study();
                    let scu = storescu(daemon.port, &modality.studies[i].files);
                    modality.finish(scu);
                }
                let deadline = Instant::now() + Duration::from_secs(90);
                let (job, attempt) = loop {
                    if let Some(j) = running_job(db, daemon.pid()).await {
                        break j;
                    }
                    assert!(Instant::now() < deadline, "no job started within 90 s");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                };
                let seen = Instant::now();
                let delay = job_estimate.mul_f64(rng.random_range(0.0..0.8));
                tokio::time::sleep(delay).await;
                if running_job(db, daemon.pid()).await == Some((job, attempt)) {
                    daemon.kill9();
                    return format!(
                        "job {job} (attempt {attempt}) killed {:.2} s after it was seen running",
                        seen.elapsed().as_secs_f64()
                    );
                }
                // It finished first: learn how long jobs take, try again.
                *job_estimate = seen.elapsed();
            }
            panic!("no job could be caught running in 10 tries");
        }
        Phase::MidDelivery => {
            for _ in 0..10 {
                let pending = scalar(
                    db,
                    "SELECT COUNT(*) FROM deliveries WHERE state = 'pending'",
                )
                .await;
                let busy = scalar(
                    db,
                    "SELECT COUNT(*) FROM jobs WHERE state IN ('queued', 'running')",
                )
                .await;
                if pending == 0 && busy == 0 {
                    let i = modality.new_study();
                    let scu = storescu(daemon.port, &modality.studies[i].files);
                    modality.finish(scu);
                }
                let deadline = Instant::now() + Duration::from_secs(120);
                let delivery = loop {
                    if let Some(d) = delivery_in_flight(db, daemon.started_ms).await {
                        break d;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "no delivery started within 120 s"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                };
                // The PACS pauses a second after each object (--sleep-after 1): a batch stays in
                // flight about two seconds.
                tokio::time::sleep(Duration::from_millis(rng.random_range(0..900))).await;
                if delivery_in_flight(db, daemon.started_ms).await.is_some() {
                    daemon.kill9();
                    return format!("delivery {delivery} (and its batch) in flight");
                }
            }
            panic!("no delivery could be caught in flight in 10 tries");
        }
    }
}

/// Waits until every study has a result and every delivery is delivered (bounded).
async fn wait_until_settled(
    db: &mut PgConnection,
    daemon: &Daemon,
    studies: usize,
    limit: Duration,
) {
    let started = Instant::now();
    loop {
        let (results, undelivered, outputs): (i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM results r WHERE r.status = 'succeeded'
                       AND NOT EXISTS (SELECT 1 FROM jobs k WHERE k.series_id = r.series_id
                           AND k.state IN ('queued', 'running'))
                       AND NOT EXISTS (SELECT 1 FROM instances i WHERE i.series_id = r.series_id
                           AND i.received_at_ms > (SELECT MAX(created_at_ms) FROM jobs j
                               WHERE j.series_id = r.series_id))),
                    (SELECT COUNT(*) FROM deliveries WHERE state <> 'delivered'),
                    (SELECT COUNT(*) FROM outputs)",
        )
        .fetch_one(&mut *db)
        .await
        .unwrap();
        // At least SEG + SR per study: a re-analysis after late instances adds its own pair
        // under new UIDs (the superseded pair stays delivered).
        if results == studies as i64 && undelivered == 0 && outputs >= 2 * studies as i64 {
            return;
        }
        assert!(
            started.elapsed() < limit,
            "not settled after {limit:?}: {results}/{studies} results, {undelivered} \
             deliveries not delivered, {outputs} outputs; log:\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The end state: one succeeded result per study covering all its instances, nothing dead,
/// every output delivered and present at the PACS. Returns (files at the PACS, distinct SOP
/// Instance UIDs among them).
async fn check_end_state(
    db: &mut PgConnection,
    daemon: &Daemon,
    modality: &Modality,
    pacs_dir: &Path,
) -> (usize, usize) {
    let dead = scalar(
        db,
        "SELECT COUNT(*) FROM jobs WHERE state IN ('dead', 'failed')",
    )
    .await;
    assert_eq!(dead, 0, "jobs gave up; log:\n{}", daemon.log());
    let rows: Vec<(String, i64, String)> = sqlx::query_as(
        "SELECT se.series_uid, se.id, r.status FROM results r
         JOIN series se ON se.id = r.series_id",
    )
    .fetch_all(&mut *db)
    .await
    .unwrap();
    assert_eq!(rows.len(), modality.studies.len(), "one result per study");
    let by_series: HashMap<&str, (i64, &str)> = rows
        .iter()
        .map(|(u, id, st)| (u.as_str(), (*id, st.as_str())))
        .collect();
    for s in &modality.studies {
        let (id, status) = by_series
            .get(s.series_uid.as_str())
            .unwrap_or_else(|| panic!("no result for series {}", s.series_uid));
        assert_eq!(*status, "succeeded", "series {}", s.series_uid);
        let doc = daemon
            .dir
            .join(format!("state/results/series-{id}/result.json"));
        let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&doc).unwrap()).unwrap();
        assert_eq!(
            doc["input"]["instances"],
            s.files.len(),
            "the result of series {} covers every instance",
            s.series_uid
        );
    }
    let outputs: Vec<(String, String)> = sqlx::query_as(
        "SELECT o.sop_instance_uid, d.state FROM outputs o JOIN deliveries d ON d.output_id = o.id",
    )
    .fetch_all(&mut *db)
    .await
    .unwrap();
    // SEG + SR per analysis: one pair per study, plus one per re-analysis after late
    // instances (new input set, new UIDs; the superseded pair was delivered too).
    assert!(
        outputs.len() >= 2 * modality.studies.len() && outputs.len() % 2 == 0,
        "SEG + SR per study and per re-analysis: {} outputs for {} studies",
        outputs.len(),
        modality.studies.len()
    );
    println!(
        "outputs: {} for {} studies ({} re-analyses after late instances)",
        outputs.len(),
        modality.studies.len(),
        (outputs.len() - 2 * modality.studies.len()) / 2
    );
    assert!(
        outputs.iter().all(|(_, st)| st == "delivered"),
        "{outputs:?}"
    );
    let expected: HashSet<String> = outputs.into_iter().map(|(u, _)| u).collect();
    let mut received: BTreeMap<String, usize> = BTreeMap::new();
    let mut files = 0;
    for f in std::fs::read_dir(pacs_dir).unwrap() {
        let f = f.unwrap().path();
        let obj = dicom_object::OpenFileOptions::new()
            .read_until(tags::PIXEL_DATA)
            .open_file(&f)
            .unwrap_or_else(|e| panic!("{} at the PACS: {e}", f.display()));
        *received
            .entry(clean(obj.meta().media_storage_sop_instance_uid()))
            .or_default() += 1;
        files += 1;
    }
    let got: HashSet<String> = received.keys().cloned().collect();
    assert_eq!(got, expected, "the PACS holds exactly the results' outputs");
    // The PACS has the final analysis, not an earlier one under the same UID: the newest copy
    // of each SEG has the frames and source references of the SEG the last job wrote.
    let mut newest: HashMap<String, (SystemTime, (u32, usize))> = HashMap::new();
    for f in std::fs::read_dir(pacs_dir).unwrap() {
        let f = f.unwrap();
        let Some((uid, shape)) = seg_shape(&f.path()) else {
            continue;
        };
        let t = f.metadata().unwrap().modified().unwrap();
        if newest.get(&uid).is_none_or(|(old, _)| *old < t) {
            newest.insert(uid, (t, shape));
        }
    }
    for (_, id, _) in &rows {
        let seg = daemon
            .dir
            .join(format!("state/results/series-{id}/seg.dcm"));
        let (uid, shape) = seg_shape(&seg).expect("the result's SEG");
        let at_pacs = newest.get(&uid).map(|(_, s)| *s);
        assert_eq!(
            at_pacs,
            Some(shape),
            "the PACS's SEG {uid} (frames, referenced instances) is not the final analysis"
        );
    }
    (files, got.len())
}

/// A SEG's SOP Instance UID, number of frames and number of referenced source instances;
/// `None` for other objects.
fn seg_shape(path: &Path) -> Option<(String, (u32, usize))> {
    let obj = dicom_object::OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .open_file(path)
        .ok()?;
    if clean(&obj.element(tags::MODALITY).ok()?.to_str().ok()?) != "SEG" {
        return None;
    }
    let frames = obj
        .element(tags::NUMBER_OF_FRAMES)
        .ok()?
        .to_int::<u32>()
        .ok()?;
    let refs = obj
        .element(tags::REFERENCED_SERIES_SEQUENCE)
        .ok()?
        .items()?
        .first()?
        .element(tags::REFERENCED_INSTANCE_SEQUENCE)
        .ok()?
        .items()?
        .len();
    Some((
        clean(obj.meta().media_storage_sop_instance_uid()),
        (frames, refs),
    ))
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_at_random_points_loses_nothing_and_every_result_is_delivered() {
    let _serial = SERIAL.lock().await;
    let seed = env_u64("VERTEBRA_FAULT_SEED", DEFAULT_SEED);
    let kills = usize::try_from(env_u64("VERTEBRA_FAULT_KILLS", DEFAULT_KILLS as u64)).unwrap();
    assert!(kills >= 4, "VERTEBRA_FAULT_KILLS must be at least 4");
    println!("fault seed {seed} (VERTEBRA_FAULT_SEED), {kills} kills (VERTEBRA_FAULT_KILLS)");
    let started = Instant::now();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut schedule: Vec<Phase> = (0..kills).map(|k| PHASES[k % PHASES.len()]).collect();
    schedule.shuffle(&mut rng);

    let dir = tempfile::tempdir().unwrap();
    let database = support::fresh_pg_database().await;
    let pacs_dir = dir.path().join("pacs");
    std::fs::create_dir_all(&pacs_dir).unwrap();
    let pacs_port = support::e2e::free_port();
    // +uf keeps every copy the PACS receives (duplicates stay visible); a slow PACS keeps
    // deliveries in flight long enough to be killed.
    let _pacs = pacs_on(&pacs_dir, pacs_port, &["+uf", "--sleep-after", "1"]);
    setup_database(dir.path(), &database, pacs_port);
    let mut daemon = Daemon::start(dir.path(), &database, tables(""));
    let mut db = PgConnection::connect(&database).await.unwrap();
    let mut modality = Modality::new(dir.path(), seed.wrapping_mul(1000));
    let mut job_estimate = Duration::from_secs(3);
    let mut hits: BTreeMap<Phase, usize> = BTreeMap::new();
    for (k, &phase) in schedule.iter().enumerate() {
        // The modality retries what was not answered Success.
        let refused = modality.resend(daemon.port);
        assert!(refused.is_empty(), "refused on a resend: {refused:?}");
        let what = kill_in_phase(
            phase,
            &mut rng,
            &mut daemon,
            &mut modality,
            &mut db,
            &mut job_estimate,
        )
        .await;
        *hits.entry(phase).or_default() += 1;
        println!(
            "kill {:>2}/{kills} {phase:?} at {:.1} s: {what}",
            k + 1,
            started.elapsed().as_secs_f64()
        );
        daemon.restart();
        let checked = check_acknowledged(&mut db, &modality).await;
        println!("  restarted; {checked} acknowledged instances spooled, hashed and indexed");
    }
    for _ in 0..3 {
        let refused = modality.resend(daemon.port);
        assert!(refused.is_empty(), "refused on a resend: {refused:?}");
        if modality.all_acked() {
            break;
        }
    }
    assert!(modality.all_acked(), "instances still not acknowledged");
    // Every study is analysed and delivered after the last kill: allow for each.
    let studies = modality.studies.len();
    let limit = Duration::from_secs(120 + 12 * studies as u64);
    wait_until_settled(&mut db, &daemon, studies, limit).await;
    daemon.assert_alive();
    let checked = check_acknowledged(&mut db, &modality).await;
    let (files, distinct) = check_end_state(&mut db, &daemon, &modality, &pacs_dir).await;
    let attempts: i64 = scalar(
        &mut db,
        "SELECT COALESCE(SUM(attempts), 0)::BIGINT FROM jobs",
    )
    .await;
    let jobs: i64 = scalar(&mut db, "SELECT COUNT(*) FROM jobs").await;
    let recovered = daemon
        .log()
        .matches("series received before a restart and not yet queued")
        .count();
    println!(
        "{kills} kills ({hits:?}), {} studies, {checked} instances checked, {jobs} jobs \
         ({attempts} attempts), {recovered} restarts found series left unqueued, PACS: {files} \
         files for {distinct} SOP instances ({} sent again after a kill), {:.1} s",
        modality.studies.len(),
        files - distinct,
        started.elapsed().as_secs_f64()
    );
    assert_eq!(hits.values().sum::<usize>(), kills);
    assert!(kills < 20 || hits.len() == PHASES.len());
}

/// The log lines that name a store outage.
const WORKER_DOWN: &str = "store unavailable: the analysis worker cannot claim jobs";
const FORWARDER_DOWN: &str = "store unavailable: the forwarder cannot claim deliveries";

#[tokio::test(flavor = "multi_thread")]
async fn a_postgresql_restart_under_load_loses_nothing_and_is_logged() {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let database = support::fresh_pg_database().await;
    let pacs_dir = dir.path().join("pacs");
    std::fs::create_dir_all(&pacs_dir).unwrap();
    let pacs_port = support::e2e::free_port();
    let _pacs = pacs_on(&pacs_dir, pacs_port, &["+uf"]);
    setup_database(dir.path(), &database, pacs_port);
    let mut daemon = Daemon::start(dir.path(), &database, tables(""));
    let mut modality = Modality::new(dir.path(), 7_000);
    let a = modality.new_study();
    let refused = modality.resend(daemon.port);
    assert!(refused.is_empty(), "{refused:?}");
    assert_eq!(modality.studies[a].acked_count(), SLICES);
    // The series goes quiet, its job is queued and starts: stop the database under it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    support::stop_pg_server();
    let down = Instant::now();
    let b = modality.new_study();
    let refused = modality.resend(daemon.port);
    let answered = modality.studies[b].acked_count();
    println!(
        "database down: {} of {SLICES} instances refused, {answered} answered Success",
        refused.len()
    );
    assert!(
        refused.iter().all(|(_, why)| !why.contains("(Success)")),
        "{refused:?}"
    );
    assert!(
        !refused.is_empty(),
        "C-STORE must fail while the store is down"
    );
    // Down until both the worker (once its job has failed to save) and the forwarder have
    // met the outage, at least 3 s.
    let deadline = Instant::now() + Duration::from_secs(90);
    while down.elapsed() < Duration::from_secs(3)
        || !(daemon.log().contains(WORKER_DOWN) && daemon.log().contains(FORWARDER_DOWN))
    {
        assert!(
            Instant::now() < deadline,
            "no outage logged within 90 s; log:\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    support::start_pg_server();
    println!("database down for {:.1} s", down.elapsed().as_secs_f64());
    daemon.assert_alive();
    let mut db = PgConnection::connect(&database).await.unwrap();
    for _ in 0..5 {
        modality.resend(daemon.port);
        if modality.all_acked() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(
        modality.all_acked(),
        "the daemon does not accept again after the restart"
    );
    wait_until_settled(&mut db, &daemon, 2, Duration::from_secs(240)).await;
    let checked = check_acknowledged(&mut db, &modality).await;
    let (files, distinct) = check_end_state(&mut db, &daemon, &modality, &pacs_dir).await;
    let log = daemon.log();
    for line in [
        WORKER_DOWN,
        "store available again: the analysis worker resumes",
        FORWARDER_DOWN,
        "store available again: the forwarder resumes",
    ] {
        assert!(log.contains(line), "no log line {line:?}; log:\n{log}");
    }
    daemon.assert_alive();
    println!(
        "{checked} instances checked, PACS {files} files / {distinct} SOP instances, {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// A small file system for the spool: a tmpfs mounted for the test (root), unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size_mib: u64) -> Result<Self, String> {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(at)
            .output()
            .map_err(|e| format!("running mount: {e}"))?;
        if out.status.success() {
            Ok(Self(at.to_owned()))
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Used share of the file system holding `path`, percent.
fn used_percent(path: &Path) -> f64 {
    let out = Command::new("df")
        .args(["--output=size,used", "-B1"])
        .arg(path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().nth(1).expect("df output");
    let v: Vec<f64> = line
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    100.0 * v[1] / v[0]
}

#[tokio::test(flavor = "multi_thread")]
async fn a_spool_over_its_high_water_mark_refuses_with_out_of_resources_and_recovers() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let database = support::fresh_pg_database().await;
    let pacs_port = support::e2e::free_port();
    setup_database(dir.path(), &database, pacs_port);
    let spool = dir.path().join("state/spool");
    // A 32 MiB tmpfs with the mark at 50 %: a 20 MiB ballast file puts it over. Without the
    // right to mount (not root), the temp file system with the mark 1 GiB above its use.
    let (_mount, high_water, ballast_mib) = match Tmpfs::mount(&spool, 32) {
        Ok(m) => {
            println!("spool on a 32 MiB tmpfs, high-water mark 50 %");
            (Some(m), 50.0, 20)
        }
        Err(why) => {
            std::fs::create_dir_all(&spool).unwrap();
            let out = Command::new("df")
                .args(["--output=size", "-B1"])
                .arg(&spool)
                .output()
                .unwrap();
            let size: f64 = String::from_utf8_lossy(&out.stdout)
                .lines()
                .nth(1)
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            let margin = 100.0 * (1u64 << 30) as f64 / size;
            let hw = used_percent(&spool) + margin;
            println!(
                "cannot mount a tmpfs ({}); spool on the temp file system, mark {hw:.3} %",
                why.trim()
            );
            (None, hw, 2048)
        }
    };
    let daemon = Daemon::start(
        dir.path(),
        &database,
        tables(&format!(
            "[dicom.limits]\nspool_high_water_percent = {high_water}"
        )),
    );
    let mut db = PgConnection::connect(&database).await.unwrap();
    let mut modality = Modality::new(dir.path(), 8_000);
    modality.new_study();
    let refused = modality.resend(daemon.port);
    assert!(refused.is_empty(), "below the mark: {refused:?}");
    // Fill the file system over the mark.
    let ballast = spool.join("ballast");
    ok_dd(&ballast, ballast_mib);
    println!("spool file system {:.1} % used", used_percent(&spool));
    let b = modality.new_study();
    let refused = modality.resend(daemon.port);
    assert_eq!(
        refused.len(),
        SLICES,
        "every instance refused over the mark; storescu:\n{}\nvertebrad:\n{}",
        modality.last_log,
        daemon.log()
    );
    for (_, why) in &refused {
        assert!(
            why.contains("Out of Resources")
                || why.contains("OutOfResources")
                || why.contains("A700"),
            "{why}"
        );
    }
    let indexed: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM instances WHERE sop_instance_uid = ANY($1)")
            .bind(&modality.studies[b].sop_uids)
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert_eq!(indexed, 0, "nothing of a refused study is indexed");
    let leftovers = std::fs::read_dir(spool.join("tmp")).unwrap().count();
    assert_eq!(leftovers, 0, "no temporary files left");
    // Space returns: accepted again, without a restart.
    std::fs::remove_file(&ballast).unwrap();
    let refused = modality.resend(daemon.port);
    assert!(refused.is_empty(), "after freeing space: {refused:?}");
    assert!(modality.all_acked());
    let checked = check_acknowledged(&mut db, &modality).await;
    assert_eq!(checked, 2 * SLICES);
    assert!(daemon.log().contains("spool above its high-water mark"));
}

fn ok_dd(path: &Path, mib: u64) {
    let status = Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", path.display()))
        .args([
            "bs=1M",
            &format!("count={mib}"),
            "status=none",
            "conv=fsync",
        ])
        .status()
        .unwrap();
    assert!(status.success(), "writing the ballast file");
}

/// Concurrent storescu processes in the association test.
const CLIENTS: usize = 50;
/// The daemon's `max_associations` there.
const LIMIT: usize = 10;
/// Bound of the daemon's peak RSS (VmHWM) over the association test.
const RSS_BOUND_MIB: u64 = 512;

#[tokio::test(flavor = "multi_thread")]
async fn fifty_concurrent_associations_are_served_or_refused_cleanly_within_bounded_memory() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let database = support::fresh_pg_database().await;
    let pacs_port = support::e2e::free_port();
    setup_database(dir.path(), &database, pacs_port);
    let mut daemon = Daemon::start(
        dir.path(),
        &database,
        tables(&format!("[dicom.limits]\nmax_associations = {LIMIT}")),
    );
    let study = Study::new(&dir.path().join("studies"), 9_000);
    let before = daemon.peak_rss_kib();
    let started = Instant::now();
    let clients: Vec<StoreScu> = (0..CLIENTS)
        .map(|_| storescu(daemon.port, &study.files))
        .collect();
    let (mut served, mut refused, mut other) = (0, 0, Vec::new());
    for scu in clients {
        let deadline = Instant::now() + Duration::from_secs(120);
        let (mut stored, mut rejected, mut failures) = (0, false, 0);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match scu.events.recv_timeout(left) {
                Ok(Event::Exited) => break,
                Ok(Event::Stored(_)) => stored += 1,
                Ok(Event::Rejected) => rejected = true,
                Ok(Event::Refused(..)) => failures += 1,
                Ok(Event::Accepted) => {}
                Err(e) => panic!("a storescu hung for 120 s ({e})"),
            }
        }
        let mut child = scu.child;
        let status = child.0.wait().unwrap();
        let log = scu.log.lock().unwrap().join("\n").to_lowercase();
        if status.success() && stored == SLICES && failures == 0 {
            served += 1;
        } else if rejected
            && log.contains("rejected transient")
            && log.contains("local limit exceeded")
        {
            refused += 1;
        } else {
            other.push(log);
        }
    }
    let elapsed = started.elapsed();
    let peak = daemon.peak_rss_kib();
    println!(
        "{CLIENTS} associations against a limit of {LIMIT}: {served} served, {refused} refused \
         (transient, local limit exceeded), {} otherwise, in {:.1} s; peak RSS {} MiB (before: \
         {} MiB, bound {RSS_BOUND_MIB} MiB)",
        other.len(),
        elapsed.as_secs_f64(),
        peak / 1024,
        before / 1024
    );
    assert!(
        other.is_empty(),
        "associations neither served nor cleanly refused:\n{}",
        other.join("\n----\n")
    );
    assert!(served >= 1, "none served");
    assert!(peak / 1024 < RSS_BOUND_MIB, "peak RSS {} MiB", peak / 1024);
    daemon.assert_alive();
    let mut db = PgConnection::connect(&database).await.unwrap();
    let instances = scalar(&mut db, "SELECT COUNT(*) FROM instances").await;
    assert_eq!(
        instances, SLICES as i64,
        "the same study from every client is stored once"
    );
}
