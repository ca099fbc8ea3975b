-- Steward server schema, version 2: keys waiting for an admin.
--
-- Forward-only: once merged, this file is never edited.
--
-- A host that asks to enroll under a hostname that already has a key, with a new key and
-- without a token that may re-enroll (THREATS E3), is not given the hostname: its key waits
-- here until an admin approves it (the old key is revoked then) or revokes the node. The node's
-- active key keeps working meanwhile. At most one key waits per node; a newer request replaces
-- it.
CREATE TABLE pending_keys (
    node_id        INTEGER PRIMARY KEY REFERENCES nodes (id),
    key_id         TEXT    NOT NULL UNIQUE,
    signing_key    TEXT    NOT NULL,
    encryption_key TEXT    NOT NULL,
    machine_id     TEXT,
    -- The bootstrap token the request carried, if any (its id only).
    token_id       TEXT,
    requested_at   INTEGER NOT NULL
) STRICT;
