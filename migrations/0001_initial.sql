-- Steward server schema, version 1.
--
-- Forward-only: once merged, this file is never edited; later changes are new migrations.
--
-- Conventions:
-- - every table is STRICT (SQLite checks column types);
-- - timestamps are unix seconds (INTEGER), chosen by the server except where a column says
--   it is the agent's clock;
-- - JSON documents (facts, redacted catalogs, details) are TEXT checked with json_valid;
-- - booleans are INTEGER 0 or 1;
-- - tables refer to a node by its integer `nodes.id`; the node's name (its hostname) is unique,
--   so a rebuilt host that re-enrolls keeps its row and its history.
--
-- No secret is ever stored: catalogs are the redacted copies the caller hands over, bootstrap
-- tokens are kept as the SHA-256 of their high-entropy secret.

-- Nodes: one row per hostname.
CREATE TABLE nodes (
    id                   INTEGER PRIMARY KEY,
    name                 TEXT    NOT NULL UNIQUE,
    status               TEXT    NOT NULL
        CHECK (status IN ('pending', 'approved', 'revoked', 'quarantined')),
    class                TEXT,
    created_at           INTEGER NOT NULL,
    approved_at          INTEGER,
    last_seen_at         INTEGER,
    -- Last facts the agent sent (JSON of steward_protocol::Facts) and their machine id.
    facts                TEXT    CHECK (facts IS NULL OR json_valid(facts)),
    machine_id           TEXT,
    -- The catalog currently served: written together with its `catalogs` row.
    catalog_serial       INTEGER CHECK (catalog_serial IS NULL OR catalog_serial >= 0),
    catalog_digest       TEXT,
    run_now_requested_at INTEGER,
    CHECK ((catalog_serial IS NULL) = (catalog_digest IS NULL))
) STRICT;

-- Agent keys. Re-enrollment revokes the old row and adds a new one: the key history stays.
CREATE TABLE node_keys (
    id             INTEGER PRIMARY KEY,
    node_id        INTEGER NOT NULL REFERENCES nodes (id),
    -- `sha256:<hex>` of the ed25519 public key; unique forever, so a revoked key never returns.
    key_id         TEXT    NOT NULL UNIQUE,
    -- Public keys, base64: ed25519 for request signatures, X25519 for sealed secrets.
    signing_key    TEXT    NOT NULL,
    encryption_key TEXT    NOT NULL,
    machine_id     TEXT,
    created_at     INTEGER NOT NULL,
    revoked_at     INTEGER,
    revoke_reason  TEXT,
    CHECK (revoked_at IS NOT NULL OR revoke_reason IS NULL)
) STRICT;
-- At most one active key per node (THREATS E3: a second key needs the first one revoked).
CREATE UNIQUE INDEX node_keys_one_active_per_node ON node_keys (node_id) WHERE revoked_at IS NULL;
CREATE INDEX node_keys_by_node ON node_keys (node_id, created_at);

-- Bootstrap tokens `<token_id>.<secret>`; only the SHA-256 of the secret is kept.
CREATE TABLE bootstrap_tokens (
    token_id      TEXT    PRIMARY KEY,
    secret_hash   BLOB    NOT NULL CHECK (length(secret_hash) = 32),
    description   TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    created_by    TEXT    NOT NULL,
    expires_at    INTEGER NOT NULL,
    uses_allowed  INTEGER NOT NULL CHECK (uses_allowed >= 1),
    uses_done     INTEGER NOT NULL DEFAULT 0
        CHECK (uses_done >= 0 AND uses_done <= uses_allowed),
    hostname_glob TEXT,
    class         TEXT,
    auto_approve  INTEGER NOT NULL CHECK (auto_approve IN (0, 1)),
    may_reenroll  INTEGER NOT NULL CHECK (may_reenroll IN (0, 1)),
    revoked_at    INTEGER
) STRICT;

-- Redacted copies of every catalog served, for diffs between serials. Never sealed content.
CREATE TABLE catalogs (
    id            INTEGER PRIMARY KEY,
    node_id       INTEGER NOT NULL REFERENCES nodes (id),
    serial        INTEGER NOT NULL CHECK (serial >= 0),
    digest        TEXT    NOT NULL,
    compiled_at   INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    site_hash     TEXT    NOT NULL,
    redacted_json TEXT    NOT NULL CHECK (json_valid(redacted_json)),
    UNIQUE (node_id, serial)
) STRICT;

-- Compile failures. A repeated identical failure bumps `occurrences` and `last_at` instead of
-- adding a row; the row without `resolved_at` is the node's current failure.
CREATE TABLE compile_failures (
    id          INTEGER PRIMARY KEY,
    node_id     INTEGER NOT NULL REFERENCES nodes (id),
    first_at    INTEGER NOT NULL,
    last_at     INTEGER NOT NULL,
    occurrences INTEGER NOT NULL DEFAULT 1 CHECK (occurrences >= 1),
    message     TEXT    NOT NULL,
    site_hash   TEXT,
    resolved_at INTEGER
) STRICT;
CREATE UNIQUE INDEX compile_failures_one_current_per_node
    ON compile_failures (node_id) WHERE resolved_at IS NULL;
CREATE INDEX compile_failures_by_node ON compile_failures (node_id, first_at);
CREATE INDEX compile_failures_by_time ON compile_failures (last_at);

-- Run reports. `uuid` is the agent's run id: inserting it twice is a no-op.
CREATE TABLE runs (
    id                 INTEGER PRIMARY KEY,
    uuid               TEXT    NOT NULL UNIQUE CHECK (length(uuid) = 36),
    node_id            INTEGER NOT NULL REFERENCES nodes (id),
    catalog_serial     INTEGER CHECK (catalog_serial IS NULL OR catalog_serial >= 0),
    -- Agent's clock.
    started_at         INTEGER NOT NULL,
    finished_at        INTEGER NOT NULL,
    duration_ms        INTEGER NOT NULL CHECK (duration_ms >= 0),
    status             TEXT    NOT NULL
        CHECK (status IN ('unchanged', 'changed', 'noop', 'failed', 'error')),
    noop               INTEGER NOT NULL CHECK (noop IN (0, 1)),
    message            TEXT,
    agent_version      TEXT    NOT NULL,
    total_resources    INTEGER NOT NULL CHECK (total_resources >= 0),
    total_unchanged    INTEGER NOT NULL CHECK (total_unchanged >= 0),
    total_changed      INTEGER NOT NULL CHECK (total_changed >= 0),
    total_would_change INTEGER NOT NULL CHECK (total_would_change >= 0),
    total_failed       INTEGER NOT NULL CHECK (total_failed >= 0),
    total_skipped      INTEGER NOT NULL CHECK (total_skipped >= 0),
    -- Server's clock; retention prunes by it, so a skewed agent clock cannot keep a run forever.
    received_at        INTEGER NOT NULL
) STRICT;
-- The rowid (`id`) is the implicit last column of each index: keyset pages on (started_at, id).
CREATE INDEX runs_by_node_time ON runs (node_id, started_at);
CREATE INDEX runs_by_status_time ON runs (status, started_at);
CREATE INDEX runs_by_time ON runs (started_at);
CREATE INDEX runs_by_received ON runs (received_at);

-- Per-resource events of a run, in apply order (`seq`). `node_id` and `run_started_at` are
-- copied from the run so that "last result of X on node N" and "failures across the fleet"
-- are index range scans.
CREATE TABLE resource_events (
    id             INTEGER PRIMARY KEY,
    run_id         INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    seq            INTEGER NOT NULL CHECK (seq >= 0),
    node_id        INTEGER NOT NULL REFERENCES nodes (id),
    run_started_at INTEGER NOT NULL,
    resource       TEXT    NOT NULL,
    resource_type  TEXT    NOT NULL,
    status         TEXT    NOT NULL
        CHECK (status IN ('unchanged', 'changed', 'would_change', 'failed', 'skipped')),
    message        TEXT,
    diff           TEXT,
    duration_ms    INTEGER NOT NULL CHECK (duration_ms >= 0),
    corrective     INTEGER NOT NULL CHECK (corrective IN (0, 1)),
    UNIQUE (run_id, seq)
) STRICT;
CREATE INDEX resource_events_by_node_resource
    ON resource_events (node_id, resource, run_started_at);
CREATE INDEX resource_events_by_status_time ON resource_events (status, run_started_at);

-- Sticky per-user service ports, per node (catalogs::State::ports).
CREATE TABLE port_allocations (
    node_id INTEGER NOT NULL REFERENCES nodes (id),
    os_user TEXT    NOT NULL,
    port    INTEGER NOT NULL CHECK (port BETWEEN 1 AND 65535),
    PRIMARY KEY (node_id, os_user),
    UNIQUE (node_id, port)
) STRICT, WITHOUT ROWID;

-- Users a node has managed, for offboarding (catalogs::State::managed_users).
CREATE TABLE managed_users (
    node_id  INTEGER NOT NULL REFERENCES nodes (id),
    os_user  TEXT    NOT NULL,
    state    TEXT    NOT NULL CHECK (state IN ('present', 'offboarded', 'purged')),
    -- JSON array of service unit names.
    services TEXT    NOT NULL CHECK (json_valid(services) AND json_type(services) = 'array'),
    PRIMARY KEY (node_id, os_user)
) STRICT, WITHOUT ROWID;

-- Nonces of signed agent requests, for replay protection; pruned once older than the window.
CREATE TABLE request_nonces (
    key_id  TEXT    NOT NULL,
    nonce   TEXT    NOT NULL CHECK (length(nonce) BETWEEN 1 AND 128),
    seen_at INTEGER NOT NULL,
    PRIMARY KEY (key_id, nonce)
) STRICT, WITHOUT ROWID;
CREATE INDEX request_nonces_by_time ON request_nonces (seen_at);

-- Admin actions and security events. Append-only.
CREATE TABLE audit_log (
    id     INTEGER PRIMARY KEY,
    at     INTEGER NOT NULL,
    actor  TEXT    NOT NULL,
    action TEXT    NOT NULL,
    target TEXT,
    detail TEXT    CHECK (detail IS NULL OR json_valid(detail))
) STRICT;
CREATE INDEX audit_log_by_target ON audit_log (target, id);
CREATE TRIGGER audit_log_is_append_only BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
