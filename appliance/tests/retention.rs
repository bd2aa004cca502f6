//! The retention sweeper (`vertebrad::retention::sweep`) on a real SQLite store and real files
//! in a temporary spool: only images of delivered series go, the deletion is recorded and
//! audited, a second sweep is a no-op, a file already gone counts as deleted, and an indexed
//! path outside the spool is never touched.

mod support;

use std::path::Path;
use std::time::Duration;

use vertebrad::config::RetentionConfig;
use vertebrad::retention::sweep;
use vertebrad::store::{
    AuditOutcome, NewDestination, NewInstance, NewSeries, NewStudy, OutputKind, Store,
};

fn instance(series: &str, sop: &str, spool_path: &Path) -> NewInstance {
    NewInstance {
        study: NewStudy {
            study_uid: format!("{series}.0"),
            patient_name: None,
            patient_id: None,
            study_date: None,
        },
        series: NewSeries {
            series_uid: series.into(),
            modality: "CT".into(),
        },
        sop_instance_uid: sop.into(),
        sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
        transfer_syntax: "1.2.840.10008.1.2.1".into(),
        spool_path: spool_path.to_string_lossy().into_owned(),
        size_bytes: 1000,
        sha256: "ab".repeat(32),
        received_at_ms: support::T0_MS,
        calling_ae: "CT".into(),
        peer_addr: "127.0.0.1:1".into(),
    }
}

/// Indexes `n` real 1000-byte files of `series` in `spool`; returns their paths.
async fn receive(
    s: &Store,
    spool: &Path,
    series: &str,
    n: usize,
) -> (i64, Vec<std::path::PathBuf>) {
    let mut paths = Vec::new();
    let mut series_id = 0;
    for i in 0..n {
        let path = spool.join(format!("{series}-{i}.dcm"));
        std::fs::write(&path, vec![0_u8; 1000]).unwrap();
        series_id = s
            .index_instance(&instance(series, &format!("{series}.{i}"), &path))
            .await
            .unwrap()
            .series_id;
        paths.push(path);
    }
    (series_id, paths)
}

/// A succeeded result for `series_id` with a SEG and an SR queued to `dest`; delivered when
/// `deliver`.
async fn result(s: &Store, series_id: i64, dest: i64, deliver: bool) {
    let result = s
        .save_result(&support::succeeded_result(series_id))
        .await
        .unwrap();
    for kind in [OutputKind::Seg, OutputKind::Sr] {
        let out = s
            .add_output(
                result,
                kind,
                &format!("9.{series_id}.{}", kind as u8),
                "/out",
            )
            .await
            .unwrap();
        let d = s.add_delivery(out, dest).await.unwrap();
        if deliver {
            assert!(s.mark_delivered(d).await.unwrap());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweeper_deletes_only_delivered_images_records_and_audits_it() {
    let h = support::sqlite().await;
    let s = &h.store;
    let spool = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let dest = s
        .add_destination(&NewDestination {
            name: "pacs".into(),
            ae_title: "PACS".into(),
            host: "pacs.local".into(),
            port: 104,
            tls: false,
            enabled: true,
        })
        .await
        .unwrap();
    let (done_id, done) = receive(s, spool.path(), "1.1", 3).await;
    let (pending_id, pending) = receive(s, spool.path(), "1.2", 2).await;
    let (_, unanalysed) = receive(s, spool.path(), "1.3", 1).await;
    // A tampered index entry pointing outside the spool, in a delivered series.
    let stray = outside.path().join("keep.dcm");
    std::fs::write(&stray, b"not ours").unwrap();
    let stray_id = s
        .index_instance(&instance("1.4", "1.4.0", &stray))
        .await
        .unwrap()
        .series_id;
    h.clock.advance(Duration::from_secs(1));
    result(s, done_id, dest, true).await;
    result(s, pending_id, dest, false).await;
    result(s, stray_id, dest, true).await;
    // One delivered file vanished already (a crash after deleting, before recording).
    std::fs::remove_file(&done[2]).unwrap();

    let cfg = RetentionConfig {
        delete_after_delivery: true,
        high_water_percent: 0.0,
        ..RetentionConfig::default()
    };
    let swept = sweep(s, &cfg, spool.path()).await.unwrap();
    assert_eq!(swept.deleted, 3, "{swept:?}");
    assert_eq!(swept.already_gone, 1, "{swept:?}");
    assert_eq!(swept.bytes, 3000, "{swept:?}");
    assert_eq!(swept.failed, 1, "the path outside the spool: {swept:?}");
    for p in &done {
        assert!(!p.exists(), "{} should be deleted", p.display());
    }
    for p in pending.iter().chain(&unanalysed) {
        assert!(p.exists(), "{} is not delivered and must stay", p.display());
    }
    assert!(
        stray.exists(),
        "a file outside the spool must never be deleted"
    );
    let left = s.spool_files().await.unwrap();
    assert_eq!(
        left.len(),
        4,
        "3 undelivered + the stray stay indexed: {left:?}"
    );

    let audit = s.recent_audit_events(10).await.unwrap();
    let ev = audit
        .iter()
        .find(|e| e.event.action == "spool.retention")
        .expect("a spool.retention audit event");
    assert_eq!(ev.event.actor, "system");
    assert_eq!(
        ev.event.outcome,
        AuditOutcome::Failure,
        "one file could not go"
    );
    let target = ev.event.target.as_deref().unwrap();
    assert!(
        target.starts_with("3 images, 3000 bytes deleted") && target.contains("1 could not"),
        "{target}"
    );

    // A second sweep finds nothing new to delete and writes no new "deleted" event.
    let again = sweep(s, &cfg, spool.path()).await.unwrap();
    assert_eq!((again.deleted, again.failed), (0, 1), "{again:?}");
    // Results are kept.
    assert!(s.result_for_series(done_id).await.unwrap().is_some());

    // Without a policy that allows it, delivered images stay.
    let (kept_id, kept) = receive(s, spool.path(), "1.5", 1).await;
    h.clock.advance(Duration::from_secs(1));
    result(s, kept_id, dest, true).await;
    let off = RetentionConfig {
        high_water_percent: 0.0,
        ..RetentionConfig::default()
    };
    assert_eq!(sweep(s, &off, spool.path()).await.unwrap().deleted, 0);
    assert!(kept[0].exists());
    // Disk pressure: a high-water mark of 0.001 % of any real file system is exceeded, so
    // delivered images go down to the low-water mark (never reached: all delivered go).
    let pressure = RetentionConfig {
        high_water_percent: 0.001,
        low_water_percent: 0.0,
        ..RetentionConfig::default()
    };
    let swept = sweep(s, &pressure, spool.path()).await.unwrap();
    assert_eq!(swept.deleted, 1, "{swept:?}");
    assert!(!kept[0].exists());
    for p in &pending {
        assert!(p.exists(), "undelivered images survive disk pressure");
    }
}

#[test]
fn retention_settings_are_validated() {
    let bad = [
        "[retention]\nlow_water_percent = 90\nhigh_water_percent = 80\n",
        "[retention]\nhigh_water_percent = 120\n",
        "[retention]\nmax_age_days = -1\n",
        "[retention]\ninterval_s = 0\n",
        "[retention]\nkeep_forever = true\n",
    ];
    let dir = tempfile::tempdir().unwrap();
    for (i, text) in bad.iter().enumerate() {
        let path = dir.path().join(format!("{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let err = vertebrad::config::Config::load_with_env(
            Some(&path),
            Some(std::collections::HashMap::new()),
        );
        assert!(err.is_err(), "accepted: {text}");
    }
    let path = dir.path().join("ok.toml");
    std::fs::write(
        &path,
        "[retention]\ndelete_after_delivery = true\nmax_age_days = 30\nhigh_water_percent = 85\nlow_water_percent = 75\n",
    )
    .unwrap();
    let cfg = vertebrad::config::Config::load_with_env(
        Some(&path),
        Some(std::collections::HashMap::new()),
    )
    .unwrap()
    .retention;
    let policy = cfg.policy(1_000_000);
    assert!(policy.delete_after_delivery);
    assert_eq!(policy.max_age, Some(Duration::from_secs(30 * 86_400)));
    assert_eq!(policy.high_water_bytes, Some(850_000));
    assert_eq!(policy.low_water_bytes, Some(750_000));
}
