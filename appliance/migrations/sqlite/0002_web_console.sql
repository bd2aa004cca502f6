-- The admin web console (appliance/src/web): forced password change and lockout per user,
-- persisted settings, the model bundle history. Times in ms since the Unix epoch as in 0001.

ALTER TABLE users ADD COLUMN must_change_password INTEGER NOT NULL DEFAULT 0
    CHECK (must_change_password IN (0, 1));
ALTER TABLE users ADD COLUMN failed_logins INTEGER NOT NULL DEFAULT 0 CHECK (failed_logins >= 0);
ALTER TABLE users ADD COLUMN locked_until_ms INTEGER;

-- Operator-edited settings, overlaid on the configuration file at the next start.
CREATE TABLE settings (
    key             TEXT PRIMARY KEY,
    value           TEXT NOT NULL,
    updated_at_ms   INTEGER NOT NULL,
    updated_by      TEXT NOT NULL
) STRICT;

-- Model bundles installed through the console; at most one is active (the one the engine
-- loads at the next start). Rows are kept so an admin can roll back.
CREATE TABLE model_bundles (
    id               INTEGER PRIMARY KEY,
    dir              TEXT NOT NULL UNIQUE,
    name             TEXT NOT NULL,
    version          TEXT NOT NULL,
    manifest_sha256  TEXT NOT NULL CHECK (length(manifest_sha256) = 64),
    key_name         TEXT NOT NULL,
    demo             INTEGER NOT NULL CHECK (demo IN (0, 1)),
    installed_at_ms  INTEGER NOT NULL,
    installed_by     TEXT NOT NULL,
    active           INTEGER NOT NULL DEFAULT 0 CHECK (active IN (0, 1))
) STRICT;
CREATE UNIQUE INDEX model_bundles_one_active ON model_bundles(active) WHERE active = 1;
