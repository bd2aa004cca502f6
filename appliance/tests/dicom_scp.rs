//! The DICOM node against real peers: DCMTK's echoscu, storescu and dcmsend, dicom-ul as a
//! hand-driven SCU, and raw sockets for hostile input. Expected values come from the peers
//! (exit status, the status they print), from the source files (bytes, counts) and from the
//! standard (reject reasons), never from the node's own output.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use dicom_ul::ClientAssociationOptions;
use dicom_ul::pdu::{PDataValue, PDataValueType, Pdu};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vertebra_core::dicom_series::{SeriesMeta, write_ct_series};
use vertebra_core::phantom::domain::Modality;
use vertebra_core::{Geometry, Volume};
use vertebrad::config::Config;
use vertebrad::dicom::RunningNode;
use vertebrad::store::queue::JobState;
use vertebrad::store::{AuditOutcome, Store};

const REAL_J2K: &str = "/work/shared/data/real/totalsegmentator-example-dicom";

/// A node on a free loopback port with a temp spool, and what tests inspect.
struct Node {
    running: Option<RunningNode>,
    addr: SocketAddr,
    store: Store,
    state: tempfile::TempDir,
    _db: support::Harness,
}

impl Node {
    async fn start(extra: &str) -> Self {
        Self::start_on(support::sqlite().await, extra).await
    }

    async fn start_on(db: support::Harness, extra: &str) -> Self {
        let state = tempfile::tempdir().unwrap();
        let text = format!(
            r#"
            [dicom]
            bind = "127.0.0.1"
            port = 0
            ae_title = "VERTEBRA"
            [[dicom.peers]]
            ae_title = "CT1"
            addresses = ["127.0.0.0/8"]
            [dicom.completion]
            stable_after_s = 0.4
            {extra}
            "#
        );
        let cfg = Config::from_toml(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let running = RunningNode::start(cfg.dicom, db.store.clone(), &state.path().join("spool"))
            .await
            .unwrap();
        Self {
            addr: running.local_addr(),
            running: Some(running),
            store: db.store.clone(),
            state,
            _db: db,
        }
    }

    fn port(&self) -> String {
        self.addr.port().to_string()
    }

    fn spool(&self) -> PathBuf {
        self.state.path().join("spool")
    }

    /// Spooled `.dcm` files (quarantine excluded).
    fn spooled(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        walk(&self.spool(), &mut out);
        out.retain(|p| {
            p.extension().is_some_and(|e| e == "dcm")
                && !p.starts_with(self.spool().join("quarantine"))
        });
        out
    }

    async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await;
        }
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

/// Runs a DCMTK tool (absolute path: a venv may shadow the names) off the async runtime.
async fn dcmtk(tool: &str, args: Vec<String>) -> Output {
    let path = format!("/usr/bin/{tool}");
    tokio::task::spawn_blocking(move || {
        Command::new(&path)
            .args(&args)
            .env("TCP_NODELAY", "1")
            .output()
            .unwrap_or_else(|e| panic!("running {path} (DCMTK installed?): {e}"))
    })
    .await
    .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// storescu -v prints each response's status; 0xA700 reads "Refused: Out of Resources".
fn assert_out_of_resources(out: &Output) {
    let t = text(out).to_lowercase().replace(' ', "");
    assert!(
        t.contains("a700") || t.contains("outofresources"),
        "expected status 0xA700 in:\n{}",
        text(out)
    );
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_string()).collect()
}

/// A phantom CT series of `slices` 32×32 slices (seed fixes every UID).
fn phantom(dir: &Path, slices: usize) -> Vec<PathBuf> {
    let geometry = Geometry::axis_aligned([1.0, 1.0, 2.0], [0.0, 0.0, 0.0]);
    let data: Vec<f32> = (0..32 * 32 * slices)
        .map(|i| (i % 2000) as f32 - 1000.0)
        .collect();
    let volume = Volume::from_vec([32, 32, slices], data, geometry).unwrap();
    let meta = SeriesMeta::new(11, "dicom-test", Modality::Ct);
    write_ct_series(&volume, &meta, dir).unwrap().files
}

/// Offset of the data set in a Part 10 file: preamble, magic, then the meta group whose
/// length (0002,0000) is the first element's value.
fn dataset_offset(bytes: &[u8]) -> usize {
    assert_eq!(&bytes[128..132], b"DICM", "not a Part 10 file");
    assert_eq!(
        &bytes[132..136],
        &[2, 0, 0, 0],
        "meta group length must come first"
    );
    let len = u32::from_le_bytes(bytes[140..144].try_into().unwrap()) as usize;
    144 + len
}

async fn wait_until<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    for _ in 0..100 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echoscu_gets_success_and_the_association_is_audited() {
    let node = Node::start("").await;
    let out = dcmtk(
        "echoscu",
        args(&["-aet", "CT1", "-aec", "VERTEBRA", "127.0.0.1", &node.port()]),
    )
    .await;
    assert!(out.status.success(), "echoscu failed:\n{}", text(&out));
    let events = node.store.recent_audit_events(10).await.unwrap();
    assert!(
        events.iter().any(|e| e.event.actor == "CT1"
            && e.event.action == "dicom.associate"
            && e.event.outcome == AuditOutcome::Success),
        "{events:?}"
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_peers_and_wrong_called_titles_are_rejected_and_audited() {
    let node = Node::start("").await;
    let out = dcmtk(
        "echoscu",
        args(&[
            "-aet",
            "STRANGER",
            "-aec",
            "VERTEBRA",
            "127.0.0.1",
            &node.port(),
        ]),
    )
    .await;
    assert!(!out.status.success());
    // DCMTK prints the A-ASSOCIATE-RJ reason in words (PS3.8 Table 9-21: source 1, reason 3).
    assert!(
        text(&out).contains("Calling AE Title Not Recognized"),
        "{}",
        text(&out)
    );
    let out = dcmtk(
        "echoscu",
        args(&["-aet", "CT1", "-aec", "SOMEONE", "127.0.0.1", &node.port()]),
    )
    .await;
    assert!(!out.status.success());
    assert!(
        text(&out).contains("Called AE Title Not Recognized"),
        "{}",
        text(&out)
    );
    let events = node.store.recent_audit_events(10).await.unwrap();
    let denied: Vec<_> = events
        .iter()
        .filter(|e| e.event.outcome == AuditOutcome::Denied)
        .collect();
    assert_eq!(denied.len(), 2, "{events:?}");
    assert!(denied.iter().any(|e| {
        e.event.actor == "STRANGER"
            && e.event
                .peer_addr
                .as_deref()
                .is_some_and(|a| a.starts_with("127.0.0.1:"))
    }));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phantom_series_is_spooled_indexed_and_queued_once_stable_and_late_slices_follow_up() {
    let node = Node::start("").await;
    let src = tempfile::tempdir().unwrap();
    let files = phantom(src.path(), 8);
    let mut a = args(&["-aet", "CT1", "-aec", "VERTEBRA", "127.0.0.1", &node.port()]);
    a.extend(files.iter().map(|f| f.display().to_string()));
    let out = dcmtk("storescu", a).await;
    assert!(out.status.success(), "storescu failed:\n{}", text(&out));

    let series_uid = dicom_object::open_file(&files[0])
        .unwrap()
        .element(dicom_dictionary_std::tags::SERIES_INSTANCE_UID)
        .unwrap()
        .to_str()
        .unwrap()
        .trim_end_matches('\0')
        .to_owned();
    assert_eq!(
        node.store.series_instance_count(&series_uid).await.unwrap(),
        Some(8)
    );
    let spooled = node.spooled();
    assert_eq!(spooled.len(), 8);
    // Every spooled file is a valid Part 10 file that DCMTK reads, with the data set bytes
    // of its source (Explicit VR LE was offered first by storescu and is what we prefer
    // among uncompressed syntaxes).
    let out = dcmtk("dcmdump", vec![spooled[0].display().to_string()]).await;
    assert!(out.status.success(), "{}", text(&out));
    let mut sources: Vec<Vec<u8>> = files
        .iter()
        .map(|f| {
            let b = std::fs::read(f).unwrap();
            b[dataset_offset(&b)..].to_vec()
        })
        .collect();
    let mut stored: Vec<Vec<u8>> = spooled
        .iter()
        .map(|f| {
            let b = std::fs::read(f).unwrap();
            b[dataset_offset(&b)..].to_vec()
        })
        .collect();
    sources.sort();
    stored.sort();
    assert!(
        sources == stored,
        "spooled data sets differ from the sources"
    );

    // Stable after 0.4 s without new instances: one job.
    let store = node.store.clone();
    wait_until("the series job", || {
        let s = store.clone();
        async move { s.count_jobs(JobState::Queued).await.unwrap() == 1 }
    })
    .await;

    // A late slice while the job is still queued: no second job (the job will read it).
    let late_dir = tempfile::tempdir().unwrap();
    let ten = phantom(late_dir.path(), 10);
    let out = dcmtk(
        "storescu",
        args(&[
            "-aet",
            "CT1",
            "-aec",
            "VERTEBRA",
            "127.0.0.1",
            &node.port(),
            &ten[8].display().to_string(),
        ]),
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(node.store.count_jobs(JobState::Queued).await.unwrap(), 1);

    // The job starts; another late slice then gives a follow-up job.
    let job = node
        .store
        .claim("worker-1", Duration::from_secs(600))
        .await
        .unwrap()
        .expect("a job to claim");
    assert_eq!(job.kind, "analyze-series");
    let out = dcmtk(
        "storescu",
        args(&[
            "-aet",
            "CT1",
            "-aec",
            "VERTEBRA",
            "127.0.0.1",
            &node.port(),
            &ten[9].display().to_string(),
        ]),
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    wait_until("the follow-up job", || {
        let s = store.clone();
        async move { s.count_jobs(JobState::Queued).await.unwrap() == 1 }
    })
    .await;
    assert_eq!(
        node.store.series_instance_count(&series_uid).await.unwrap(),
        Some(10)
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_jpeg2000_series_is_stored_byte_identical_in_its_own_syntax() {
    let node = Node::start("").await;
    let mut originals: Vec<PathBuf> = std::fs::read_dir(REAL_J2K)
        .unwrap_or_else(|e| panic!("{REAL_J2K}: {e}"))
        .map(|e| e.unwrap().path())
        .collect();
    originals.sort();
    assert_eq!(originals.len(), 20);
    // The anonymiser of these vendor files emptied the data set's SOP Class/Instance, Study
    // and Series UIDs (Type 1; only the file meta keeps the SOP UIDs). A conformant sender
    // cannot send them, so DCMTK's dcmodify restores the UIDs in copies — without touching
    // the compressed pixel data — and those copies are what a PACS would hold.
    let work = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for original in &originals {
        let copy = work.path().join(original.file_name().unwrap());
        std::fs::copy(original, &copy).unwrap();
        let meta = dicom_object::open_file(original).unwrap();
        let sop = meta
            .meta()
            .media_storage_sop_instance_uid()
            .trim_end_matches('\0')
            .to_owned();
        let out = dcmtk(
            "dcmodify",
            vec![
                "-nb".into(),
                "-i".into(),
                "(0008,0016)=1.2.840.10008.5.1.4.1.1.2".into(),
                "-i".into(),
                format!("(0008,0018)={sop}"),
                "-i".into(),
                "(0020,000d)=2.25.8001".into(),
                "-i".into(),
                "(0020,000e)=2.25.8002".into(),
                copy.display().to_string(),
            ],
        )
        .await;
        assert!(out.status.success(), "dcmodify failed:\n{}", text(&out));
        files.push(copy);
    }
    // -xv: storescu offers JPEG 2000 lossless *and* the uncompressed syntaxes in one context,
    // and cannot decompress JPEG 2000: only our preference order lets the objects through,
    // compressed as received.
    let mut a = args(&[
        "-xv",
        "-aet",
        "CT1",
        "-aec",
        "VERTEBRA",
        "127.0.0.1",
        &node.port(),
    ]);
    a.extend(files.iter().map(|f| f.display().to_string()));
    let out = dcmtk("storescu", a).await;
    assert!(out.status.success(), "storescu failed:\n{}", text(&out));
    assert_eq!(
        node.store.series_instance_count("2.25.8002").await.unwrap(),
        Some(20)
    );
    let spooled = node.spooled();
    assert_eq!(spooled.len(), 20);
    let mut sources: Vec<Vec<u8>> = files
        .iter()
        .map(|f| {
            let b = std::fs::read(f).unwrap();
            b[dataset_offset(&b)..].to_vec()
        })
        .collect();
    let mut stored: Vec<Vec<u8>> = Vec::new();
    for f in &spooled {
        let obj = dicom_object::open_file(f).unwrap();
        assert_eq!(
            obj.meta().transfer_syntax().trim_end_matches('\0'),
            "1.2.840.10008.1.2.4.90"
        );
        let b = std::fs::read(f).unwrap();
        stored.push(b[dataset_offset(&b)..].to_vec());
    }
    sources.sort();
    stored.sort();
    assert!(sources == stored, "stored data sets are not byte-identical");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_is_acknowledged_and_stored_once() {
    let node = Node::start("").await;
    let src = tempfile::tempdir().unwrap();
    let files = phantom(src.path(), 1);
    for _ in 0..2 {
        let out = dcmtk(
            "dcmsend",
            args(&[
                "-aet",
                "CT1",
                "-aec",
                "VERTEBRA",
                "127.0.0.1",
                &node.port(),
                &files[0].display().to_string(),
            ]),
        )
        .await;
        assert!(out.status.success(), "dcmsend failed:\n{}", text(&out));
    }
    assert_eq!(node.spooled().len(), 1);
    let obj = dicom_object::open_file(&files[0]).unwrap();
    let series = obj
        .element(dicom_dictionary_std::tags::SERIES_INSTANCE_UID)
        .unwrap()
        .to_str()
        .unwrap()
        .trim_end_matches('\0')
        .to_owned();
    assert_eq!(
        node.store.series_instance_count(&series).await.unwrap(),
        Some(1)
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_high_water_mark_c_store_is_refused_with_out_of_resources() {
    let node = Node::start("[dicom.limits]\nspool_high_water_percent = 0.0").await;
    let src = tempfile::tempdir().unwrap();
    let files = phantom(src.path(), 1);
    let out = dcmtk(
        "storescu",
        args(&[
            "-v",
            "-aet",
            "CT1",
            "-aec",
            "VERTEBRA",
            "127.0.0.1",
            &node.port(),
            &files[0].display().to_string(),
        ]),
    )
    .await;
    // storescu prints the status it got: 0xA700 is "Refused: OutOfResources".
    assert_out_of_resources(&out);
    assert!(node.spooled().is_empty());
    assert_eq!(
        std::fs::read_dir(node.spool().join("tmp")).unwrap().count(),
        0
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_over_the_size_limit_is_refused_and_leaves_nothing() {
    let node = Node::start("[dicom.limits]\nmax_object_bytes = 1000").await;
    let src = tempfile::tempdir().unwrap();
    let files = phantom(src.path(), 1); // 32×32×2 bytes of pixels alone: over 1000
    let out = dcmtk(
        "storescu",
        args(&[
            "-v",
            "-aet",
            "CT1",
            "-aec",
            "VERTEBRA",
            "127.0.0.1",
            &node.port(),
            &files[0].display().to_string(),
        ]),
    )
    .await;
    assert_out_of_resources(&out);
    assert!(node.spooled().is_empty());
    assert_eq!(
        std::fs::read_dir(node.spool().join("tmp")).unwrap().count(),
        0
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_association_over_the_limit_is_rejected_transiently_until_a_slot_frees() {
    let node = Node::start("[dicom.limits]\nmax_associations = 1").await;
    let addr = node.addr.to_string();
    let held = tokio::spawn(async move {
        ClientAssociationOptions::new()
            .calling_ae_title("CT1")
            .called_ae_title("VERTEBRA")
            .with_abstract_syntax("1.2.840.10008.1.1")
            .establish_async(&addr)
            .await
            .expect("first association")
    })
    .await
    .unwrap();
    let out = dcmtk(
        "echoscu",
        args(&["-aet", "CT1", "-aec", "VERTEBRA", "127.0.0.1", &node.port()]),
    )
    .await;
    assert!(!out.status.success());
    // PS3.8 Table 9-21: source 3 (service provider, presentation), reason 2.
    assert!(
        text(&out).contains("Local Limit Exceeded"),
        "{}",
        text(&out)
    );
    assert!(text(&out).contains("Transient"), "{}", text(&out));
    held.release().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let out = dcmtk(
        "echoscu",
        args(&["-aet", "CT1", "-aec", "VERTEBRA", "127.0.0.1", &node.port()]),
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_transfer_syntax_wins_and_a_command_split_over_three_pdus_is_answered() {
    let node = Node::start("").await;
    let assoc = ClientAssociationOptions::new()
        .calling_ae_title("CT1")
        .called_ae_title("VERTEBRA")
        .with_presentation_context(
            "1.2.840.10008.5.1.4.1.1.2",
            vec![
                "1.2.840.10008.1.2",
                "1.2.840.10008.1.2.1",
                "1.2.840.10008.1.2.4.90",
            ],
        )
        .with_presentation_context("1.2.840.10008.1.1", vec!["1.2.840.10008.1.2"])
        .establish_async(&node.addr.to_string())
        .await
        .unwrap();
    let mut assoc = assoc;
    let pcs = assoc.presentation_contexts().to_vec();
    let ct = pcs.iter().find(|p| p.id == 1).unwrap();
    assert_eq!(ct.transfer_syntax, "1.2.840.10008.1.2.4.90");
    let echo_pc = pcs.iter().find(|p| p.id == 3).unwrap().id;

    // C-ECHO-RQ written out by hand (PS3.7 Table 9.3-12), message ID 0x1234.
    let mut body = Vec::new();
    let mut put = |el: u16, v: &[u8]| {
        body.extend_from_slice(&[0, 0]);
        body.extend_from_slice(&el.to_le_bytes());
        body.extend_from_slice(&(v.len() as u32).to_le_bytes());
        body.extend_from_slice(v);
    };
    put(0x0002, b"1.2.840.10008.1.1\0");
    put(0x0100, &0x0030_u16.to_le_bytes());
    put(0x0110, &0x1234_u16.to_le_bytes());
    put(0x0800, &0x0101_u16.to_le_bytes());
    let mut cmd = vec![0, 0, 0, 0, 4, 0, 0, 0];
    cmd.extend_from_slice(&(body.len() as u32).to_le_bytes());
    cmd.extend_from_slice(&body);
    let thirds = [&cmd[..10], &cmd[10..30], &cmd[30..]];
    for (i, part) in thirds.iter().enumerate() {
        assoc
            .send(&Pdu::PData {
                data: vec![PDataValue {
                    presentation_context_id: echo_pc,
                    value_type: PDataValueType::Command,
                    is_last: i == 2,
                    data: part.to_vec(),
                }],
            })
            .await
            .unwrap();
    }
    let Pdu::PData { data } = assoc.receive().await.unwrap() else {
        panic!("expected P-DATA");
    };
    let rsp = &data[0].data;
    // (0000,0100) = 0x8030, (0000,0120) = 0x1234, (0000,0900) = 0.
    let find = |el: u16| -> Vec<u8> {
        let mut pos = 12;
        while pos + 8 <= rsp.len() {
            let e = u16::from_le_bytes([rsp[pos + 2], rsp[pos + 3]]);
            let len = u32::from_le_bytes(rsp[pos + 4..pos + 8].try_into().unwrap()) as usize;
            if e == el {
                return rsp[pos + 8..pos + 8 + len].to_vec();
            }
            pos += 8 + len;
        }
        panic!("element (0000,{el:04X}) missing from the response");
    };
    assert_eq!(find(0x0100), 0x8030_u16.to_le_bytes());
    assert_eq!(find(0x0120), 0x1234_u16.to_le_bytes());
    assert_eq!(find(0x0900), [0, 0]);
    assoc.release().await.unwrap();
    node.stop().await;
}

/// Sends `bytes` on a fresh connection and returns what the node answered before closing.
async fn raw_exchange(addr: SocketAddr, bytes: &[u8], then_close: bool) -> Vec<u8> {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    if then_close {
        s.shutdown().await.unwrap();
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_is_aborted_and_the_node_stays_up_with_nothing_outside_the_spool() {
    let node = Node::start("[dicom.limits]\nidle_timeout_s = 1").await;
    let before: Vec<PathBuf> = {
        let mut v = Vec::new();
        walk(node.state.path(), &mut v);
        v
    };
    // Non-DICOM garbage: an A-ABORT (type 0x07) or a plain close, never a crash.
    let out = raw_exchange(node.addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", false).await;
    assert!(out.is_empty() || out[0] == 0x07, "{out:?}");
    // A P-DATA claiming 4 GiB before any association.
    let out = raw_exchange(node.addr, &[0x04, 0, 0xff, 0xff, 0xff, 0xff], false).await;
    assert!(out.is_empty() || out[0] == 0x07, "{out:?}");
    // An A-ASSOCIATE-RQ cut short, then EOF.
    let out = raw_exchange(node.addr, &[0x01, 0, 0, 0, 0x10, 0, 0, 1, 0, 0], true).await;
    assert!(out.is_empty() || out[0] == 0x07, "{out:?}");
    // Half-open / slow-loris: connect, send one byte, then nothing. The ARTIM timer (1 s
    // here) must close it.
    let started = std::time::Instant::now();
    let out = raw_exchange(node.addr, &[0x01], false).await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "not closed by ARTIM"
    );
    assert!(out.is_empty() || out[0] == 0x07, "{out:?}");

    // An association that stops mid-object: the temp file must go.
    let mut assoc = ClientAssociationOptions::new()
        .calling_ae_title("CT1")
        .called_ae_title("VERTEBRA")
        .with_presentation_context("1.2.840.10008.5.1.4.1.1.2", vec!["1.2.840.10008.1.2.1"])
        .establish_async(&node.addr.to_string())
        .await
        .unwrap();
    let mut body = Vec::new();
    let mut put = |el: u16, v: &[u8]| {
        body.extend_from_slice(&[0, 0]);
        body.extend_from_slice(&el.to_le_bytes());
        body.extend_from_slice(&(v.len() as u32).to_le_bytes());
        body.extend_from_slice(v);
    };
    put(0x0002, b"1.2.840.10008.5.1.4.1.1.2\0");
    put(0x0100, &0x0001_u16.to_le_bytes());
    put(0x0110, &1_u16.to_le_bytes());
    put(0x0700, &0_u16.to_le_bytes());
    put(0x0800, &0_u16.to_le_bytes());
    put(0x1000, b"../../../../etc/passwd\0\0");
    let mut cmd = vec![0, 0, 0, 0, 4, 0, 0, 0];
    cmd.extend_from_slice(&(body.len() as u32).to_le_bytes());
    cmd.extend_from_slice(&body);
    assoc
        .send(&Pdu::PData {
            data: vec![
                PDataValue {
                    presentation_context_id: 1,
                    value_type: PDataValueType::Command,
                    is_last: true,
                    data: cmd,
                },
                PDataValue {
                    presentation_context_id: 1,
                    value_type: PDataValueType::Data,
                    is_last: false,
                    data: vec![0x08, 0, 0x16, 0, b'U', b'I', 2, 0, b'1', 0],
                },
            ],
        })
        .await
        .unwrap();
    drop(assoc); // connection gone mid-object
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        std::fs::read_dir(node.spool().join("tmp")).unwrap().count(),
        0
    );

    // Still alive.
    let out = dcmtk(
        "echoscu",
        args(&["-aet", "CT1", "-aec", "VERTEBRA", "127.0.0.1", &node.port()]),
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let mut after = Vec::new();
    walk(node.state.path(), &mut after);
    let new: Vec<_> = after.iter().filter(|p| !before.contains(p)).collect();
    assert!(new.is_empty(), "files appeared: {new:?}");
    assert!(!Path::new("/etc/passwd.dcm").exists());
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_series_is_indexed_in_postgresql_too() {
    let node = Node::start_on(support::postgres().await, "").await;
    let src = tempfile::tempdir().unwrap();
    let files = phantom(src.path(), 3);
    let mut a = args(&["-aet", "CT1", "-aec", "VERTEBRA", "127.0.0.1", &node.port()]);
    a.extend(files.iter().map(|f| f.display().to_string()));
    let out = dcmtk("storescu", a).await;
    assert!(out.status.success(), "storescu failed:\n{}", text(&out));
    let obj = dicom_object::open_file(&files[0]).unwrap();
    let study = obj
        .element(dicom_dictionary_std::tags::STUDY_INSTANCE_UID)
        .unwrap()
        .to_str()
        .unwrap()
        .trim_end_matches('\0')
        .to_owned();
    let s = node
        .store
        .study(&study)
        .await
        .unwrap()
        .expect("study indexed");
    assert_eq!((s.series_count, s.instance_count), (1, 3));
    assert_eq!(node.spooled().len(), 3);
    node.stop().await;
}

/// A throwaway CA, server and client certificate (RSA 2048, v3) made with the openssl CLI.
fn make_pki(dir: &Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("running openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=vertebra-test-ca",
    ]);
    std::fs::write(
        dir.join("leaf.ext"),
        "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    for name in ["server", "client"] {
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={name}"),
        ]);
        run(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &format!("{name}.crt"),
            "-days",
            "2",
            "-extfile",
            "leaf.ext",
        ]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tls_port_serves_dcmtk_with_client_certificates_and_refuses_the_rest() {
    let pki = tempfile::tempdir().unwrap();
    make_pki(pki.path());
    let p = |f: &str| pki.path().join(f).display().to_string();
    let node = Node::start(&format!(
        "[dicom.tls]\nport = 0\ncertificate = \"{}\"\nprivate_key = \"{}\"\nclient_ca = \"{}\"",
        p("server.crt"),
        p("server.key"),
        p("ca.crt")
    ))
    .await;
    let tls_port = node
        .running
        .as_ref()
        .unwrap()
        .tls_addr()
        .expect("TLS listener")
        .port()
        .to_string();
    let tls_args = |extra: &[&str]| {
        let mut a = args(&[
            "+tls",
            &p("client.key"),
            &p("client.crt"),
            "+cf",
            &p("ca.crt"),
        ]);
        a.extend(args(extra));
        a
    };
    let out = dcmtk(
        "echoscu",
        tls_args(&["-aet", "CT1", "-aec", "VERTEBRA", "127.0.0.1", &tls_port]),
    )
    .await;
    assert!(out.status.success(), "echoscu +tls failed:\n{}", text(&out));

    let src = tempfile::tempdir().unwrap();
    let files = phantom(src.path(), 2);
    let mut a = tls_args(&["-aet", "CT1", "-aec", "VERTEBRA", "127.0.0.1", &tls_port]);
    a.extend(files.iter().map(|f| f.display().to_string()));
    let out = dcmtk("storescu", a).await;
    assert!(
        out.status.success(),
        "storescu +tls failed:\n{}",
        text(&out)
    );
    assert_eq!(node.spooled().len(), 2);

    // Plain DICOM on the TLS port, and TLS without a client certificate: refused.
    let out = dcmtk(
        "echoscu",
        args(&["-aet", "CT1", "-aec", "VERTEBRA", "127.0.0.1", &tls_port]),
    )
    .await;
    assert!(
        !out.status.success(),
        "plain echo on the TLS port succeeded"
    );
    let out = dcmtk(
        "echoscu",
        args(&[
            "+tla",
            "+cf",
            &p("ca.crt"),
            "-aet",
            "CT1",
            "-aec",
            "VERTEBRA",
            "127.0.0.1",
            &tls_port,
        ]),
    )
    .await;
    assert!(
        !out.status.success(),
        "TLS echo without a client certificate succeeded"
    );
    node.stop().await;
}
