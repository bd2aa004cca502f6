-- The admin web console (appliance/src/web): forced password change and lockout per user,
-- persisted settings, the model bundle history. Times in ms since the Unix epoch as in 0001.

ALTER TABLE users ADD COLUMN must_change_password BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE users ADD COLUMN failed_logins INTEGER NOT NULL DEFAULT 0 CHECK (failed_logins >= 0);
ALTER TABLE users ADD COLUMN locked_until_ms BIGINT;

-- Operator-edited settings, overlaid on the configuration file at the next start.
CREATE TABLE settings (
    key             TEXT PRIMARY KEY,
    value           TEXT NOT NULL,
    updated_at_ms   BIGINT NOT NULL,
    updated_by      TEXT NOT NULL
);

-- Model bundles installed through the console; at most one is active (the one the engine
-- loads at the next start). Rows are kept so an admin can roll back.
CREATE TABLE model_bundles (
    id               BIGSERIAL PRIMARY KEY,
    dir              TEXT NOT NULL UNIQUE,
    name             TEXT NOT NULL,
    version          TEXT NOT NULL,
    manifest_sha256  TEXT NOT NULL CHECK (length(manifest_sha256) = 64),
    key_name         TEXT NOT NULL,
    demo             BOOLEAN NOT NULL,
    installed_at_ms  BIGINT NOT NULL,
    installed_by     TEXT NOT NULL,
    active           BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE UNIQUE INDEX model_bundles_one_active ON model_bundles(active) WHERE active;
