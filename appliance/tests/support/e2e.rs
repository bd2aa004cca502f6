//! End-to-end helpers shared by the tests that drive the real `vertebrad serve` binary with
//! real peers (`pipeline.rs`, `faults.rs`): DCMTK tools, the PACS (`storescp`), the daemon
//! with its configuration and log, phantom studies.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use vertebra_core::anatomy::Vertebra;
use vertebra_core::dicom_series::{SeriesMeta, write_ct_series};
use vertebra_core::phantom::{
    self, FractureShape, LesionKind, LesionPlan, LesionRequest, PhantomSpec, domain,
};

use super::{ort_library, repo};

/// A DCMTK tool from `/usr/bin` (a venv may shadow the names with pynetdicom's).
pub fn dcmtk(tool: &str) -> PathBuf {
    let p = Path::new("/usr/bin").join(tool);
    assert!(
        p.is_file(),
        "DCMTK's {tool} is missing: run scripts/provision-system.sh (installs dcmtk)"
    );
    p
}

/// A loopback TCP port free right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The `vertebrad` binary with the ONNX Runtime library set and no inherited configuration.
pub fn vertebrad() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vertebrad"));
    c.env("ORT_DYLIB_PATH", ort_library())
        .env_remove("VERTEBRA_CONFIG")
        .env_remove("VERTEBRA_DATABASE_URL");
    c
}

/// Runs `cmd`, fails the test with its output unless it succeeds; returns its stdout.
pub fn ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A running process, killed (SIGKILL) on drop.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The PACS: DCMTK storescp writing into `dir`.
pub fn pacs(dir: &Path) -> (Running, u16) {
    let port = free_port();
    (pacs_on(dir, port, &[]), port)
}

/// DCMTK storescp as AE `PACS` on `port` writing into `dir`, with `extra` options (e.g.
/// `+uf` to keep every received copy, `--sleep-during 1` to answer slowly).
pub fn pacs_on(dir: &Path, port: u16, extra: &[&str]) -> Running {
    let child = Command::new(dcmtk("storescp"))
        .args(["-aet", "PACS", "-od"])
        .arg(dir)
        .args(extra)
        .arg(port.to_string())
        .env("TCP_NODELAY", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting storescp");
    Running(child)
}

/// `vertebrad serve` on `database`, sending results to the PACS at `pacs_port`; returns the
/// process and the SCP's port.
pub fn serve(dir: &Path, database: &str, pacs_port: u16) -> (Running, u16) {
    setup_database(dir, database, pacs_port);
    start_daemon(dir, database)
}

/// Migrates `database` and adds the PACS destination.
pub fn setup_database(dir: &Path, database: &str, pacs_port: u16) {
    let state = dir.join("state");
    ok(vertebrad().args([
        "--state-dir",
        state.to_str().unwrap(),
        "migrate",
        "--database",
        database,
    ]));
    ok(vertebrad().args([
        "--state-dir",
        state.to_str().unwrap(),
        "destination",
        "add",
        "--name",
        "pacs",
        "--ae-title",
        "PACS",
        "--host",
        "127.0.0.1",
        "--port",
        &pacs_port.to_string(),
        "--database",
        database,
    ]));
}

/// Starts `vertebrad serve` with its state (and log, `vertebrad.log`) in `dir`.
pub fn start_daemon(dir: &Path, database: &str) -> (Running, u16) {
    start_daemon_with(dir, database, "")
}

/// [`start_daemon`] with extra `[forward]` keys.
pub fn start_daemon_with(dir: &Path, database: &str, forward_extra: &str) -> (Running, u16) {
    start_daemon_configured(dir, database, forward_extra, "")
}

/// [`start_daemon`] with extra `[forward]` keys and extra tables (`[worker]`,
/// `[dicom.limits]`, `[dicom.completion]`, …) appended to the configuration. The log is
/// appended to, so a restarted daemon's lines follow its predecessor's.
pub fn start_daemon_configured(
    dir: &Path,
    database: &str,
    forward_extra: &str,
    tables: &str,
) -> (Running, u16) {
    let (daemon, port, _) = spawn_daemon(dir, database, forward_extra, tables, false);
    (daemon, port)
}

/// [`start_daemon_configured`] for the web console tests: `tables` must enable the console
/// (`[web]` with `port = 0`); also waits for its `web console on https://ADDR` line and returns
/// that address.
pub fn start_daemon_console(
    dir: &Path,
    database: &str,
    tables: &str,
) -> (Running, u16, SocketAddr) {
    let (daemon, port, console) = spawn_daemon(dir, database, "", tables, true);
    (
        daemon,
        port,
        console.expect("the console address was asked for"),
    )
}

/// Writes the configuration, starts the daemon and reads its DICOM line (and, with
/// `console`, the web console's line).
fn spawn_daemon(
    dir: &Path,
    database: &str,
    forward_extra: &str,
    tables: &str,
    console: bool,
) -> (Running, u16, Option<SocketAddr>) {
    std::fs::create_dir_all(dir).unwrap();
    let state = dir.join("state");
    let config = dir.join("vertebrad.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[dicom]
bind = "127.0.0.1"
port = 0
ae_title = "VERTEBRA"
[[dicom.peers]]
ae_title = "MODALITY"
addresses = ["127.0.0.1/32"]
stable_after_s = 2
[inference]
bundle = "{}"
trusted_keys = "{}"
providers = ["cpu"]
intra_threads = 2
[forward]
calling_ae_title = "VERTEBRA"
poll_interval_s = 0.5
{forward_extra}
{tables}
"#,
            repo().join("models/demo-bundle").display(),
            repo().join("keys").display()
        ),
    )
    .unwrap();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("vertebrad.log"))
        .unwrap();
    let mut child = vertebrad()
        .args(["--state-dir", state.to_str().unwrap(), "serve", "--config"])
        .arg(&config)
        .args(["--database", database])
        .env("VERTEBRA_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("starting vertebrad serve");
    // A thread reads stdout to its end (so the daemon never writes into a closed pipe) and
    // hands the lines over.
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let log = || std::fs::read_to_string(dir.join("vertebrad.log")).unwrap_or_default();
    let first = rx
        .recv()
        .unwrap_or_else(|_| panic!("vertebrad serve printed no first line; its log:\n{}", log()));
    let port = first
        .strip_prefix("listening on ")
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"));
    let running = Running(child);
    let console = console.then(|| {
        let line = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .unwrap_or_else(|e| {
                panic!(
                    "vertebrad serve printed no web console line ({e}); its log:\n{}",
                    log()
                )
            });
        line.strip_prefix("web console on https://")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected web console line {line:?}"))
    });
    (running, port, console)
}

/// A phantom CT study (T12–L3, lesions) with `in_plane`² slices, written as a DICOM series
/// into `<dir>/study-<seed>`.
pub fn phantom_series(dir: &Path, seed: u64, in_plane: usize) -> PathBuf {
    phantom_series_sized(dir, seed, in_plane, None)
}

/// A T12–L3 phantom study with a known Genant grade-3 wedge fracture (L1) and a lytic
/// metastasis (L3), written as a CT series with its ground truth next to it; returns the
/// series directory and the `truth.json` path.
pub fn phantom_study_with_truth(dir: &Path, seed: u64, in_plane: usize) -> (PathBuf, PathBuf) {
    let mut spec = t12_l3(seed, in_plane);
    spec.lesions = LesionPlan::Explicit {
        lesions: vec![
            LesionRequest {
                kind: LesionKind::Fracture {
                    grade: 3,
                    shape: FractureShape::Wedge,
                },
                vertebra: Vertebra::L1,
            },
            LesionRequest {
                kind: LesionKind::Lytic,
                vertebra: Vertebra::L3,
            },
        ],
    };
    let (out, p) = write_study(dir, &spec);
    let truth = dir.join(format!("truth-{seed}.json"));
    std::fs::write(&truth, serde_json::to_vec_pretty(&p.truth()).unwrap()).unwrap();
    (out, truth)
}

/// [`phantom_series`] with a given number of slices (`None`: enough to cover the range).
pub fn phantom_series_sized(
    dir: &Path,
    seed: u64,
    in_plane: usize,
    slices: Option<usize>,
) -> PathBuf {
    let mut spec = t12_l3(seed, in_plane);
    spec.slices = slices;
    spec.lesions = LesionPlan::Random { rate: 1.0 };
    write_study(dir, &spec).0
}

/// A `ct-standard` T12–L3 phantom spec.
fn t12_l3(seed: u64, in_plane: usize) -> PhantomSpec {
    let mut spec = PhantomSpec::new(
        seed,
        Vertebra::T12,
        Vertebra::L3,
        domain::preset("ct-standard").unwrap(),
    );
    spec.in_plane = in_plane;
    spec
}

/// Generates `spec` and writes it as a CT series under `dir/study-SEED`.
fn write_study(dir: &Path, spec: &PhantomSpec) -> (PathBuf, phantom::Phantom) {
    let p = phantom::generate(spec).unwrap();
    let out = dir.join(format!("study-{}", spec.seed));
    write_ct_series(&p.ct, &SeriesMeta::from_preset(p.seed, &spec.domain), &out).unwrap();
    (out, p)
}
