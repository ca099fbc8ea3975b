-- Steward server schema, version 3: web UI sessions and failed local logins.
--
-- Forward-only: once merged, this file is never edited.
--
-- A session is found by the SHA-256 of its cookie value: the cookie itself (the bearer secret)
-- is never stored, so a copy of the database opens no session. `csrf_token` is the session's
-- synchronizer token, echoed by every form (THREATS W2). A session ends after an idle time
-- (`last_seen_at`) or an absolute time (`created_at`), both checked on every request, or at
-- logout, which deletes the row (W4).
CREATE TABLE ui_sessions (
    id_hash      BLOB    PRIMARY KEY CHECK (length(id_hash) = 32),
    actor        TEXT    NOT NULL,
    csrf_token   TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE INDEX ui_sessions_by_created ON ui_sessions (created_at);

-- Failed local admin logins, for the rate limit and lockout (W5): counted per source address
-- and across all sources over a sliding window, pruned once older than the window.
CREATE TABLE ui_login_failures (
    id     INTEGER PRIMARY KEY,
    source TEXT    NOT NULL,
    at     INTEGER NOT NULL
) STRICT;
CREATE INDEX ui_login_failures_by_source ON ui_login_failures (source, at);
CREATE INDEX ui_login_failures_by_time ON ui_login_failures (at);
