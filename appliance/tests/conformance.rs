//! The store conformance suite: every test runs against SQLite (a temp file) and PostgreSQL
//! (a fresh database on a real server), through the same public API.

mod support;

use std::time::Duration;

use sqlx::Connection;
use support::Harness;
use vertebrad::store::queue::{Backoff, JobState, NewJob};
use vertebrad::store::retention::{RetentionPolicy, select_for_deletion};
use vertebrad::store::{
    AuditEvent, AuditOutcome, BackendKind, Error, LesionRecord, NewDestination, NewInstance,
    NewResult, NewSeries, NewStudy, OutputKind, ResultStatus, Role, Store, Timings, VertebraRecord,
};

/// Instantiates each listed `async fn(Harness)` once per backend.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::support::sqlite().await).await; })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::support::postgres().await).await; })*
        }
    };
}

conformance!(
    migrations_are_recorded_and_reapplying_is_a_no_op,
    a_database_newer_than_the_binary_is_refused,
    indexing_builds_the_hierarchy_and_a_resend_is_idempotent,
    a_series_under_two_studies_is_rejected_and_nothing_is_written,
    a_batch_is_indexed_all_or_nothing,
    phi_is_stored_for_the_console_but_redacted_in_debug,
    claims_follow_queue_order_and_run_after,
    heartbeats_extend_the_lease_and_an_expired_lease_is_taken_over,
    failures_back_off_exponentially_then_the_job_is_dead,
    a_job_that_keeps_crashing_its_worker_ends_dead,
    a_released_job_is_runnable_at_once_without_losing_an_attempt,
    permanent_failure_and_dedup_keys,
    a_job_run_twice_leaves_one_result,
    audit_events_are_append_only,
    retention_deletes_only_delivered_spool_files,
    concurrent_claimers_never_share_a_job,
    sessions_resolve_while_unexpired_and_the_user_is_enabled,
);

fn instance(study: &str, series: &str, sop: &str, received_at_ms: i64) -> NewInstance {
    NewInstance {
        study: NewStudy {
            study_uid: study.into(),
            patient_name: Some("DOE^JANE".into()),
            patient_id: Some("PID-4711".into()),
            study_date: Some("20240102".into()),
        },
        series: NewSeries {
            series_uid: series.into(),
            modality: "CT".into(),
        },
        sop_instance_uid: sop.into(),
        sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
        transfer_syntax: "1.2.840.10008.1.2.1".into(),
        spool_path: format!("/spool/{sop}.dcm"),
        size_bytes: 525_000,
        sha256: "ab".repeat(32),
        received_at_ms,
        calling_ae: "CT_SCANNER".into(),
        peer_addr: "10.0.0.7:40112".into(),
    }
}

fn job(kind: &str, max_attempts: u32) -> NewJob {
    NewJob {
        kind: kind.into(),
        series_id: None,
        dedup_key: None,
        max_attempts,
    }
}

const LEASE: Duration = Duration::from_secs(60);

async fn migrations_are_recorded_and_reapplying_is_a_no_op(h: Harness) {
    let first = h.store.applied_migrations().await.unwrap();
    assert_eq!(
        first.last().unwrap().version,
        h.store.latest_known_migration()
    );
    assert_eq!(first[0].description, "initial");
    let again = h.store.migrate().await.unwrap();
    assert_eq!(first, again);
}

async fn a_database_newer_than_the_binary_is_refused(h: Harness) {
    let future = h.store.latest_known_migration() + 1;
    on_raw(
        &h,
        &format!(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES ({future}, 'from the future', TRUE, {blob}, 1)",
            blob = if h.store.backend() == BackendKind::Postgres {
                "'\\x00'::bytea"
            } else {
                "X'00'"
            }
        ),
    )
    .await
    .unwrap();
    let reopened = Store::connect(&h.url).await.unwrap();
    match reopened.migrate().await {
        Err(Error::DatabaseNewer {
            unknown,
            known_latest,
        }) => {
            assert_eq!(unknown, [future]);
            assert_eq!(known_latest, future - 1);
        }
        other => panic!("expected DatabaseNewer, got {other:?}"),
    }
    let message = Store::open(&h.url).await.unwrap_err().to_string();
    assert!(message.contains("newer"), "{message}");
}

async fn indexing_builds_the_hierarchy_and_a_resend_is_idempotent(h: Harness) {
    let s = &h.store;
    let a = s
        .index_instance(&instance("1.1", "1.1.1", "1.1.1.1", 10))
        .await
        .unwrap();
    let b = s
        .index_instance(&instance("1.1", "1.1.1", "1.1.1.2", 20))
        .await
        .unwrap();
    let c = s
        .index_instance(&instance("1.1", "1.1.2", "1.1.2.1", 15))
        .await
        .unwrap();
    assert_eq!(a.study_id, b.study_id);
    assert_eq!(a.series_id, b.series_id);
    assert_ne!(a.instance_id, b.instance_id);
    assert_eq!(c.study_id, a.study_id);
    assert_ne!(c.series_id, a.series_id);

    let mut resent = instance("1.1", "1.1.1", "1.1.1.1", 30);
    resent.spool_path = "/spool/again.dcm".into();
    let again = s.index_instance(&resent).await.unwrap();
    assert_eq!(again, a, "a resent instance keeps its ids");
    assert_eq!(s.series_instance_count("1.1.1").await.unwrap(), Some(2));
    assert_eq!(s.series_instance_count("9.9").await.unwrap(), None);
    let study = s.study("1.1").await.unwrap().unwrap();
    assert_eq!((study.series_count, study.instance_count), (2, 3));
    let files = s.spool_files().await.unwrap();
    let path = &files
        .iter()
        .find(|f| f.instance_id == a.instance_id)
        .unwrap()
        .spool_path;
    assert_eq!(path, "/spool/again.dcm");
}

async fn a_series_under_two_studies_is_rejected_and_nothing_is_written(h: Harness) {
    let s = &h.store;
    s.index_instance(&instance("2.1", "2.1.1", "2.1.1.1", 1))
        .await
        .unwrap();
    let err = s
        .index_instance(&instance("2.2", "2.1.1", "2.2.1.1", 2))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict(_)), "{err:?}");
    assert!(
        s.study("2.2").await.unwrap().is_none(),
        "the new study was rolled back"
    );
    let err = s
        .index_instance(&instance("2.1", "2.1.9", "2.1.1.1", 3))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict(_)), "{err:?}");
    assert_eq!(s.series_instance_count("2.1.9").await.unwrap(), None);
    let mut bad = instance("2.1", "2.1.1", "2.1.1.5", 4);
    bad.sha256 = "not a digest".into();
    assert!(matches!(
        s.index_instance(&bad).await,
        Err(Error::InvalidArgument(_))
    ));
}

async fn a_batch_is_indexed_all_or_nothing(h: Harness) {
    let s = &h.store;
    let batch: Vec<NewInstance> = (0..250)
        .map(|i| {
            instance(
                &format!("3.{}", i % 3),
                &format!("3.{}.{}", i % 3, i % 6 / 3),
                &format!("3.9.{i}"),
                i,
            )
        })
        .collect();
    let ids = s.index_instances(&batch).await.unwrap();
    assert_eq!(ids.len(), 250);
    let mut instances = 0;
    for st in 0..3 {
        let study = s.study(&format!("3.{st}")).await.unwrap().unwrap();
        assert_eq!(study.series_count, 2);
        instances += study.instance_count;
    }
    assert_eq!(instances, 250);
    // Single and batched indexing agree on ids.
    assert_eq!(s.index_instance(&batch[7]).await.unwrap(), ids[7]);
    // One bad row (series moving to another study) rolls the whole batch back.
    let mut poisoned: Vec<NewInstance> = (0..10)
        .map(|i| instance("3.7", "3.7.1", &format!("3.7.1.{i}"), i))
        .collect();
    poisoned.push(instance("3.8", "3.0.0", "3.8.1", 1));
    assert!(matches!(
        s.index_instances(&poisoned).await,
        Err(Error::Conflict(_))
    ));
    assert!(s.study("3.7").await.unwrap().is_none());
    assert!(s.study("3.8").await.unwrap().is_none());
}

async fn phi_is_stored_for_the_console_but_redacted_in_debug(h: Harness) {
    h.store
        .index_instance(&instance("4.1", "4.1.1", "4.1.1.1", 1))
        .await
        .unwrap();
    let study = h.store.study("4.1").await.unwrap().unwrap();
    assert_eq!(study.patient_name.as_deref(), Some("DOE^JANE"));
    assert_eq!(study.patient_id.as_deref(), Some("PID-4711"));
    for text in [
        format!("{study:?}"),
        format!("{:?}", instance("4.1", "4.1.1", "x", 1)),
    ] {
        assert!(!text.contains("DOE") && !text.contains("4711"), "{text}");
        assert!(text.contains("<redacted>"), "{text}");
    }
    // A later instance without patient data does not erase what is known.
    let mut anonymous = instance("4.1", "4.1.1", "4.1.1.2", 2);
    anonymous.study.patient_name = None;
    anonymous.study.patient_id = None;
    h.store.index_instance(&anonymous).await.unwrap();
    let study = h.store.study("4.1").await.unwrap().unwrap();
    assert_eq!(study.patient_name.as_deref(), Some("DOE^JANE"));
}

async fn claims_follow_queue_order_and_run_after(h: Harness) {
    let s = &h.store;
    assert!(s.claim("w1", LEASE).await.unwrap().is_none());
    let first = s.enqueue(&job("analyze", 3)).await.unwrap();
    let second = s.enqueue(&job("analyze", 3)).await.unwrap();
    let a = s.claim("w1", LEASE).await.unwrap().unwrap();
    let b = s.claim("w2", LEASE).await.unwrap().unwrap();
    assert_eq!((a.id, b.id), (first, second));
    assert_eq!((a.attempts, a.lease_owner.as_str()), (1, "w1"));
    assert_eq!(a.lease_expires_at_ms, support::T0_MS + 60_000);
    assert!(
        s.claim("w3", LEASE).await.unwrap().is_none(),
        "both are leased"
    );
    // A failed job waits out its back-off before it is claimable again.
    let backoff = Backoff {
        base: Duration::from_secs(10),
        max: Duration::from_secs(100),
    };
    assert_eq!(
        s.fail(&a, "transient", &backoff).await.unwrap(),
        JobState::Queued
    );
    assert!(s.claim("w3", LEASE).await.unwrap().is_none());
    h.clock.advance(Duration::from_secs(10));
    let again = s.claim("w3", LEASE).await.unwrap().unwrap();
    assert_eq!((again.id, again.attempts), (first, 2));
    s.complete(&again).await.unwrap();
    s.complete(&b).await.unwrap();
    assert_eq!(s.count_jobs(JobState::Succeeded).await.unwrap(), 2);
    let record = s.job(first).await.unwrap().unwrap();
    assert_eq!(record.state, JobState::Succeeded);
    assert_eq!(record.last_error.as_deref(), Some("transient"));
    assert!(record.lease_owner.is_none());
}

async fn heartbeats_extend_the_lease_and_an_expired_lease_is_taken_over(h: Harness) {
    let s = &h.store;
    let id = s.enqueue(&job("analyze", 3)).await.unwrap();
    let mine = s.claim("w1", LEASE).await.unwrap().unwrap();
    h.clock.advance(Duration::from_secs(50));
    let expiry = s.heartbeat(&mine, LEASE).await.unwrap();
    assert_eq!(expiry, support::T0_MS + 110_000);
    h.clock.advance(Duration::from_secs(50));
    assert!(
        s.claim("w2", LEASE).await.unwrap().is_none(),
        "heartbeat kept the lease"
    );
    h.clock.advance(Duration::from_secs(11));
    let theirs = s.claim("w2", LEASE).await.unwrap().unwrap();
    assert_eq!((theirs.id, theirs.attempts), (id, 2));
    // The stalled worker wakes up: every transition it tries is refused.
    assert!(matches!(
        s.heartbeat(&mine, LEASE).await,
        Err(Error::LeaseLost { .. })
    ));
    assert!(matches!(
        s.complete(&mine).await,
        Err(Error::LeaseLost { .. })
    ));
    assert!(matches!(
        s.fail(&mine, "late", &Backoff::default()).await,
        Err(Error::LeaseLost { .. })
    ));
    // Even under the same owner name, an older attempt cannot act.
    let stale_same_owner = vertebrad::store::queue::Job {
        lease_owner: "w2".into(),
        ..mine
    };
    assert!(matches!(
        s.complete(&stale_same_owner).await,
        Err(Error::LeaseLost { .. })
    ));
    s.complete(&theirs).await.unwrap();
    let record = s.job(id).await.unwrap().unwrap();
    assert_eq!(record.state, JobState::Succeeded);
    assert_eq!(record.last_error.as_deref(), Some("lease of w1 expired"));
}

async fn failures_back_off_exponentially_then_the_job_is_dead(h: Harness) {
    let s = &h.store;
    let backoff = Backoff {
        base: Duration::from_secs(5),
        max: Duration::from_secs(12),
    };
    let id = s.enqueue(&job("analyze", 4)).await.unwrap();
    let mut waits = Vec::new();
    for attempt in 1..=4 {
        let j = s.claim("w", LEASE).await.unwrap().unwrap();
        assert_eq!(j.attempts, attempt);
        let state = s
            .fail(&j, &format!("error {attempt}"), &backoff)
            .await
            .unwrap();
        if attempt < 4 {
            assert_eq!(state, JobState::Queued);
            let r = s.job(id).await.unwrap().unwrap();
            waits.push((r.run_after_ms - h.clock.now_ms()) / 1000);
            h.clock.advance(Duration::from_millis(
                u64::try_from(r.run_after_ms - h.clock.now_ms()).unwrap(),
            ));
        } else {
            assert_eq!(state, JobState::Dead);
        }
    }
    assert_eq!(waits, [5, 10, 12]);
    let r = s.job(id).await.unwrap().unwrap();
    assert_eq!(r.state, JobState::Dead);
    assert_eq!(r.last_error.as_deref(), Some("error 4"));
    assert_eq!(r.finished_at_ms, Some(h.clock.now_ms()));
    h.clock.advance(Duration::from_secs(3600));
    assert!(
        s.claim("w", LEASE).await.unwrap().is_none(),
        "dead jobs are never claimed"
    );
}

async fn a_released_job_is_runnable_at_once_without_losing_an_attempt(h: Harness) {
    let s = &h.store;
    let id = s.enqueue(&job("analyze", 1)).await.unwrap();
    let first = s.claim("stopping", LEASE).await.unwrap().unwrap();
    s.release(&first).await.unwrap();
    let r = s.job(id).await.unwrap().unwrap();
    assert_eq!(r.state, JobState::Queued);
    assert_eq!(r.attempts, 0, "a shutdown does not use up an attempt");
    assert_eq!(r.lease_owner, None);
    // Another worker takes it at once, not after the lease, and it is not dead although
    // max_attempts is 1.
    let again = s.claim("other", LEASE).await.unwrap().unwrap();
    assert_eq!(again.id, id);
    assert_eq!(again.attempts, 1);
    assert!(matches!(
        s.release(&first).await,
        Err(vertebrad::store::Error::LeaseLost { .. })
    ));
    s.complete(&again).await.unwrap();
    assert!(
        s.release(&again).await.is_err(),
        "a finished job stays finished"
    );
}

async fn a_job_that_keeps_crashing_its_worker_ends_dead(h: Harness) {
    let s = &h.store;
    let id = s.enqueue(&job("analyze", 2)).await.unwrap();
    for owner in ["w1", "w2"] {
        assert!(s.claim(owner, LEASE).await.unwrap().is_some());
        h.clock.advance(LEASE + Duration::from_millis(1));
    }
    assert!(s.claim("w3", LEASE).await.unwrap().is_none());
    let r = s.job(id).await.unwrap().unwrap();
    assert_eq!(r.state, JobState::Dead);
    assert_eq!(r.attempts, 2);
    assert!(r.last_error.unwrap().contains("lease of w2 expired"));
    assert_eq!(s.count_jobs(JobState::Running).await.unwrap(), 0);
}

async fn permanent_failure_and_dedup_keys(h: Harness) {
    let s = &h.store;
    let keyed = NewJob {
        dedup_key: Some("analyze:5.1".into()),
        ..job("analyze", 3)
    };
    let id = s.enqueue(&keyed).await.unwrap();
    assert_eq!(s.enqueue(&keyed).await.unwrap(), id);
    assert_eq!(s.count_jobs(JobState::Queued).await.unwrap(), 1);
    let j = s.claim("w", LEASE).await.unwrap().unwrap();
    s.fail_permanently(&j, "not a spine CT").await.unwrap();
    let r = s.job(id).await.unwrap().unwrap();
    assert_eq!((r.state, r.attempts), (JobState::Failed, 1));
    assert!(s.claim("w", LEASE).await.unwrap().is_none());
    assert!(matches!(
        s.enqueue(&job("x", 0)).await,
        Err(Error::InvalidArgument(_))
    ));
}

async fn concurrent_claimers_never_share_a_job(h: Harness) {
    for n in 0..200 {
        let keyed = NewJob {
            dedup_key: Some(format!("c{n}")),
            ..job("analyze", 1)
        };
        h.store.enqueue(&keyed).await.unwrap();
    }
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let store = h.store.clone();
            tokio::spawn(async move {
                let mut ran = Vec::new();
                while let Some(j) = store.claim(&format!("w{w}"), LEASE).await.unwrap() {
                    store.complete(&j).await.unwrap();
                    ran.push(j.id);
                }
                ran
            })
        })
        .collect();
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.unwrap());
    }
    all.sort_unstable();
    let before = all.len();
    all.dedup();
    assert_eq!(
        (before, all.len()),
        (200, 200),
        "each job claimed exactly once"
    );
    assert_eq!(h.store.count_jobs(JobState::Succeeded).await.unwrap(), 200);
}

async fn sessions_resolve_while_unexpired_and_the_user_is_enabled(h: Harness) {
    let s = &h.store;
    let hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA";
    let id = s.create_user("admin", hash, Role::Admin).await.unwrap();
    assert!(
        s.create_user("admin", hash, Role::Viewer).await.is_err(),
        "unique names"
    );
    let user = s.user_by_name("admin").await.unwrap().unwrap();
    assert_eq!(
        (user.id, user.role, user.disabled),
        (id, Role::Admin, false)
    );
    assert!(
        !format!("{user:?}").contains("argon2"),
        "Debug hides the hash"
    );
    assert!(s.user_by_name("nobody").await.unwrap().is_none());

    let expires = h.clock.now_ms() + 60_000;
    s.create_session("tok-1", id, "10.0.0.9:5000", expires)
        .await
        .unwrap();
    s.create_session("tok-2", id, "10.0.0.9:5001", expires + 60_000)
        .await
        .unwrap();
    assert_eq!(s.session_user("tok-1").await.unwrap().unwrap().id, id);
    assert!(s.session_user("tok-x").await.unwrap().is_none());
    assert!(s.set_user_disabled(id, true).await.unwrap());
    assert!(
        s.session_user("tok-1").await.unwrap().is_none(),
        "disabled users are out"
    );
    assert!(s.set_user_disabled(id, false).await.unwrap());
    h.clock.advance(Duration::from_secs(60));
    assert!(s.session_user("tok-1").await.unwrap().is_none(), "expired");
    assert!(s.session_user("tok-2").await.unwrap().is_some());
    assert_eq!(s.purge_expired_sessions().await.unwrap(), 1);
    assert!(s.end_session("tok-2").await.unwrap());
    assert!(!s.end_session("tok-2").await.unwrap());
    assert!(s.session_user("tok-2").await.unwrap().is_none());
}

fn vertebra(label: i32, grade: Option<i32>) -> VertebraRecord {
    VertebraRecord {
        label,
        centroid_x: 1.5,
        centroid_y: -20.25,
        centroid_z: 100.0 - f64::from(label) * 25.0,
        volume_mm3: 30_000.0,
        bbox_min_x: 10,
        bbox_min_y: 20,
        bbox_min_z: 30,
        bbox_max_x: 50,
        bbox_max_y: 60,
        bbox_max_z: 55,
        mean_hu: 245.5,
        anterior_height_ratio: Some(0.93),
        middle_height_ratio: None,
        genant_grade: grade,
        confidence: 0.97,
    }
}

async fn a_job_run_twice_leaves_one_result(h: Harness) {
    let s = &h.store;
    let ids = s
        .index_instance(&instance("6.1", "6.1.1", "6.1.1.1", 1))
        .await
        .unwrap();
    let id = s
        .enqueue(&NewJob {
            series_id: Some(ids.series_id),
            ..job("analyze", 3)
        })
        .await
        .unwrap();
    let first = s.claim("w1", LEASE).await.unwrap().unwrap();
    h.clock.advance(LEASE + Duration::from_secs(1));
    let second = s.claim("w2", LEASE).await.unwrap().unwrap();
    assert_eq!(first.id, second.id);
    let mut result = NewResult {
        series_id: ids.series_id,
        job_id: Some(id),
        bundle_id: "vertebraformer-base".into(),
        bundle_version: "1.0.0".into(),
        status: ResultStatus::Succeeded,
        timings: Timings {
            preprocess_ms: 800,
            inference_ms: 2500,
            postprocess_ms: 300,
        },
        vertebrae: (18..=22).map(|l| vertebra(l, Some(0))).collect(),
        lesions: vec![LesionRecord {
            class: "lytic".into(),
            center_x: 1.0,
            center_y: 2.0,
            center_z: 3.0,
            size_mm: 12.5,
            score: 0.81,
            vertebra_label: Some(20),
        }],
    };
    // Both runs save: the second (w2) and then the stalled first (w1) finishes its write.
    let r2 = s.save_result(&result).await.unwrap();
    result.vertebrae = (19..=21).map(|l| vertebra(l, Some(2))).collect();
    result.lesions.clear();
    let r1 = s.save_result(&result).await.unwrap();
    assert_eq!(r1, r2, "one result row per series");
    let stored = s.result_for_series(ids.series_id).await.unwrap().unwrap();
    assert_eq!(
        stored.result, result,
        "the latest save replaced children, no leftovers"
    );
    s.complete(&second).await.unwrap();
    assert!(matches!(
        s.complete(&first).await,
        Err(Error::LeaseLost { .. })
    ));
    assert!(
        s.result_for_series(ids.series_id + 1000)
            .await
            .unwrap()
            .is_none()
    );
    // A duplicate label is refused and leaves the stored result as it was.
    result.vertebrae.push(vertebra(19, None));
    assert!(s.save_result(&result).await.is_err());
    result.vertebrae.pop();
    let unchanged = s.result_for_series(ids.series_id).await.unwrap().unwrap();
    assert_eq!(unchanged.result, result);
}

async fn audit_events_are_append_only(h: Harness) {
    let s = &h.store;
    let event = AuditEvent {
        actor: "admin".into(),
        action: "login".into(),
        target: None,
        peer_addr: Some("10.0.0.9".into()),
        outcome: AuditOutcome::Denied,
    };
    let id = s.append_audit(&event).await.unwrap();
    let later = s
        .append_audit(&AuditEvent {
            outcome: AuditOutcome::Success,
            ..event.clone()
        })
        .await
        .unwrap();
    assert!(later > id);
    for sql in [
        "UPDATE audit_events SET outcome = 'success'",
        "DELETE FROM audit_events",
    ] {
        let err = on_raw(&h, sql).await.expect_err(sql);
        assert!(err.contains("append-only"), "{sql}: {err}");
    }
    if s.backend() == BackendKind::Postgres {
        let err = on_raw(&h, "TRUNCATE audit_events").await.unwrap_err();
        assert!(err.contains("append-only"), "{err}");
    }
    let events = s.recent_audit_events(10).await.unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].event, event);
    assert_eq!(events[1].at_ms, support::T0_MS);
}

async fn retention_deletes_only_delivered_spool_files(h: Harness) {
    let s = &h.store;
    let delivered = s
        .index_instance(&instance("7.1", "7.1.1", "7.1.1.1", 1))
        .await
        .unwrap();
    s.index_instance(&instance("7.1", "7.1.1", "7.1.1.2", 2))
        .await
        .unwrap();
    let pending = s
        .index_instance(&instance("7.2", "7.2.1", "7.2.1.1", 3))
        .await
        .unwrap();
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
    let mut deliveries = Vec::new();
    for series_id in [delivered.series_id, pending.series_id] {
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
            deliveries.push(s.add_delivery(out, dest).await.unwrap());
        }
    }
    assert_eq!(
        s.add_delivery(1, dest).await.unwrap(),
        deliveries[0],
        "queued once"
    );
    // Series 7.1 fully delivered; 7.2 only half.
    h.clock.advance(Duration::from_secs(5));
    for d in &deliveries[..3] {
        assert!(s.mark_delivered(*d).await.unwrap());
    }
    assert!(!s.mark_delivered(deliveries[0]).await.unwrap());
    // A late instance of the delivered series arrived after its result: not delivered yet.
    let late = s
        .index_instance(&instance("7.1", "7.1.1", "7.1.1.3", support::T0_MS + 10))
        .await
        .unwrap();

    let files = s.spool_files().await.unwrap();
    assert_eq!(files.len(), 4);
    assert!(
        files.iter().all(|f| f.delivered_at_ms.is_none()),
        "a late instance protects its whole series until it is analysed again: {files:?}"
    );
    // Its re-analysis succeeds and is delivered: now the whole series counts as delivered.
    h.clock.advance(Duration::from_secs(5));
    let again = s
        .save_result(&support::succeeded_result(delivered.series_id))
        .await
        .unwrap();
    let out = s
        .add_output(again, OutputKind::Sr, "9.again", "/out")
        .await
        .unwrap();
    let d = s.add_delivery(out, dest).await.unwrap();
    assert!(s.mark_delivered(d).await.unwrap());
    let files = s.spool_files().await.unwrap();
    let delivered_ids: Vec<i64> = files
        .iter()
        .filter(|f| f.delivered_at_ms.is_some())
        .map(|f| f.instance_id)
        .collect();
    assert_eq!(
        delivered_ids,
        [
            delivered.instance_id,
            delivered.instance_id + 1,
            late.instance_id
        ]
    );
    // A queued job (a requeue from the console) protects the series again.
    let requeued = s
        .enqueue(&NewJob {
            kind: "analyze".into(),
            series_id: Some(delivered.series_id),
            dedup_key: None,
            max_attempts: 3,
        })
        .await
        .unwrap();
    assert!(
        s.spool_files()
            .await
            .unwrap()
            .iter()
            .all(|f| f.delivered_at_ms.is_none()),
        "a queued job protects its series"
    );
    let job = s
        .claim("retention-test", Duration::from_secs(60))
        .await
        .unwrap()
        .expect("the requeued job");
    assert_eq!(job.id, requeued);
    s.complete(&job).await.unwrap();

    let policy = RetentionPolicy {
        high_water_bytes: Some(0),
        ..RetentionPolicy::default()
    };
    let chosen: Vec<i64> = select_for_deletion(&files, &policy, h.clock.now_ms(), u64::MAX)
        .iter()
        .map(|f| f.instance_id)
        .collect();
    assert_eq!(
        chosen, delivered_ids,
        "disk pressure never takes undelivered files"
    );
    assert_eq!(s.mark_spool_deleted(&chosen).await.unwrap(), 3);
    assert_eq!(s.mark_spool_deleted(&chosen).await.unwrap(), 0);
    let left: Vec<i64> = s
        .spool_files()
        .await
        .unwrap()
        .iter()
        .map(|f| f.instance_id)
        .collect();
    assert_eq!(left, [pending.instance_id]);
    // Results are kept.
    assert!(
        s.result_for_series(delivered.series_id)
            .await
            .unwrap()
            .is_some()
    );
    // A resend of a deleted instance brings its spool file back into retention's view.
    s.index_instance(&instance("7.1", "7.1.1", "7.1.1.1", 4))
        .await
        .unwrap();
    assert_eq!(s.spool_files().await.unwrap().len(), 2);
}

/// Runs one statement on a separate raw connection; returns the database's error text.
async fn on_raw(h: &Harness, sql: &str) -> Result<(), String> {
    let result = if h.store.backend() == BackendKind::Postgres {
        let mut c = sqlx::PgConnection::connect(&h.url).await.unwrap();
        sqlx::query(sql).execute(&mut c).await.map(|_| ())
    } else {
        let mut c = sqlx::SqliteConnection::connect(&h.url).await.unwrap();
        sqlx::query(sql).execute(&mut c).await.map(|_| ())
    };
    result.map_err(|e| e.to_string())
}
