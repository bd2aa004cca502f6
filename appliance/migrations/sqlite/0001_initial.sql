-- Initial schema of the appliance store (SQLite; STRICT tables so a wrong type is an error, not a silent coercion).
-- Times are milliseconds since the Unix epoch (INTEGER), written by the daemon's clock, so the
-- same values and comparisons hold on both backends and tests can drive time explicitly.
-- PHI: only studies.patient_name and studies.patient_id hold patient-identifying data
-- (see docs/store.md).

CREATE TABLE studies (
    id              INTEGER PRIMARY KEY,
    study_uid       TEXT NOT NULL UNIQUE,
    patient_name    TEXT,
    patient_id      TEXT,
    study_date      TEXT,
    created_at_ms   INTEGER NOT NULL
) STRICT;

CREATE TABLE series (
    id                    INTEGER PRIMARY KEY,
    study_id              INTEGER NOT NULL REFERENCES studies(id),
    series_uid            TEXT NOT NULL UNIQUE,
    modality              TEXT NOT NULL,
    first_received_at_ms  INTEGER NOT NULL,
    last_received_at_ms   INTEGER NOT NULL
) STRICT;
CREATE INDEX series_study_idx ON series(study_id);

CREATE TABLE instances (
    id                 INTEGER PRIMARY KEY,
    series_id          INTEGER NOT NULL REFERENCES series(id),
    sop_instance_uid   TEXT NOT NULL UNIQUE,
    sop_class_uid      TEXT NOT NULL,
    transfer_syntax    TEXT NOT NULL,
    spool_path         TEXT NOT NULL,
    size_bytes         INTEGER NOT NULL CHECK (size_bytes >= 0),
    sha256             TEXT NOT NULL CHECK (length(sha256) = 64),
    received_at_ms     INTEGER NOT NULL,
    calling_ae         TEXT NOT NULL,
    peer_addr          TEXT NOT NULL,
    spool_deleted_at_ms INTEGER
) STRICT;
CREATE INDEX instances_series_idx ON instances(series_id);
CREATE INDEX instances_spooled_idx ON instances(received_at_ms) WHERE spool_deleted_at_ms IS NULL;

CREATE TABLE jobs (
    id                INTEGER PRIMARY KEY,
    kind              TEXT NOT NULL,
    series_id         INTEGER REFERENCES series(id),
    dedup_key         TEXT UNIQUE,
    state             TEXT NOT NULL DEFAULT 'queued'
                      CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'dead')),
    attempts          INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts      INTEGER NOT NULL CHECK (max_attempts >= 1),
    run_after_ms      INTEGER NOT NULL,
    lease_owner       TEXT,
    lease_expires_at_ms INTEGER,
    last_error        TEXT,
    created_at_ms     INTEGER NOT NULL,
    updated_at_ms     INTEGER NOT NULL,
    finished_at_ms    INTEGER,
    CHECK ((state = 'running') = (lease_owner IS NOT NULL AND lease_expires_at_ms IS NOT NULL))
) STRICT;
CREATE INDEX jobs_ready_idx ON jobs(run_after_ms, id) WHERE state = 'queued';
CREATE INDEX jobs_lease_idx ON jobs(lease_expires_at_ms) WHERE state = 'running';

CREATE TABLE results (
    id                INTEGER PRIMARY KEY,
    series_id         INTEGER NOT NULL UNIQUE REFERENCES series(id),
    job_id            INTEGER REFERENCES jobs(id),
    bundle_id         TEXT NOT NULL,
    bundle_version    TEXT NOT NULL,
    status            TEXT NOT NULL CHECK (status IN ('succeeded', 'rejected', 'failed')),
    preprocess_ms     INTEGER NOT NULL,
    inference_ms      INTEGER NOT NULL,
    postprocess_ms    INTEGER NOT NULL,
    created_at_ms     INTEGER NOT NULL,
    updated_at_ms     INTEGER NOT NULL
) STRICT;

CREATE TABLE vertebrae (
    id                  INTEGER PRIMARY KEY,
    result_id           INTEGER NOT NULL REFERENCES results(id) ON DELETE CASCADE,
    label               INTEGER NOT NULL CHECK (label BETWEEN 1 AND 25),
    centroid_x          REAL NOT NULL,
    centroid_y          REAL NOT NULL,
    centroid_z          REAL NOT NULL,
    volume_mm3          REAL NOT NULL,
    bbox_min_x          INTEGER NOT NULL,
    bbox_min_y          INTEGER NOT NULL,
    bbox_min_z          INTEGER NOT NULL,
    bbox_max_x          INTEGER NOT NULL,
    bbox_max_y          INTEGER NOT NULL,
    bbox_max_z          INTEGER NOT NULL,
    mean_hu             REAL NOT NULL,
    anterior_height_ratio REAL,
    middle_height_ratio REAL,
    genant_grade        INTEGER CHECK (genant_grade BETWEEN 0 AND 3),
    confidence          REAL NOT NULL CHECK (confidence BETWEEN 0 AND 1),
    UNIQUE (result_id, label)
) STRICT;

CREATE TABLE lesions (
    id                INTEGER PRIMARY KEY,
    result_id         INTEGER NOT NULL REFERENCES results(id) ON DELETE CASCADE,
    class             TEXT NOT NULL,
    center_x          REAL NOT NULL,
    center_y          REAL NOT NULL,
    center_z          REAL NOT NULL,
    size_mm           REAL NOT NULL,
    score             REAL NOT NULL CHECK (score BETWEEN 0 AND 1),
    vertebra_label    INTEGER CHECK (vertebra_label BETWEEN 1 AND 25)
) STRICT;
CREATE INDEX lesions_result_idx ON lesions(result_id);

CREATE TABLE outputs (
    id                INTEGER PRIMARY KEY,
    result_id         INTEGER NOT NULL REFERENCES results(id) ON DELETE CASCADE,
    kind              TEXT NOT NULL CHECK (kind IN ('seg', 'sr', 'key_image')),
    sop_instance_uid  TEXT NOT NULL UNIQUE,
    spool_path        TEXT NOT NULL,
    created_at_ms     INTEGER NOT NULL
) STRICT;
CREATE INDEX outputs_result_idx ON outputs(result_id);

CREATE TABLE destinations (
    id        INTEGER PRIMARY KEY,
    name      TEXT NOT NULL UNIQUE,
    ae_title  TEXT NOT NULL CHECK (length(ae_title) BETWEEN 1 AND 16),
    host      TEXT NOT NULL,
    port      INTEGER NOT NULL CHECK (port BETWEEN 1 AND 65535),
    tls       INTEGER NOT NULL CHECK (tls IN (0, 1)),
    enabled   INTEGER NOT NULL CHECK (enabled IN (0, 1))
) STRICT;

CREATE TABLE deliveries (
    id                  INTEGER PRIMARY KEY,
    output_id           INTEGER NOT NULL REFERENCES outputs(id) ON DELETE CASCADE,
    destination_id      INTEGER NOT NULL REFERENCES destinations(id),
    state               TEXT NOT NULL DEFAULT 'pending'
                        CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts            INTEGER NOT NULL DEFAULT 0,
    next_attempt_at_ms  INTEGER NOT NULL,
    last_error          TEXT,
    delivered_at_ms     INTEGER,
    UNIQUE (output_id, destination_id)
) STRICT;
CREATE INDEX deliveries_pending_idx ON deliveries(next_attempt_at_ms) WHERE state = 'pending';

CREATE TABLE users (
    id              INTEGER PRIMARY KEY,
    username        TEXT NOT NULL UNIQUE,
    password_hash   TEXT NOT NULL,
    role            TEXT NOT NULL CHECK (role IN ('admin', 'operator', 'viewer')),
    disabled        INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
    created_at_ms   INTEGER NOT NULL
) STRICT;

CREATE TABLE sessions (
    token_hash      TEXT PRIMARY KEY,
    user_id         INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    peer_addr       TEXT NOT NULL,
    created_at_ms   INTEGER NOT NULL,
    expires_at_ms   INTEGER NOT NULL
) STRICT;

CREATE TABLE audit_events (
    id          INTEGER PRIMARY KEY,
    at_ms       INTEGER NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    target      TEXT,
    peer_addr   TEXT,
    outcome     TEXT NOT NULL CHECK (outcome IN ('success', 'failure', 'denied'))
) STRICT;

-- The audit log is evidence: rows are appended, never changed or removed.
CREATE TRIGGER audit_events_no_update
    BEFORE UPDATE ON audit_events
    BEGIN SELECT RAISE(ABORT, 'audit_events is append-only (UPDATE rejected)'); END;
CREATE TRIGGER audit_events_no_delete
    BEFORE DELETE ON audit_events
    BEGIN SELECT RAISE(ABORT, 'audit_events is append-only (DELETE rejected)'); END;
