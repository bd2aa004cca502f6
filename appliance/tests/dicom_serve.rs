//! `vertebrad serve` as an operator runs it — config file, state dir, SIGTERM — against real
//! peers: DCMTK's echoscu and storescu, and pynetdicom as an SCU (C-ECHO, C-STORE in three
//! transfer syntaxes, a rejected AE title); and the daemon's memory while it receives a large
//! multi-frame object. Expected values come from the peers and the source files, never from
//! the daemon's own output.

mod support;

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vertebra_core::dicom_series::{SeriesMeta, write_ct_series};
use vertebra_core::phantom::domain::Modality;
use vertebra_core::{Geometry, Volume};
use vertebrad::series::{SeriesOptions, load_series};
use vertebrad::store::Store;

/// A running `vertebrad serve` with its config and state in a temp dir.
struct Serve {
    child: Child,
    port: String,
    state: PathBuf,
    _dir: tempfile::TempDir,
}

impl Serve {
    /// Starts the daemon as AE "SPINE" on a free loopback port, accepting the peers in
    /// `peers` (AE titles) from 127.0.0.1, with `extra` TOML appended, the web console off.
    fn start(peers: &[&str], extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("vertebrad.toml");
        let mut text =
            String::from("[dicom]\nbind = \"127.0.0.1\"\nport = 0\nae_title = \"SPINE\"\n");
        for p in peers {
            writeln!(
                text,
                "[[dicom.peers]]\nae_title = \"{p}\"\naddresses = [\"127.0.0.1\"]"
            )
            .unwrap();
        }
        text.push_str(extra);
        text.push_str("\n[web]\nenabled = false\n");
        std::fs::write(&config, text).unwrap();
        let state = dir.path().join("state");
        let mut child = Command::new(env!("CARGO_BIN_EXE_vertebrad"))
            .args(["--state-dir", state.to_str().unwrap(), "serve", "--config"])
            .arg(&config)
            .env_remove("VERTEBRA_DATABASE_URL")
            .env("VERTEBRA_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting vertebrad serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line `{line}`"))
            .to_owned();
        let port = addr.rsplit(':').next().unwrap().to_owned();
        Self {
            child,
            port,
            state,
            _dir: dir,
        }
    }

    fn spool(&self) -> PathBuf {
        self.state.join("spool")
    }

    /// Spooled `.dcm` files (quarantine excluded).
    fn spooled(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        walk(&self.spool(), &mut out);
        let quarantine = self.spool().join("quarantine");
        out.retain(|p| p.extension().is_some_and(|e| e == "dcm") && !p.starts_with(&quarantine));
        out.sort();
        out
    }

    /// A `VmRSS`/`VmHWM`-style line of the daemon's /proc status, in bytes.
    fn proc_status_bytes(&self, key: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("reading the daemon's /proc status");
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .unwrap_or_else(|| panic!("no {key} in /proc status"))
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .unwrap();
        kib * 1024
    }

    /// SIGTERM, then the daemon must exit successfully within 10 s.
    fn stop(mut self) {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "vertebrad exited with {status}");
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "vertebrad did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        // A failed assertion must not leave a daemon behind.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn output_text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The daemon's store index (its SQLite file, read alongside it): instances of `series_uid`.
fn indexed_instances(state: &Path, series_uid: &str) -> Option<i64> {
    let url = format!("sqlite://{}/vertebrad.db", state.display());
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let store = Store::connect(&url).await.unwrap();
        store.series_instance_count(series_uid).await.unwrap()
    })
}

#[test]
fn serve_answers_echoscu_and_stops_cleanly_on_sigterm() {
    let serve = Serve::start(&["CT1"], "");
    let echo = |aet: &str| {
        Command::new("/usr/bin/echoscu")
            .args(["-aet", aet, "-aec", "SPINE", "127.0.0.1", &serve.port])
            .output()
            .expect("running echoscu (DCMTK)")
    };
    let ok = echo("CT1");
    assert!(ok.status.success(), "{}", output_text(&ok));
    assert!(!echo("OTHER").status.success());
    assert!(serve.state.join("vertebrad.db").is_file());
    assert!(serve.spool().is_dir());
    serve.stop();
}

/// pynetdicom 3 (pinned in scripts/requirements-test.txt) drives the daemon: an unknown AE
/// title is rejected with the standard's reason, then one association carries a C-ECHO and
/// 18 phantom CT slices re-encoded by pydicom as Explicit VR Little Endian, RLE Lossless and
/// JPEG 2000 Lossless. Each must be stored in the syntax it was sent in, indexed, and load
/// back to exactly the source's HU values.
#[test]
fn pynetdicom_echoes_and_stores_a_ct_series_in_three_transfer_syntaxes() {
    const SLICES: usize = 18;
    let work = tempfile::tempdir().unwrap();
    let source_dir = work.path().join("source");
    let geometry = Geometry::axis_aligned([0.8, 0.8, 2.0], [0.0, 0.0, 0.0]);
    let data: Vec<f32> = (0..32 * 32 * SLICES)
        .map(|i| ((i * 37) % 2400) as f32 - 1000.0)
        .collect();
    let volume = Volume::from_vec([32, 32, SLICES], data, geometry).unwrap();
    let written = write_ct_series(
        &volume,
        &SeriesMeta::new(23, "pynetdicom", Modality::Ct),
        &source_dir,
    )
    .unwrap();
    let copies = work.path().join("sent");
    std::fs::create_dir(&copies).unwrap();

    let serve = Serve::start(&["PYNET"], "[dicom.completion]\nstable_after_s = 3600\n");
    let script = support::repo().join("appliance/tests/fixtures/pynetdicom_scu.py");
    let out = Command::new(support::venv_python())
        .arg(&script)
        .args(["127.0.0.1", &serve.port, "SPINE", "PYNET"])
        .arg(&copies)
        .args(&written.files)
        .output()
        .expect("running the pynetdicom SCU");
    assert!(
        out.status.success(),
        "pynetdicom SCU failed:\n{}",
        output_text(&out)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", output_text(&out)));

    // PS3.8 Table 9-21: rejected-permanent (1) by the service user (1), calling AE title not
    // recognized (3).
    let rj = &report["rejection"];
    assert_eq!(rj["rejected"], true, "{report}");
    assert_eq!(
        (
            rj["result"].as_u64(),
            rj["source"].as_u64(),
            rj["reason"].as_u64()
        ),
        (Some(1), Some(1), Some(3)),
        "{report}"
    );
    let accepted: Vec<&str> = report["accepted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        accepted,
        [
            "1.2.840.10008.1.2.1",
            "1.2.840.10008.1.2.4.90",
            "1.2.840.10008.1.2.5"
        ],
        "{report}"
    );
    assert_eq!(report["echo"], 0, "{report}");
    assert_eq!(report["released"], true, "{report}");
    let stores = report["stores"].as_array().unwrap();
    assert_eq!(stores.len(), SLICES);
    let mut sent: Vec<(String, String)> = Vec::new();
    for s in stores {
        assert_eq!(s["status"], 0, "C-STORE not Success: {s}");
        sent.push((
            s["sop_instance_uid"].as_str().unwrap().to_owned(),
            s["transfer_syntax"].as_str().unwrap().to_owned(),
        ));
    }

    let spooled = serve.spooled();
    assert_eq!(spooled.len(), SLICES, "{spooled:?}");
    let mut stored: Vec<(String, String)> = spooled
        .iter()
        .map(|f| {
            let obj = dicom_object::open_file(f).unwrap();
            let meta = obj.meta();
            (
                meta.media_storage_sop_instance_uid()
                    .trim_end_matches('\0')
                    .to_owned(),
                meta.transfer_syntax().trim_end_matches('\0').to_owned(),
            )
        })
        .collect();
    sent.sort();
    stored.sort();
    assert_eq!(
        stored, sent,
        "stored instances or their transfer syntaxes differ"
    );

    let series_dir = spooled[0].parent().unwrap();
    let loaded = load_series(series_dir, &SeriesOptions::default()).unwrap();
    assert_eq!(loaded.volume.dims(), [32, 32, SLICES]);
    assert!(
        loaded.volume.data() == volume.data(),
        "decoded HU values differ from the source"
    );

    assert_eq!(
        indexed_instances(&serve.state, &written.uids.series_instance_uid),
        Some(SLICES as i64)
    );
    serve.stop();
}

/// A 256 MiB multi-frame object (scripts/make_multiframe.py, streamed) sent by DCMTK storescu:
/// stored byte for byte, while the daemon's peak RSS stays a small fraction of the object.
/// scripts/bench-ingest.sh does the same with 2 GB.
#[test]
fn a_256_mib_object_is_received_in_bounded_memory() {
    const OBJECT: u64 = 256 * 1024 * 1024;
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("multiframe.dcm");
    let made = Command::new(support::venv_python())
        .arg(support::repo().join("scripts/make_multiframe.py"))
        .arg(&source)
        .arg(OBJECT.to_string())
        .output()
        .expect("running make_multiframe.py");
    assert!(made.status.success(), "{}", output_text(&made));
    // Room for the object: the default limit (4 GiB) would do; say it explicitly.
    let serve = Serve::start(
        &["BIG"],
        "[dicom.limits]\nmax_object_bytes = 1073741824\n[dicom.completion]\nstable_after_s = 3600\n",
    );
    // The engine load (which fails here: no bundle) runs after the listening line; let it
    // settle, then take the high-water mark so far as the baseline.
    std::thread::sleep(Duration::from_secs(1));
    let before = serve.proc_status_bytes("VmHWM");
    let started = Instant::now();
    let out = Command::new("/usr/bin/storescu")
        .args(["-aet", "BIG", "-aec", "SPINE", "127.0.0.1", &serve.port])
        .arg(&source)
        .env("TCP_NODELAY", "1")
        .output()
        .expect("running storescu (DCMTK)");
    assert!(
        out.status.success(),
        "storescu failed:\n{}",
        output_text(&out)
    );
    let elapsed = started.elapsed();
    let peak = serve.proc_status_bytes("VmHWM");
    eprintln!(
        "256 MiB object: {:.1} s, daemon peak RSS before {} MiB, after {} MiB",
        elapsed.as_secs_f64(),
        before >> 20,
        peak >> 20
    );
    let spooled = serve.spooled();
    assert_eq!(spooled.len(), 1);
    assert!(
        same_data_set(&source, &spooled[0]),
        "the stored data set differs from the source"
    );
    assert!(
        peak < OBJECT / 8 && peak < before + 32 * 1024 * 1024,
        "peak RSS {peak} B (before the transfer {before} B) for a {OBJECT} B object"
    );
    serve.stop();
}

/// Whether two Part 10 files carry byte-identical data sets (their file meta may differ),
/// compared in chunks so neither is held in memory.
fn same_data_set(a: &Path, b: &Path) -> bool {
    let open = |p: &Path| {
        let mut f = std::fs::File::open(p).unwrap();
        let mut head = [0_u8; 144];
        f.read_exact(&mut head).unwrap();
        assert_eq!(&head[128..132], b"DICM", "{} is not Part 10", p.display());
        let meta_len = u32::from_le_bytes(head[140..144].try_into().unwrap());
        let mut skip = vec![0_u8; meta_len as usize];
        f.read_exact(&mut skip).unwrap();
        BufReader::with_capacity(1 << 20, f)
    };
    let (mut x, mut y) = (open(a), open(b));
    let (mut bx, mut by) = (vec![0_u8; 1 << 20], vec![0_u8; 1 << 20]);
    loop {
        let n = read_full(&mut x, &mut bx);
        let m = read_full(&mut y, &mut by);
        if n != m || bx[..n] != by[..m] {
            return false;
        }
        if n == 0 {
            return true;
        }
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]).unwrap() {
            0 => break,
            k => n += k,
        }
    }
    n
}
