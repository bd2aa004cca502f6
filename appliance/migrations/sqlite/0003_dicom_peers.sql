-- Peers allowed to send images, added in the web console (appliance/src/store/peers.rs). They
-- join the `[[dicom.peers]]` of the configuration file; the SCP re-reads them every few
-- seconds. Times in ms since the Unix epoch as in 0001.
CREATE TABLE dicom_peers (
    id              INTEGER PRIMARY KEY,
    ae_title        TEXT NOT NULL UNIQUE CHECK (length(ae_title) BETWEEN 1 AND 16),
    -- Comma-separated addresses or CIDR blocks; empty: any address.
    addresses       TEXT NOT NULL,
    -- Seconds without new instances before a series from this peer is complete; NULL: default.
    stable_after_s  REAL CHECK (stable_after_s IS NULL OR stable_after_s > 0),
    enabled         INTEGER NOT NULL CHECK (enabled IN (0, 1)),
    updated_at_ms   INTEGER NOT NULL,
    updated_by      TEXT NOT NULL
) STRICT;
