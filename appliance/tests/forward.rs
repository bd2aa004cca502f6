//! The forwarding side against real peers: DCMTK's `storescp` (plain and `+tls`) as the PACS
//! and our own SCP where a peer must refuse us, driven through the SCU directly and through
//! the outbox worker with the store's manual clock. Expected values come from the peers (the
//! files storescp wrote, its refusals) and from the sent files, never from our own output.
//!
//! Needs DCMTK (`/usr/bin/storescp`) and `openssl`: `scripts/provision-system.sh`. A missing
//! tool fails the test with that hint.

mod support;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::sync::watch;
use vertebra_core::dicom_series::{SeriesMeta, write_ct_series};
use vertebra_core::phantom::domain::Modality;
use vertebra_core::{Geometry, Volume};
use vertebrad::config::{Config, ForwardConfig, ForwardTlsConfig};
use vertebrad::dicom::RunningNode;
use vertebrad::dicom::scu::{self, Destination, ScuError, ScuOptions};
use vertebrad::forward::run_forwarder;
use vertebrad::store::{
    DeliveryState, NewDestination, NewInstance, NewSeries, NewStudy, OutputKind, Store,
};

const REAL_J2K: &str = "/work/shared/data/real/totalsegmentator-example-dicom";
const PROVISION: &str = "install DCMTK and openssl (scripts/provision-system.sh)";

/// A DCMTK storescp on a loopback port, writing what it receives into a temp dir.
struct Storescp {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Storescp {
    /// Starts `storescp -aet PACS +B -od <dir> <extra> <port>` (bit-preserving: files are
    /// written exactly as received) and waits until it accepts connections.
    async fn start(port: u16, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut args: Vec<String> = ["-aet", "PACS", "+B", "-od"]
            .iter()
            .map(|s| (*s).to_string())
            .collect();
        args.push(dir.path().display().to_string());
        args.extend(extra.iter().map(|s| (*s).to_string()));
        args.push(port.to_string());
        let child = Command::new("/usr/bin/storescp")
            .args(&args)
            .env("TCP_NODELAY", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting /usr/bin/storescp ({PROVISION}): {e}"));
        let mut s = Storescp { child, port, dir };
        for _ in 0..100 {
            if let Some(status) = s.child.try_wait().unwrap() {
                panic!("storescp exited at start ({status}); args {args:?}");
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("storescp did not listen on port {port}");
    }

    /// The file storescp wrote for SOP instance `uid` (its names end in the UID).
    fn received(&self, uid: &str) -> Option<PathBuf> {
        std::fs::read_dir(self.dir.path())
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.ends_with(&format!(".{uid}")))
            })
    }

    fn count(&self) -> usize {
        std::fs::read_dir(self.dir.path()).unwrap().count()
    }
}

impl Drop for Storescp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nothing listens on (yet).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn pacs(port: u16) -> Destination {
    Destination {
        ae_title: "PACS".into(),
        host: "127.0.0.1".into(),
        port,
        tls: false,
    }
}

fn quick() -> ScuOptions {
    ScuOptions {
        connect_timeout: Duration::from_secs(5),
        association_timeout: Duration::from_secs(5),
        dimse_timeout: Duration::from_secs(10),
        ..ScuOptions::default()
    }
}

/// A phantom CT series of `slices` 32×32 slices; returns its files and SOP Instance UIDs.
fn phantom(dir: &Path, seed: u64, slices: usize) -> (Vec<PathBuf>, Vec<String>) {
    let geometry = Geometry::axis_aligned([1.0, 1.0, 2.0], [0.0, 0.0, 0.0]);
    let data: Vec<f32> = (0..32 * 32 * slices)
        .map(|i| (i % 2000) as f32 - 1000.0)
        .collect();
    let volume = Volume::from_vec([32, 32, slices], data, geometry).unwrap();
    let meta = SeriesMeta::new(seed, "forward-test", Modality::Ct);
    let written = write_ct_series(&volume, &meta, dir).unwrap();
    (written.files, written.sop_instance_uids)
}

/// Offset of the data set in a Part 10 file: preamble, magic, then the meta group whose
/// length (0002,0000) is the first element's value.
fn dataset_offset(bytes: &[u8]) -> usize {
    assert_eq!(&bytes[128..132], b"DICM", "not a Part 10 file");
    assert_eq!(&bytes[132..136], &[2, 0, 0, 0], "meta group length first");
    144 + u32::from_le_bytes(bytes[140..144].try_into().unwrap()) as usize
}

/// Asserts that storescp received `sent` with the same data set, byte for byte, and the
/// same transfer syntax.
fn assert_received_identical(pacs: &Storescp, sent: &Path, uid: &str) {
    let got = pacs
        .received(uid)
        .unwrap_or_else(|| panic!("storescp has no file for {uid}"));
    let a = std::fs::read(sent).unwrap();
    let b = std::fs::read(&got).unwrap();
    assert!(
        a[dataset_offset(&a)..] == b[dataset_offset(&b)..],
        "data set of {uid} differs after the trip"
    );
    let ts = |p: &Path| {
        dicom_object::OpenFileOptions::new()
            .read_until(dicom_dictionary_std::tags::PIXEL_DATA)
            .open_file(p)
            .unwrap()
            .meta()
            .transfer_syntax()
            .to_owned()
    };
    assert_eq!(ts(sent), ts(&got));
}

async fn wait_until<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    for _ in 0..300 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Queues `files` for a destination on `port` in the outbox; returns the delivery ids.
async fn queue(store: &Store, files: &[PathBuf], uids: &[String], port: u16) -> Vec<i64> {
    let dest = store
        .add_destination(&NewDestination {
            name: format!("pacs-{port}"),
            ae_title: "PACS".into(),
            host: "127.0.0.1".into(),
            port,
            tls: false,
            enabled: true,
        })
        .await
        .unwrap();
    let ids = store
        .index_instance(&NewInstance {
            study: NewStudy {
                study_uid: format!("2.25.{port}"),
                patient_name: None,
                patient_id: None,
                study_date: None,
            },
            series: NewSeries {
                series_uid: format!("2.25.{port}.1"),
                modality: "CT".into(),
            },
            sop_instance_uid: format!("2.25.{port}.1.1"),
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
            transfer_syntax: "1.2.840.10008.1.2.1".into(),
            spool_path: "/spool/source.dcm".into(),
            size_bytes: 1,
            sha256: "00".repeat(32),
            received_at_ms: support::T0_MS,
            calling_ae: "CT1".into(),
            peer_addr: "127.0.0.1:1".into(),
        })
        .await
        .unwrap();
    let result = store
        .save_result(&support::succeeded_result(ids.series_id))
        .await
        .unwrap();
    let mut deliveries = Vec::new();
    for (file, uid) in files.iter().zip(uids) {
        let out = store
            .add_output(
                result,
                OutputKind::KeyImage,
                uid,
                &file.display().to_string(),
            )
            .await
            .unwrap();
        deliveries.push(store.add_delivery(out, dest).await.unwrap());
    }
    deliveries
}

fn forward_config(max_attempts: u32) -> ForwardConfig {
    ForwardConfig {
        max_attempts,
        backoff_base_s: 10.0,
        backoff_max_s: 1000.0,
        jitter: 0.0,
        poll_interval_s: 0.05,
        connect_timeout_s: 5,
        association_timeout_s: 5,
        dimse_timeout_s: 10,
        ..ForwardConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_and_a_series_reach_dcmtk_storescp_byte_identical() {
    let pacs = Storescp::start(free_port(), &[]).await;
    let outcome = scu::echo(&self::pacs(pacs.port), "VERTEBRA", &quick())
        .await
        .expect("C-ECHO to storescp");
    assert_eq!(outcome.status, 0);

    let src = tempfile::tempdir().unwrap();
    let (files, uids) = phantom(src.path(), 21, 4);
    let outcomes = scu::store_files(&self::pacs(pacs.port), "VERTEBRA", &files, &quick())
        .await
        .expect("association with storescp");
    assert_eq!(outcomes.len(), 4);
    for ((o, file), uid) in outcomes.iter().zip(&files).zip(&uids) {
        assert_eq!(o.result, Ok(0), "{}", file.display());
        assert_eq!(&o.sop_instance_uid, uid);
        assert_received_identical(&pacs, file, uid);
    }
    assert_eq!(pacs.count(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_transfer_syntax_fails_that_file_only_with_a_clear_error() {
    // storescp without +xa accepts uncompressed syntaxes only: the real JPEG 2000 slice is
    // refused in negotiation, and we do not transcode it.
    let pacs = Storescp::start(free_port(), &[]).await;
    let mut j2k: Vec<PathBuf> = std::fs::read_dir(REAL_J2K)
        .unwrap_or_else(|e| panic!("{REAL_J2K}: {e} (the shared real-data series)"))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    j2k.sort();
    let src = tempfile::tempdir().unwrap();
    let (files, uids) = phantom(src.path(), 22, 1);
    let batch = vec![j2k[0].clone(), files[0].clone()];
    let outcomes = scu::store_files(&self::pacs(pacs.port), "VERTEBRA", &batch, &quick())
        .await
        .expect("the association carries the phantom's context");
    match &outcomes[0].result {
        Err(ScuError::ContextRejected {
            transfer_syntax, ..
        }) => assert!(
            transfer_syntax.starts_with("1.2.840.10008.1.2.4.9"),
            "{transfer_syntax}"
        ),
        other => panic!("JPEG 2000 file: expected a refused context, got {other:?}"),
    }
    let text = outcomes[0].result.as_ref().unwrap_err().to_string();
    assert!(text.contains("no transcoding"), "{text}");
    assert_eq!(outcomes[1].result, Ok(0));
    assert_received_identical(&pacs, &files[0], &uids[0]);
    assert_eq!(pacs.count(), 1);

    // Only that file: nothing is accepted, the association fails as a whole.
    let e = scu::store_files(&self::pacs(pacs.port), "VERTEBRA", &j2k[..1], &quick())
        .await
        .unwrap_err();
    assert!(
        matches!(e, ScuError::NoContextAccepted { .. }),
        "expected no accepted context, got {e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_does_not_know_our_ae_title_rejects_the_association() {
    let db = support::sqlite().await;
    let state = tempfile::tempdir().unwrap();
    let cfg = Config::from_toml(
        "[dicom]\nbind = \"127.0.0.1\"\nport = 0\nae_title = \"SPINE\"\n\
         [[dicom.peers]]\nae_title = \"CT1\"",
    )
    .unwrap();
    let node = RunningNode::start(cfg.dicom, db.store.clone(), &state.path().join("spool"))
        .await
        .unwrap();
    let addr: SocketAddr = node.local_addr();
    let dest = Destination {
        ae_title: "SPINE".into(),
        host: "127.0.0.1".into(),
        port: addr.port(),
        tls: false,
    };
    let e = scu::echo(&dest, "STRANGER", &quick()).await.unwrap_err();
    match &e {
        ScuError::Rejected { result, reason, .. } => {
            assert_eq!(result, "permanent");
            assert!(
                reason.to_lowercase().contains("calling ae title"),
                "reason: {reason}"
            );
        }
        other => panic!("expected a rejection, got {other}"),
    }
    // The known peer is served by the same node.
    scu::echo(&dest, "CT1", &quick()).await.expect("CT1 echo");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_refuses_a_sop_class_fails_those_objects_only() {
    // Our own SCP with `accept_other_storage = false` takes CT but refuses Secondary Capture.
    let db = support::sqlite().await;
    let state = tempfile::tempdir().unwrap();
    let cfg = Config::from_toml(
        "[dicom]\nbind = \"127.0.0.1\"\nport = 0\nae_title = \"SPINE\"\n\
         accept_other_storage = false\n[[dicom.peers]]\nae_title = \"VERTEBRA\"",
    )
    .unwrap();
    let node = RunningNode::start(cfg.dicom, db.store.clone(), &state.path().join("spool"))
        .await
        .unwrap();
    let dest = Destination {
        ae_title: "SPINE".into(),
        host: "127.0.0.1".into(),
        port: node.local_addr().port(),
        tls: false,
    };
    let src = tempfile::tempdir().unwrap();
    let (files, _) = phantom(src.path(), 26, 2);
    // The second slice becomes a Secondary Capture (DCMTK's dcmodify updates the meta too).
    let out = Command::new("/usr/bin/dcmodify")
        .args(["-nb", "-m", "(0008,0016)=1.2.840.10008.5.1.4.1.1.7"])
        .arg(&files[1])
        .output()
        .unwrap_or_else(|e| panic!("running /usr/bin/dcmodify ({PROVISION}): {e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let outcomes = scu::store_files(&dest, "VERTEBRA", &files, &quick())
        .await
        .expect("the CT context is accepted");
    assert_eq!(outcomes[0].result, Ok(0));
    match &outcomes[1].result {
        Err(ScuError::ContextRejected { sop_class, .. }) => {
            assert_eq!(sop_class, "1.2.840.10008.5.1.4.1.1.7");
        }
        other => panic!("Secondary Capture: expected a refused context, got {other:?}"),
    }
    let e = scu::store_files(&dest, "VERTEBRA", &files[1..], &quick())
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("1.2.840.10008.5.1.4.1.1.7"),
        "the error names the refused class: {e}"
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pacs_that_is_down_is_retried_with_growing_delays_until_it_receives() {
    let h = support::sqlite().await;
    let src = tempfile::tempdir().unwrap();
    let (files, uids) = phantom(src.path(), 23, 2);
    let port = free_port();
    let ids = queue(&h.store, &files, &uids, port).await;
    let (stop, rx) = watch::channel(false);
    let worker = tokio::spawn(run_forwarder(h.store.clone(), forward_config(10), rx));

    let store = h.store.clone();
    let attempts_reach = |n: i32| {
        let store = store.clone();
        let ids = ids.clone();
        move || {
            let store = store.clone();
            let ids = ids.clone();
            async move {
                for id in &ids {
                    let d = store.delivery(*id).await.unwrap().unwrap();
                    if d.attempts < n {
                        return false;
                    }
                }
                true
            }
        }
    };
    wait_until("first failed attempt", attempts_reach(1)).await;
    let t0 = support::T0_MS;
    for id in &ids {
        let d = h.store.delivery(*id).await.unwrap().unwrap();
        assert_eq!(d.state, DeliveryState::Pending);
        assert_eq!(d.attempts, 1);
        assert_eq!(d.next_attempt_at_ms, t0 + 10_000, "base delay");
        let err = d.last_error.unwrap();
        assert!(err.contains("cannot connect"), "{err}");
    }
    // Not due yet: nothing happens while the clock stands still.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(h.store.delivery(ids[0]).await.unwrap().unwrap().attempts, 1);

    h.clock.advance(Duration::from_secs(10));
    wait_until("second failed attempt", attempts_reach(2)).await;
    for id in &ids {
        let d = h.store.delivery(*id).await.unwrap().unwrap();
        assert_eq!(d.next_attempt_at_ms, t0 + 10_000 + 20_000, "doubled delay");
    }

    let pacs = Storescp::start(port, &[]).await;
    h.clock.advance(Duration::from_secs(20));
    let store = h.store.clone();
    let ids2 = ids.clone();
    wait_until("delivery once the PACS is up", || {
        let store = store.clone();
        let ids = ids2.clone();
        async move {
            for id in &ids {
                if store.delivery(*id).await.unwrap().unwrap().state != DeliveryState::Delivered {
                    return false;
                }
            }
            true
        }
    })
    .await;
    for ((id, file), uid) in ids.iter().zip(&files).zip(&uids) {
        let d = h.store.delivery(*id).await.unwrap().unwrap();
        assert_eq!(d.attempts, 3);
        assert_eq!(d.delivered_at_ms, Some(t0 + 30_000));
        assert_received_identical(&pacs, file, uid);
    }
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), worker)
        .await
        .expect("the worker stops on shutdown")
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_max_attempts_a_delivery_is_dead_lettered_audited_and_can_be_retried() {
    let h = support::sqlite().await;
    let src = tempfile::tempdir().unwrap();
    let (files, uids) = phantom(src.path(), 24, 1);
    let port = free_port();
    let id = queue(&h.store, &files, &uids, port).await[0];
    let (stop, rx) = watch::channel(false);
    let worker = tokio::spawn(run_forwarder(h.store.clone(), forward_config(2), rx));
    let store = h.store.clone();
    let state_is = |want: DeliveryState, attempts: i32| {
        let store = store.clone();
        move || {
            let store = store.clone();
            async move {
                let d = store.delivery(id).await.unwrap().unwrap();
                d.state == want && d.attempts == attempts
            }
        }
    };
    wait_until("first failure", state_is(DeliveryState::Pending, 1)).await;
    h.clock.advance(Duration::from_secs(10));
    wait_until("dead letter", state_is(DeliveryState::Failed, 2)).await;
    let d = h.store.delivery(id).await.unwrap().unwrap();
    assert!(d.last_error.unwrap().contains("cannot connect"));
    let dead = h
        .store
        .list_deliveries(Some(DeliveryState::Failed), 10)
        .await
        .unwrap();
    assert_eq!(dead.iter().map(|d| d.id).collect::<Vec<_>>(), [id]);
    let events = h.store.recent_audit_events(10).await.unwrap();
    let event = events
        .iter()
        .find(|e| e.event.action == "delivery.dead_letter")
        .expect("dead letter audited");
    assert!(
        event.event.target.as_deref().unwrap().contains(&uids[0]),
        "{:?}",
        event.event.target
    );
    // A dead letter stays put, however much time passes.
    h.clock.advance(Duration::from_secs(100_000));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(h.store.delivery(id).await.unwrap().unwrap().attempts, 2);

    let pacs = Storescp::start(port, &[]).await;
    assert!(h.store.retry_delivery(id, "admin").await.unwrap());
    wait_until(
        "delivery after retry",
        state_is(DeliveryState::Delivered, 1),
    )
    .await;
    assert_received_identical(&pacs, &files[0], &uids[0]);
    assert!(
        !h.store.retry_delivery(id, "admin").await.unwrap(),
        "delivered stays"
    );
    assert!(
        h.store
            .recent_audit_events(10)
            .await
            .unwrap()
            .iter()
            .any(|e| e.event.action == "delivery.retry" && e.event.actor == "admin")
    );
    stop.send(true).unwrap();
    worker.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn associations_to_one_destination_are_bounded_by_its_concurrency() {
    // A peer that accepts TCP connections and never answers: each association attempt holds
    // its connection until our A-ASSOCIATE timeout (1 s). With batches of one object and two
    // associations per destination, connections arrive in pairs, never three within one
    // attempt's time.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = std::sync::Arc::new(std::sync::Mutex::new(Vec::<std::time::Instant>::new()));
    let log = accepted.clone();
    let peer = tokio::spawn(async move {
        loop {
            let (mut sock, _) = listener.accept().await.unwrap();
            log.lock().unwrap().push(std::time::Instant::now());
            tokio::spawn(async move {
                let mut sink = Vec::new();
                let _ = tokio::io::AsyncReadExt::read_to_end(&mut sock, &mut sink).await;
            });
        }
    });
    let h = support::sqlite().await;
    let src = tempfile::tempdir().unwrap();
    let (files, uids) = phantom(src.path(), 27, 5);
    let ids = queue(&h.store, &files, &uids, port).await;
    let cfg = ForwardConfig {
        batch_size: 1,
        concurrency_per_destination: 2,
        connect_timeout_s: 1,
        association_timeout_s: 1,
        ..forward_config(10)
    };
    let (stop, rx) = watch::channel(false);
    let worker = tokio::spawn(run_forwarder(h.store.clone(), cfg, rx));
    let store = h.store.clone();
    wait_until("one failed attempt each", || {
        let store = store.clone();
        let ids = ids.clone();
        async move {
            for id in &ids {
                if store.delivery(*id).await.unwrap().unwrap().attempts < 1 {
                    return false;
                }
            }
            true
        }
    })
    .await;
    stop.send(true).unwrap();
    worker.await.unwrap().unwrap();
    peer.abort();
    let times = accepted.lock().unwrap().clone();
    assert_eq!(times.len(), 5, "one association attempt per delivery");
    assert!(
        times[1] - times[0] < Duration::from_millis(500),
        "two associations run at once"
    );
    for w in times.windows(3) {
        assert!(
            w[2] - w[0] >= Duration::from_millis(900),
            "three associations within one attempt: {:?}",
            w[2] - w[0]
        );
    }
    let err = h
        .store
        .delivery(ids[0])
        .await
        .unwrap()
        .unwrap()
        .last_error
        .unwrap();
    assert!(err.contains("A-ASSOCIATE"), "{err}");
}

async fn claims_never_overlap_and_an_expired_lease_comes_back(h: support::Harness) {
    let s = &h.store;
    let files: Vec<PathBuf> = (0..6)
        .map(|i| PathBuf::from(format!("/out/{i}.dcm")))
        .collect();
    let uids: Vec<String> = (0..6).map(|i| format!("2.25.99.{i}")).collect();
    let ids = queue(s, &files, &uids, 4104).await;
    let lease = Duration::from_secs(60);
    // Concurrent claimers of two each: every delivery goes to exactly one of them.
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.claim_deliveries(lease, 2).await.unwrap()
        }));
    }
    let mut got: Vec<i64> = Vec::new();
    for t in tasks {
        got.extend(t.await.unwrap().iter().map(|c| c.id));
    }
    got.sort_unstable();
    assert_eq!(got, ids, "each delivery claimed once");
    assert!(s.claim_deliveries(lease, 10).await.unwrap().is_empty());

    // A worker that vanished: its lease runs out and the delivery is due again.
    h.clock.advance(Duration::from_secs(61));
    let again = s.claim_deliveries(lease, 1).await.unwrap();
    assert_eq!(again.len(), 1);
    let claim = &again[0];
    assert_eq!(claim.spool_path, format!("/out/{}.dcm", claim.id - ids[0]));
    assert_eq!(claim.destination.port, 4104);
    // The late report of the first worker changes nothing (its token is gone) …
    let stale = vertebrad::store::ClaimedDelivery {
        lease_expires_at_ms: support::T0_MS + 60_000,
        ..claim.clone()
    };
    let policy = vertebrad::forward::retry_policy(&forward_config(3));
    assert_eq!(
        s.fail_delivery(&stale, "late", &policy).await.unwrap(),
        None
    );
    // … while the current holder's does.
    assert_eq!(
        s.fail_delivery(claim, "refused", &policy).await.unwrap(),
        Some(DeliveryState::Pending)
    );
    let d = s.delivery(claim.id).await.unwrap().unwrap();
    assert_eq!(d.attempts, 1);
    assert_eq!(d.last_error.as_deref(), Some("refused"));
    assert_eq!(d.next_attempt_at_ms, support::T0_MS + 61_000 + 10_000);
    let pending = s
        .list_deliveries(Some(DeliveryState::Pending), 100)
        .await
        .unwrap();
    assert_eq!(pending.len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn claims_never_overlap_on_sqlite() {
    claims_never_overlap_and_an_expired_lease_comes_back(support::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn claims_never_overlap_on_postgres() {
    claims_never_overlap_and_an_expired_lease_comes_back(support::postgres().await).await;
}

/// A throwaway CA, server and client certificate (RSA 2048, v3) made with the openssl CLI.
fn make_pki(dir: &Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap_or_else(|e| panic!("running openssl ({PROVISION}): {e}"));
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
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        let crt = format!("{name}.crt");
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &format!("/CN={name}"),
        ]);
        run(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &crt,
            "-days",
            "2",
            "-extfile",
            "leaf.ext",
        ]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_destinations_are_reached_with_client_certificates() {
    let pki = tempfile::tempdir().unwrap();
    make_pki(pki.path());
    let p = |f: &str| pki.path().join(f);
    let ps = |f: &str| p(f).display().to_string();
    // storescp +tls requires and verifies a client certificate by default.
    let pacs = Storescp::start(
        free_port(),
        &[
            "+tls",
            &ps("server.key"),
            &ps("server.crt"),
            "+cf",
            &ps("ca.crt"),
        ],
    )
    .await;
    let dest = Destination {
        tls: true,
        ..self::pacs(pacs.port)
    };
    let e = scu::echo(&dest, "VERTEBRA", &quick()).await.unwrap_err();
    assert!(matches!(e, ScuError::TlsNotConfigured(_)), "{e}");

    let cfg = ForwardConfig {
        tls: Some(ForwardTlsConfig {
            ca_certificates: p("ca.crt"),
            certificate: Some(p("client.crt")),
            private_key: Some(p("client.key")),
        }),
        ..forward_config(3)
    };
    let opts = ScuOptions::from_config(&cfg).unwrap();
    scu::echo(&dest, "VERTEBRA", &opts)
        .await
        .expect("C-ECHO over TLS");
    let src = tempfile::tempdir().unwrap();
    let (files, uids) = phantom(src.path(), 25, 2);
    let outcomes = scu::store_files(&dest, "VERTEBRA", &files, &opts)
        .await
        .expect("association over TLS");
    for ((o, file), uid) in outcomes.iter().zip(&files).zip(&uids) {
        assert_eq!(o.result, Ok(0));
        assert_received_identical(&pacs, file, uid);
    }

    // Plain DICOM to the TLS port, and TLS to a CA we do not trust: no association.
    assert!(
        scu::echo(&self::pacs(pacs.port), "VERTEBRA", &quick())
            .await
            .is_err()
    );
    let other = tempfile::tempdir().unwrap();
    make_pki(other.path());
    let untrusting = ScuOptions::from_config(&ForwardConfig {
        tls: Some(ForwardTlsConfig {
            ca_certificates: other.path().join("ca.crt"),
            certificate: Some(p("client.crt")),
            private_key: Some(p("client.key")),
        }),
        ..forward_config(3)
    })
    .unwrap();
    let e = scu::echo(&dest, "VERTEBRA", &untrusting).await.unwrap_err();
    assert!(matches!(e, ScuError::Connect { .. }), "{e}");
}
