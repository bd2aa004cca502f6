-- Initial schema of the appliance store (PostgreSQL).
-- Times are milliseconds since the Unix epoch (BIGINT), written by the daemon's clock, so the
-- same values and comparisons hold on both backends and tests can drive time explicitly.
-- PHI: only studies.patient_name and studies.patient_id hold patient-identifying data
-- (see docs/store.md).

CREATE TABLE studies (
    id              BIGSERIAL PRIMARY KEY,
    study_uid       TEXT NOT NULL UNIQUE,
    patient_name    TEXT,
    patient_id      TEXT,
    study_date      TEXT,
    created_at_ms   BIGINT NOT NULL
);

CREATE TABLE series (
    id                    BIGSERIAL PRIMARY KEY,
    study_id              BIGINT NOT NULL REFERENCES studies(id),
    series_uid            TEXT NOT NULL UNIQUE,
    modality              TEXT NOT NULL,
    first_received_at_ms  BIGINT NOT NULL,
    last_received_at_ms   BIGINT NOT NULL
);
CREATE INDEX series_study_idx ON series(study_id);

CREATE TABLE instances (
    id                 BIGSERIAL PRIMARY KEY,
    series_id          BIGINT NOT NULL REFERENCES series(id),
    sop_instance_uid   TEXT NOT NULL UNIQUE,
    sop_class_uid      TEXT NOT NULL,
    transfer_syntax    TEXT NOT NULL,
    spool_path         TEXT NOT NULL,
    size_bytes         BIGINT NOT NULL CHECK (size_bytes >= 0),
    sha256             TEXT NOT NULL CHECK (length(sha256) = 64),
    received_at_ms     BIGINT NOT NULL,
    calling_ae         TEXT NOT NULL,
    peer_addr          TEXT NOT NULL,
    spool_deleted_at_ms BIGINT
);
CREATE INDEX instances_series_idx ON instances(series_id);
CREATE INDEX instances_spooled_idx ON instances(received_at_ms) WHERE spool_deleted_at_ms IS NULL;

CREATE TABLE jobs (
    id                BIGSERIAL PRIMARY KEY,
    kind              TEXT NOT NULL,
    series_id         BIGINT REFERENCES series(id),
    dedup_key         TEXT UNIQUE,
    state             TEXT NOT NULL DEFAULT 'queued'
                      CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'dead')),
    attempts          INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts      INTEGER NOT NULL CHECK (max_attempts >= 1),
    run_after_ms      BIGINT NOT NULL,
    lease_owner       TEXT,
    lease_expires_at_ms BIGINT,
    last_error        TEXT,
    created_at_ms     BIGINT NOT NULL,
    updated_at_ms     BIGINT NOT NULL,
    finished_at_ms    BIGINT,
    CHECK ((state = 'running') = (lease_owner IS NOT NULL AND lease_expires_at_ms IS NOT NULL))
);
CREATE INDEX jobs_ready_idx ON jobs(run_after_ms, id) WHERE state = 'queued';
CREATE INDEX jobs_lease_idx ON jobs(lease_expires_at_ms) WHERE state = 'running';

CREATE TABLE results (
    id                BIGSERIAL PRIMARY KEY,
    series_id         BIGINT NOT NULL UNIQUE REFERENCES series(id),
    job_id            BIGINT REFERENCES jobs(id),
    bundle_id         TEXT NOT NULL,
    bundle_version    TEXT NOT NULL,
    status            TEXT NOT NULL CHECK (status IN ('succeeded', 'rejected', 'failed')),
    preprocess_ms     BIGINT NOT NULL,
    inference_ms      BIGINT NOT NULL,
    postprocess_ms    BIGINT NOT NULL,
    created_at_ms     BIGINT NOT NULL,
    updated_at_ms     BIGINT NOT NULL
);

CREATE TABLE vertebrae (
    id                  BIGSERIAL PRIMARY KEY,
    result_id           BIGINT NOT NULL REFERENCES results(id) ON DELETE CASCADE,
    label               INTEGER NOT NULL CHECK (label BETWEEN 1 AND 25),
    centroid_x          DOUBLE PRECISION NOT NULL,
    centroid_y          DOUBLE PRECISION NOT NULL,
    centroid_z          DOUBLE PRECISION NOT NULL,
    volume_mm3          DOUBLE PRECISION NOT NULL,
    bbox_min_x          INTEGER NOT NULL,
    bbox_min_y          INTEGER NOT NULL,
    bbox_min_z          INTEGER NOT NULL,
    bbox_max_x          INTEGER NOT NULL,
    bbox_max_y          INTEGER NOT NULL,
    bbox_max_z          INTEGER NOT NULL,
    mean_hu             DOUBLE PRECISION NOT NULL,
    anterior_height_ratio DOUBLE PRECISION,
    middle_height_ratio DOUBLE PRECISION,
    genant_grade        INTEGER CHECK (genant_grade BETWEEN 0 AND 3),
    confidence          DOUBLE PRECISION NOT NULL CHECK (confidence BETWEEN 0 AND 1),
    UNIQUE (result_id, label)
);

CREATE TABLE lesions (
    id                BIGSERIAL PRIMARY KEY,
    result_id         BIGINT NOT NULL REFERENCES results(id) ON DELETE CASCADE,
    class             TEXT NOT NULL,
    center_x          DOUBLE PRECISION NOT NULL,
    center_y          DOUBLE PRECISION NOT NULL,
    center_z          DOUBLE PRECISION NOT NULL,
    size_mm           DOUBLE PRECISION NOT NULL,
    score             DOUBLE PRECISION NOT NULL CHECK (score BETWEEN 0 AND 1),
    vertebra_label    INTEGER CHECK (vertebra_label BETWEEN 1 AND 25)
);
CREATE INDEX lesions_result_idx ON lesions(result_id);

CREATE TABLE outputs (
    id                BIGSERIAL PRIMARY KEY,
    result_id         BIGINT NOT NULL REFERENCES results(id) ON DELETE CASCADE,
    kind              TEXT NOT NULL CHECK (kind IN ('seg', 'sr', 'key_image')),
    sop_instance_uid  TEXT NOT NULL UNIQUE,
    spool_path        TEXT NOT NULL,
    created_at_ms     BIGINT NOT NULL
);
CREATE INDEX outputs_result_idx ON outputs(result_id);

CREATE TABLE destinations (
    id        BIGSERIAL PRIMARY KEY,
    name      TEXT NOT NULL UNIQUE,
    ae_title  TEXT NOT NULL CHECK (length(ae_title) BETWEEN 1 AND 16),
    host      TEXT NOT NULL,
    port      INTEGER NOT NULL CHECK (port BETWEEN 1 AND 65535),
    tls       BOOLEAN NOT NULL,
    enabled   BOOLEAN NOT NULL
);

CREATE TABLE deliveries (
    id                  BIGSERIAL PRIMARY KEY,
    output_id           BIGINT NOT NULL REFERENCES outputs(id) ON DELETE CASCADE,
    destination_id      BIGINT NOT NULL REFERENCES destinations(id),
    state               TEXT NOT NULL DEFAULT 'pending'
                        CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts            INTEGER NOT NULL DEFAULT 0,
    next_attempt_at_ms  BIGINT NOT NULL,
    last_error          TEXT,
    delivered_at_ms     BIGINT,
    UNIQUE (output_id, destination_id)
);
CREATE INDEX deliveries_pending_idx ON deliveries(next_attempt_at_ms) WHERE state = 'pending';

CREATE TABLE users (
    id              BIGSERIAL PRIMARY KEY,
    username        TEXT NOT NULL UNIQUE,
    password_hash   TEXT NOT NULL,
    role            TEXT NOT NULL CHECK (role IN ('admin', 'operator', 'viewer')),
    disabled        BOOLEAN NOT NULL DEFAULT FALSE,
    created_at_ms   BIGINT NOT NULL
);

CREATE TABLE sessions (
    token_hash      TEXT PRIMARY KEY,
    user_id         BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    peer_addr       TEXT NOT NULL,
    created_at_ms   BIGINT NOT NULL,
    expires_at_ms   BIGINT NOT NULL
);

CREATE TABLE audit_events (
    id          BIGSERIAL PRIMARY KEY,
    at_ms       BIGINT NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    target      TEXT,
    peer_addr   TEXT,
    outcome     TEXT NOT NULL CHECK (outcome IN ('success', 'failure', 'denied'))
);

-- The audit log is evidence: rows are appended, never changed or removed, whoever connects.
CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only (% rejected)', TG_OP;
END;
$$;
CREATE TRIGGER audit_events_no_update_delete
    BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
CREATE TRIGGER audit_events_no_truncate
    BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only();
