-- Steward server schema, version 5: notices (issue 11).
--
-- Forward-only: once merged, this file is never edited.
--
-- Agents report two more resource outcomes and a notice, none of which is a failure:
-- - `kept`: pre-existing state left as found on purpose (the site does not enforce it);
-- - `deferred`: a due change waiting for a condition (a restart waiting for its user to go
--   idle);
-- - `drift`: divergence observed and reported only (privileged groups beyond the tier), on an
--   event of any status.
--
-- `resource_events.status` lists its values in a CHECK, which SQLite cannot alter: the table is
-- rebuilt with the same columns, constraints and index, plus `drift`, and every row copied
-- (ids kept, so `seq` order and the implicit rowid of each index stay as they were). Nothing
-- references `resource_events`, so dropping the old table needs no foreign-key juggling.
-- The runs get their three counts; rows stored before this migration count zero of each,
-- which is what their agents reported.
CREATE TABLE resource_events_v5 (
    id             INTEGER PRIMARY KEY,
    run_id         INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    seq            INTEGER NOT NULL CHECK (seq >= 0),
    node_id        INTEGER NOT NULL REFERENCES nodes (id),
    run_started_at INTEGER NOT NULL,
    resource       TEXT    NOT NULL,
    resource_type  TEXT    NOT NULL,
    status         TEXT    NOT NULL
        CHECK (status IN ('unchanged', 'changed', 'would_change', 'failed', 'skipped',
                          'kept', 'deferred')),
    message        TEXT,
    diff           TEXT,
    duration_ms    INTEGER NOT NULL CHECK (duration_ms >= 0),
    corrective     INTEGER NOT NULL CHECK (corrective IN (0, 1)),
    -- The drift notice of the event, if any (never sensitive).
    drift          TEXT,
    UNIQUE (run_id, seq)
) STRICT;

INSERT INTO resource_events_v5 (id, run_id, seq, node_id, run_started_at, resource,
                                resource_type, status, message, diff, duration_ms, corrective)
SELECT id, run_id, seq, node_id, run_started_at, resource, resource_type, status, message, diff,
       duration_ms, corrective
FROM resource_events;

DROP TABLE resource_events;
ALTER TABLE resource_events_v5 RENAME TO resource_events;
CREATE INDEX resource_events_by_status_time ON resource_events (status, run_started_at);

ALTER TABLE runs ADD COLUMN total_kept INTEGER NOT NULL DEFAULT 0 CHECK (total_kept >= 0);
ALTER TABLE runs ADD COLUMN total_deferred INTEGER NOT NULL DEFAULT 0
    CHECK (total_deferred >= 0);
ALTER TABLE runs ADD COLUMN total_drift INTEGER NOT NULL DEFAULT 0 CHECK (total_drift >= 0);
