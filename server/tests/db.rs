//! The SQLite store (`steward_server::db`) against real database files in temp dirs: every query
//! function, idempotent reports, atomic token use, replay refusal, key history, state
//! round-trips, concurrent writers and readers (THREATS R19), backups (R20, R7), retention,
//! and no deleted bytes left in the file (K2).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::json;
use sqlx::{Connection, SqliteConnection};
use steward_catalogs::model::{ManagedUser, State, UserState};
use steward_protocol::{
    EnrollmentStatus, Facts, KeyId, NodeId, ResourceEvent, ResourceId, ResourceStatus, RunId,
    RunReport, RunStatus, Serial, Timestamp, Totals,
};
use steward_server::db::audit::{self, AuditFilter, NewAuditEntry};
use steward_server::db::catalogs::{self, CatalogRecord};
use steward_server::db::compile_failures;
use steward_server::db::keys::{self, NewNodeKey};
use steward_server::db::nodes::{self, NewNode};
use steward_server::db::nonces::NonceRecord;
use steward_server::db::runs::{self, InsertOutcome, Page, RunCursor, RunFilter};
use steward_server::db::tokens::{self, Consumption, NewToken, SecretHash, TokenRefusal};
use steward_server::db::{nonces, state, Db, DbError};

const T0: i64 = 1_750_000_000;

// ---------------------------------------------------------------------------------------------
// Helpers

async fn open_temp() -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&dir.path().join("steward.db")).await.unwrap();
    (dir, db)
}

fn node_id(name: &str) -> NodeId {
    NodeId(name.to_owned())
}

async fn pending_node(db: &Db, name: &str) -> NodeId {
    let node = node_id(name);
    let new = NewNode {
        name: node.clone(),
        class: Some("workstation".into()),
        machine_id: Some(format!("machine-{name}")),
    };
    nodes::insert_pending(db, &new, Timestamp(T0))
        .await
        .unwrap();
    node
}

async fn approved_node(db: &Db, name: &str) -> NodeId {
    let node = pending_node(db, name).await;
    nodes::set_status(db, &node, EnrollmentStatus::Approved, Timestamp(T0 + 1))
        .await
        .unwrap();
    node
}

fn new_key(tag: &str) -> NewNodeKey {
    NewNodeKey {
        key_id: KeyId::of_public_key_bytes(tag.as_bytes()),
        signing_key: format!("signing-{tag}"),
        encryption_key: format!("encryption-{tag}"),
        machine_id: Some(format!("machine-{tag}")),
    }
}

/// A distinct, valid run id per `n`.
fn run_id(n: u64) -> RunId {
    let mut bytes = [0x5a; 16];
    bytes[9..16].copy_from_slice(&n.to_be_bytes()[1..]);
    RunId::from_random_bytes(bytes)
}

fn event(index: usize) -> ResourceEvent {
    let status = match index % 5 {
        0 => ResourceStatus::Changed,
        1 => ResourceStatus::Unchanged,
        2 => ResourceStatus::Failed,
        3 => ResourceStatus::Skipped,
        _ => ResourceStatus::WouldChange,
    };
    ResourceEvent {
        resource: ResourceId::new("file", &format!("/etc/steward/{index}")),
        status,
        message: (status == ResourceStatus::Failed).then(|| format!("cannot write {index}")),
        diff: (status == ResourceStatus::Changed).then(|| format!("-old {index}\n+new {index}")),
        duration_ms: index as u64,
        corrective: index % 2 == 0,
        drift: None,
    }
}

fn report(node: &NodeId, run: u64, started_at: i64, events: usize) -> RunReport {
    let events: Vec<ResourceEvent> = (0..events).map(event).collect();
    let totals = Totals::of(&events);
    let status = if totals.failed > 0 {
        RunStatus::Failed
    } else if totals.changed > 0 {
        RunStatus::Changed
    } else {
        RunStatus::Unchanged
    };
    RunReport {
        run_id: run_id(run),
        node: node.clone(),
        catalog_serial: Some(Serial(1_750_000_000_000)),
        started_at: Timestamp(started_at),
        finished_at: Timestamp(started_at + 7),
        duration_ms: 7_000,
        noop: false,
        status,
        message: None,
        agent_version: "0.1.0".into(),
        facts: Facts::default(),
        events,
        totals,
    }
}

fn new_token(token_id: &str, secret: &str, expires_at: i64, uses: u32) -> NewToken {
    NewToken {
        token_id: token_id.into(),
        secret_hash: SecretHash::of_secret(secret),
        description: "template clones".into(),
        created_by: "admin".into(),
        expires_at: Timestamp(expires_at),
        uses_allowed: uses,
        hostname_glob: Some("ws-*".into()),
        class: Some("workstation".into()),
        auto_approve: true,
        may_reenroll: false,
    }
}

fn catalog(node: &NodeId, serial: u64) -> CatalogRecord {
    CatalogRecord {
        node: node.clone(),
        serial: Serial(serial),
        digest: format!("sha256:{serial:064x}"),
        compiled_at: Timestamp(T0),
        expires_at: Timestamp(T0 + 86_400),
        site_hash: "ab".repeat(32),
        redacted_json: json!({ "serial": serial, "content": "<redacted>" }).to_string(),
    }
}

async fn count(db: &Db, table: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
        .fetch_one(db.pool())
        .await
        .unwrap()
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Whether `needle` occurs in the database file or its WAL.
fn database_files_contain(path: &Path, needle: &str) -> bool {
    [path.to_owned(), with_suffix(path, "-wal")]
        .iter()
        .any(|file| {
            std::fs::read(file).is_ok_and(|bytes| {
                bytes
                    .windows(needle.len())
                    .any(|window| window == needle.as_bytes())
            })
        })
}

fn migration_count() -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations");
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|entry| {
            entry
                .as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|ext| ext == "sql")
        })
        .count()
}

// ---------------------------------------------------------------------------------------------
// Opening, pragmas, migrations, integrity

#[tokio::test]
async fn migrations_apply_to_an_empty_file_and_reopening_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("steward.db");
    std::fs::write(&path, b"").unwrap();

    let db = Db::open(&path).await.unwrap();
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(applied as usize, migration_count());
    pending_node(&db, "ws-01").await;
    db.close().await;

    for _ in 0..2 {
        let db = Db::open(&path).await.unwrap();
        let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert_eq!(applied as usize, migration_count());
        assert!(nodes::get_by_name(&db, &node_id("ws-01"))
            .await
            .unwrap()
            .is_some());
        db.close().await;
    }
}

#[tokio::test]
async fn opening_a_missing_file_creates_it_private() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new.db");
    let db = Db::open(&path).await.unwrap();
    pending_node(&db, "ws-01").await;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for file in [
            path.clone(),
            with_suffix(&path, "-wal"),
            with_suffix(&path, "-shm"),
        ] {
            let mode = std::fs::metadata(&file).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "{} has mode {mode:o}", file.display());
        }
    }
    db.close().await;
}

#[tokio::test]
async fn connections_use_wal_full_sync_secure_delete_foreign_keys_and_busy_timeout() {
    let (_dir, db) = open_temp().await;
    // Hold several connections at once so that more than one pool connection is checked.
    let mut connections = Vec::new();
    for _ in 0..4 {
        connections.push(db.pool().acquire().await.unwrap());
    }
    for connection in &mut connections {
        let journal_mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut **connection)
            .await
            .unwrap();
        assert_eq!(journal_mode, "wal");
        for (pragma, expected) in [
            ("synchronous", 2), // FULL (THREATS R6)
            ("secure_delete", 1),
            ("foreign_keys", 1),
            ("busy_timeout", 5_000),
        ] {
            let value: i64 = sqlx::query_scalar(&format!("PRAGMA {pragma}"))
                .fetch_one(&mut **connection)
                .await
                .unwrap();
            assert_eq!(value, expected, "PRAGMA {pragma}");
        }
    }
}

#[tokio::test]
async fn bookkeeping_connections_skip_the_fsync_and_durable_ones_do_not() {
    let (_dir, db) = open_temp().await;
    let mut relaxed = db.relaxed().acquire().await.unwrap();
    for (pragma, expected) in [
        ("synchronous", 1), // NORMAL: nonces, last-seen, facts
        ("secure_delete", 1),
        ("foreign_keys", 1),
        ("busy_timeout", 5_000),
    ] {
        let value: i64 = sqlx::query_scalar(&format!("PRAGMA {pragma}"))
            .fetch_one(&mut *relaxed)
            .await
            .unwrap();
        assert_eq!(value, expected, "relaxed PRAGMA {pragma}");
    }
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut *relaxed)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    drop(relaxed);
    // What one pool writes the other reads: they are one database.
    let key = KeyId(format!("sha256:{}", "ab".repeat(32)));
    let now = Timestamp(1_800_000_000);
    let record = NonceRecord {
        key_id: key,
        nonce: "00ff".into(),
        seen_at: now,
    };
    nonces::record_batch(db.relaxed(), std::slice::from_ref(&record), Timestamp(0))
        .await
        .unwrap();
    assert_eq!(nonces::load_since(&db, now).await.unwrap(), vec![record]);
}

#[tokio::test]
async fn open_refuses_a_database_that_fails_its_integrity_check() {
    let (dir, db) = open_temp().await;
    let path = db.path().to_owned();
    db.close().await;
    {
        // An index whose definition no longer matches its entries.
        let options = sqlx::sqlite::SqliteConnectOptions::new().filename(&path);
        let mut connection = SqliteConnection::connect_with(&options).await.unwrap();
        sqlx::raw_sql(
            "CREATE TABLE junk (a INTEGER, b INTEGER); \
             CREATE INDEX junk_a ON junk (a); \
             INSERT INTO junk VALUES (1, 2), (3, 4); \
             PRAGMA writable_schema = ON; \
             UPDATE sqlite_schema SET sql = 'CREATE INDEX junk_a ON junk (b)' \
             WHERE name = 'junk_a'; \
             PRAGMA writable_schema = OFF;",
        )
        .execute(&mut connection)
        .await
        .unwrap();
        connection.close().await.unwrap();
    }
    let error = Db::open(&path).await.unwrap_err();
    assert!(matches!(error, DbError::Integrity { .. }), "{error:?}");
    assert!(
        error.to_string().contains("restore it from a backup"),
        "{error}"
    );

    let garbage = dir.path().join("garbage.db");
    std::fs::write(&garbage, vec![0x42; 8192]).unwrap();
    assert!(Db::open(&garbage).await.is_err());
}

#[tokio::test]
async fn open_refuses_a_database_migrated_by_a_newer_server() {
    let (_dir, db) = open_temp().await;
    sqlx::query(
        "INSERT INTO _sqlx_migrations \
         (version, description, installed_on, success, checksum, execution_time) \
         VALUES (99999999, 'from the future', 0, 1, x'00', 0)",
    )
    .execute(db.pool())
    .await
    .unwrap();
    let path = db.path().to_owned();
    db.close().await;
    let error = Db::open(&path).await.unwrap_err();
    assert!(matches!(error, DbError::Migrate { .. }), "{error:?}");
}

// ---------------------------------------------------------------------------------------------
// Nodes

#[tokio::test]
async fn nodes_insert_get_list_and_one_row_per_hostname() {
    let (_dir, db) = open_temp().await;
    let b = pending_node(&db, "ws-b").await;
    let a = approved_node(&db, "ws-a").await;

    let node = nodes::get_by_name(&db, &b).await.unwrap().unwrap();
    assert_eq!(node.name, b);
    assert_eq!(node.status, EnrollmentStatus::Pending);
    assert_eq!(node.class.as_deref(), Some("workstation"));
    assert_eq!(node.created_at, Timestamp(T0));
    assert_eq!(node.machine_id.as_deref(), Some("machine-ws-b"));
    assert_eq!(node.approved_at, None);
    assert_eq!(node.last_seen_at, None);
    assert_eq!(node.catalog_serial, None);
    assert_eq!(node.run_now_requested_at, None);
    assert_eq!(
        nodes::get_by_name(&db, &node_id("nope")).await.unwrap(),
        None
    );

    let all: Vec<NodeId> = nodes::list(&db, None)
        .await
        .unwrap()
        .into_iter()
        .map(|node| node.name)
        .collect();
    assert_eq!(all, [a.clone(), b.clone()]);
    let approved = nodes::list(&db, Some(EnrollmentStatus::Approved))
        .await
        .unwrap();
    assert_eq!(approved.len(), 1);
    assert_eq!(approved[0].name, a);

    let again = NewNode {
        name: b.clone(),
        class: None,
        machine_id: None,
    };
    let error = nodes::insert_pending(&db, &again, Timestamp(T0 + 5))
        .await
        .unwrap_err();
    assert!(matches!(error, DbError::AlreadyExists { .. }), "{error:?}");
}

#[tokio::test]
async fn node_status_changes_and_approval_time() {
    let (_dir, db) = open_temp().await;
    let node = pending_node(&db, "ws-01").await;
    nodes::set_status(&db, &node, EnrollmentStatus::Approved, Timestamp(T0 + 10))
        .await
        .unwrap();
    let approved = nodes::get_by_name(&db, &node).await.unwrap().unwrap();
    assert_eq!(approved.status, EnrollmentStatus::Approved);
    assert_eq!(approved.approved_at, Some(Timestamp(T0 + 10)));

    for status in [EnrollmentStatus::Quarantined, EnrollmentStatus::Revoked] {
        nodes::set_status(&db, &node, status, Timestamp(T0 + 20))
            .await
            .unwrap();
        let changed = nodes::get_by_name(&db, &node).await.unwrap().unwrap();
        assert_eq!(changed.status, status);
        assert_eq!(changed.approved_at, Some(Timestamp(T0 + 10)));
    }

    let error = nodes::set_status(
        &db,
        &node_id("ghost"),
        EnrollmentStatus::Approved,
        Timestamp(T0),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(error, DbError::NotFound { what: "node", .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn last_seen_never_moves_backwards() {
    let (_dir, db) = open_temp().await;
    let node = approved_node(&db, "ws-01").await;
    for (now, expected) in [
        (T0 + 100, T0 + 100),
        (T0 + 50, T0 + 100),
        (T0 + 200, T0 + 200),
    ] {
        nodes::touch_last_seen(&db, &node, Timestamp(now))
            .await
            .unwrap();
        let seen = nodes::get_by_name(&db, &node).await.unwrap().unwrap();
        assert_eq!(seen.last_seen_at, Some(Timestamp(expected)));
    }
    assert!(
        nodes::touch_last_seen(&db, &node_id("ghost"), Timestamp(T0))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn facts_round_trip_and_update_the_machine_id() {
    let (_dir, db) = open_temp().await;
    let node = approved_node(&db, "ws-01").await;
    assert_eq!(nodes::get_facts(&db, &node).await.unwrap(), None);

    let facts = Facts {
        hostname: Some("ws-01".into()),
        machine_id: Some("0123456789abcdef0123456789abcdef".into()),
        os: Some("Debian GNU/Linux 13 (trixie)".into()),
        cpus: Some(8),
        memory_bytes: Some(32 << 30),
        extra: BTreeMap::from([("virt".to_owned(), "kvm".to_owned())]),
        ..Facts::default()
    };
    nodes::set_facts(&db, &node, &facts).await.unwrap();
    assert_eq!(nodes::get_facts(&db, &node).await.unwrap(), Some(facts));
    let stored = nodes::get_by_name(&db, &node).await.unwrap().unwrap();
    assert_eq!(
        stored.machine_id.as_deref(),
        Some("0123456789abcdef0123456789abcdef")
    );

    let ghost = node_id("ghost");
    assert!(matches!(
        nodes::get_facts(&db, &ghost).await,
        Err(DbError::NotFound { .. })
    ));
    assert!(nodes::set_facts(&db, &ghost, &Facts::default())
        .await
        .is_err());
}

#[tokio::test]
async fn run_now_is_cleared_only_up_to_the_request_delivered() {
    let (_dir, db) = open_temp().await;
    let node = approved_node(&db, "ws-01").await;

    nodes::request_run_now(&db, &node, Timestamp(T0 + 10))
        .await
        .unwrap();
    // A second click while one is pending keeps the first time.
    nodes::request_run_now(&db, &node, Timestamp(T0 + 12))
        .await
        .unwrap();
    let requested = nodes::get_by_name(&db, &node).await.unwrap().unwrap();
    assert_eq!(requested.run_now_requested_at, Some(Timestamp(T0 + 10)));

    // The agent was told about a request made at T0 + 5: the later one stays.
    assert!(!nodes::clear_run_now(&db, &node, Timestamp(T0 + 5))
        .await
        .unwrap());
    assert!(nodes::clear_run_now(&db, &node, Timestamp(T0 + 10))
        .await
        .unwrap());
    let cleared = nodes::get_by_name(&db, &node).await.unwrap().unwrap();
    assert_eq!(cleared.run_now_requested_at, None);
    assert!(!nodes::clear_run_now(&db, &node, Timestamp(T0 + 10))
        .await
        .unwrap());
    assert!(
        nodes::request_run_now(&db, &node_id("ghost"), Timestamp(T0))
            .await
            .is_err()
    );
}

// ---------------------------------------------------------------------------------------------
// Keys

#[tokio::test]
async fn key_history_is_kept_across_reenrollment() {
    let (_dir, db) = open_temp().await;
    let node = approved_node(&db, "ws-01").await;
    let first = new_key("first");
    let second = new_key("second");

    keys::add(&db, &node, &first, Timestamp(T0 + 1))
        .await
        .unwrap();
    let active = keys::find_active_by_key_id(&db, &first.key_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(active.node, node);
    assert_eq!(active.signing_key, first.signing_key);
    assert_eq!(active.encryption_key, first.encryption_key);
    assert_eq!(active.machine_id, first.machine_id);
    assert_eq!(active.created_at, Timestamp(T0 + 1));
    assert_eq!(active.revoked_at, None);
    let by_key = nodes::get_by_key_id(&db, &first.key_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_key.name, node);

    // The rebuilt host re-enrolls with a new key, in one transaction with its audit entry.
    let mut tx = db.begin_write().await.unwrap();
    let revoked = keys::revoke_all_for_node(&mut tx, &node, "re-enrolled", Timestamp(T0 + 100))
        .await
        .unwrap();
    assert_eq!(revoked, 1);
    keys::add(&mut tx, &node, &second, Timestamp(T0 + 100))
        .await
        .unwrap();
    audit::record(
        &mut tx,
        &NewAuditEntry {
            at: Timestamp(T0 + 100),
            actor: "node:ws-01".into(),
            action: "node.reenroll".into(),
            target: Some("ws-01".into()),
            detail: Some(json!({ "old_key": first.key_id, "new_key": second.key_id })),
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    // The old key no longer authenticates anything (THREATS E5).
    assert_eq!(
        keys::find_active_by_key_id(&db, &first.key_id)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        nodes::get_by_key_id(&db, &first.key_id).await.unwrap(),
        None
    );
    assert_eq!(
        nodes::get_by_key_id(&db, &second.key_id)
            .await
            .unwrap()
            .unwrap()
            .name,
        node
    );

    let history = keys::history(&db, &node).await.unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[0].key_id, second.key_id);
    assert_eq!(history[0].revoked_at, None);
    assert_eq!(history[1].key_id, first.key_id);
    assert_eq!(history[1].revoked_at, Some(Timestamp(T0 + 100)));
    assert_eq!(history[1].revoke_reason.as_deref(), Some("re-enrolled"));
    assert_eq!(count(&db, "audit_log").await, 1);
}

#[tokio::test]
async fn an_uncommitted_reenrollment_changes_nothing() {
    let (_dir, db) = open_temp().await;
    let node = approved_node(&db, "ws-01").await;
    let first = new_key("first");
    keys::add(&db, &node, &first, Timestamp(T0)).await.unwrap();

    let mut tx = db.begin_write().await.unwrap();
    keys::revoke_all_for_node(&mut tx, &node, "re-enrolled", Timestamp(T0 + 1))
        .await
        .unwrap();
    keys::add(&mut tx, &node, &new_key("second"), Timestamp(T0 + 1))
        .await
        .unwrap();
    drop(tx);

    assert!(keys::find_active_by_key_id(&db, &first.key_id)
        .await
        .unwrap()
        .is_some());
    assert_eq!(keys::history(&db, &node).await.unwrap().len(), 1);
}

/// Enrollment as the HTTP handler will do it: node, key, token use and audit entry in one
/// transaction, inside a spawned task (which also proves the query futures are `Send` when given
/// `&mut tx`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrollment_is_one_transaction_inside_a_spawned_task() {
    async fn enroll(db: Arc<Db>, name: &'static str, key: &'static str) -> Result<bool, DbError> {
        let node = node_id(name);
        let mut tx = db.begin_write().await?;
        let new = NewNode {
            name: node.clone(),
            class: None,
            machine_id: None,
        };
        nodes::insert_pending(&mut tx, &new, Timestamp(T0)).await?;
        keys::add(&mut *tx, &node, &new_key(key), Timestamp(T0)).await?;
        let hash = SecretHash::of_secret("secret");
        if let Consumption::Refused(_) =
            tokens::consume_use(&mut tx, "once", &hash, Timestamp(T0)).await?
        {
            return Ok(false); // dropping `tx` rolls the node and key back
        }
        let entry = NewAuditEntry {
            at: Timestamp(T0),
            actor: format!("node:{name}"),
            action: "node.enroll".into(),
            target: Some(name.into()),
            detail: None,
        };
        audit::record(&mut tx, &entry).await?;
        tx.commit().await.map_err(|source| DbError::Query {
            context: "committing enrollment",
            source,
        })?;
        Ok(true)
    }

    let (_dir, db) = open_temp().await;
    tokens::create(
        &db,
        &new_token("once", "secret", T0 + 100, 1),
        Timestamp(T0),
    )
    .await
    .unwrap();
    let db = Arc::new(db);
    let first = tokio::spawn(enroll(Arc::clone(&db), "ws-01", "k1"));
    assert!(first.await.unwrap().unwrap());
    let second = tokio::spawn(enroll(Arc::clone(&db), "ws-02", "k2"));
    assert!(!second.await.unwrap().unwrap());

    assert!(nodes::get_by_name(&*db, &node_id("ws-01"))
        .await
        .unwrap()
        .is_some());
    assert_eq!(
        nodes::get_by_name(&*db, &node_id("ws-02")).await.unwrap(),
        None
    );
    assert_eq!(count(&db, "node_keys").await, 1);
    assert_eq!(count(&db, "audit_log").await, 1);
}

#[tokio::test]
async fn one_active_key_per_node_and_key_ids_are_never_reused() {
    let (_dir, db) = open_temp().await;
    let node = approved_node(&db, "ws-01").await;
    let other = approved_node(&db, "ws-02").await;
    let first = new_key("first");
    keys::add(&db, &node, &first, Timestamp(T0)).await.unwrap();

    // A second key while the first is active (THREATS E3).
    let error = keys::add(&db, &node, &new_key("second"), Timestamp(T0 + 1))
        .await
        .unwrap_err();
    assert!(matches!(error, DbError::AlreadyExists { .. }), "{error:?}");
    // The same key on another node (a cloned identity, E4).
    let error = keys::add(&db, &other, &first, Timestamp(T0 + 1))
        .await
        .unwrap_err();
    assert!(matches!(error, DbError::AlreadyExists { .. }), "{error:?}");
    // A revoked key coming back.
    keys::revoke_all_for_node(&db, &node, "admin revoked", Timestamp(T0 + 2))
        .await
        .unwrap();
    let error = keys::add(&db, &node, &first, Timestamp(T0 + 3))
        .await
        .unwrap_err();
    assert!(matches!(error, DbError::AlreadyExists { .. }), "{error:?}");
    assert_eq!(
        keys::revoke_all_for_node(&db, &node, "again", Timestamp(T0 + 4))
            .await
            .unwrap(),
        0
    );
    assert!(
        keys::add(&db, &node_id("ghost"), &new_key("x"), Timestamp(T0))
            .await
            .is_err()
    );
    assert_eq!(keys::history(&db, &node_id("ghost")).await.unwrap(), []);
}

// ---------------------------------------------------------------------------------------------
// Bootstrap tokens

#[tokio::test]
async fn token_create_find_list_and_only_the_hash_is_stored() {
    let (_dir, db) = open_temp().await;
    let secret = "CANARY-TOKEN-SECRET-8f14e45fceea167a5a36dedd4bea2543";
    tokens::create(&db, &new_token("tmpl", secret, T0 + 3600, 5), Timestamp(T0))
        .await
        .unwrap();
    tokens::create(
        &db,
        &new_token("other", "s2", T0 + 60, 1),
        Timestamp(T0 + 1),
    )
    .await
    .unwrap();

    let token = tokens::find(&db, "tmpl").await.unwrap().unwrap();
    assert_eq!(token.token_id, "tmpl");
    assert_eq!(token.description, "template clones");
    assert_eq!(token.created_at, Timestamp(T0));
    assert_eq!(token.created_by, "admin");
    assert_eq!(token.expires_at, Timestamp(T0 + 3600));
    assert_eq!((token.uses_allowed, token.uses_done), (5, 0));
    assert_eq!(token.hostname_glob.as_deref(), Some("ws-*"));
    assert_eq!(token.class.as_deref(), Some("workstation"));
    assert!(token.auto_approve && !token.may_reenroll);
    assert_eq!(token.revoked_at, None);
    assert_eq!(tokens::find(&db, "nope").await.unwrap(), None);

    let listed: Vec<String> = tokens::list(&db)
        .await
        .unwrap()
        .into_iter()
        .map(|token| token.token_id)
        .collect();
    assert_eq!(listed, ["other", "tmpl"]);

    let error = tokens::create(&db, &new_token("tmpl", "x", T0, 1), Timestamp(T0))
        .await
        .unwrap_err();
    assert!(matches!(error, DbError::AlreadyExists { .. }), "{error:?}");
    let error = tokens::create(&db, &new_token("zero", "x", T0, 0), Timestamp(T0))
        .await
        .unwrap_err();
    assert!(matches!(error, DbError::Invalid { .. }), "{error:?}");

    assert!(!format!("{:?}", new_token("t", secret, T0, 1)).contains(secret));
    db.checkpoint().await.unwrap();
    assert!(!database_files_contain(db.path(), secret));
    assert!(!database_files_contain(db.path(), "CANARY-TOKEN"));
}

#[tokio::test]
async fn token_use_checks_secret_expiry_uses_and_revocation() {
    let (_dir, db) = open_temp().await;
    let hash = SecretHash::of_secret("right");
    let wrong = SecretHash::of_secret("wrong");
    tokens::create(&db, &new_token("two", "right", T0 + 100, 2), Timestamp(T0))
        .await
        .unwrap();

    let refused = |refusal| Consumption::Refused(refusal);
    assert_eq!(
        tokens::consume_use(&db, "two", &wrong, Timestamp(T0))
            .await
            .unwrap(),
        refused(TokenRefusal::Unknown)
    );
    assert_eq!(
        tokens::consume_use(&db, "missing", &hash, Timestamp(T0))
            .await
            .unwrap(),
        refused(TokenRefusal::Unknown)
    );
    for expected_uses in [1, 2] {
        match tokens::consume_use(&db, "two", &hash, Timestamp(T0 + 1))
            .await
            .unwrap()
        {
            Consumption::Consumed(token) => assert_eq!(token.uses_done, expected_uses),
            other => panic!("expected a use, got {other:?}"),
        }
    }
    assert_eq!(
        tokens::consume_use(&db, "two", &hash, Timestamp(T0 + 2))
            .await
            .unwrap(),
        refused(TokenRefusal::Exhausted)
    );
    assert_eq!(
        tokens::find(&db, "two").await.unwrap().unwrap().uses_done,
        2
    );

    // Expiry: usable until just before `expires_at`.
    tokens::create(&db, &new_token("ttl", "right", T0 + 100, 5), Timestamp(T0))
        .await
        .unwrap();
    assert!(matches!(
        tokens::consume_use(&db, "ttl", &hash, Timestamp(T0 + 99))
            .await
            .unwrap(),
        Consumption::Consumed(_)
    ));
    assert_eq!(
        tokens::consume_use(&db, "ttl", &hash, Timestamp(T0 + 100))
            .await
            .unwrap(),
        refused(TokenRefusal::Expired)
    );
    // Without the secret, an expired token is just unknown.
    assert_eq!(
        tokens::consume_use(&db, "ttl", &wrong, Timestamp(T0 + 100))
            .await
            .unwrap(),
        refused(TokenRefusal::Unknown)
    );

    // Revocation.
    tokens::create(&db, &new_token("rev", "right", T0 + 100, 5), Timestamp(T0))
        .await
        .unwrap();
    assert!(tokens::revoke(&db, "rev", Timestamp(T0 + 5)).await.unwrap());
    assert!(!tokens::revoke(&db, "rev", Timestamp(T0 + 6)).await.unwrap());
    assert!(!tokens::revoke(&db, "missing", Timestamp(T0 + 6))
        .await
        .unwrap());
    assert_eq!(
        tokens::find(&db, "rev").await.unwrap().unwrap().revoked_at,
        Some(Timestamp(T0 + 5))
    );
    assert_eq!(
        tokens::consume_use(&db, "rev", &hash, Timestamp(T0 + 7))
            .await
            .unwrap(),
        refused(TokenRefusal::Revoked)
    );
    assert_eq!(
        tokens::find(&db, "rev").await.unwrap().unwrap().uses_done,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_uses_of_a_single_use_token_have_exactly_one_winner() {
    let (_dir, db) = open_temp().await;
    tokens::create(
        &db,
        &new_token("once", "secret", T0 + 100, 1),
        Timestamp(T0),
    )
    .await
    .unwrap();
    let db = Arc::new(db);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let db = Arc::clone(&db);
        tasks.spawn(async move {
            let hash = SecretHash::of_secret("secret");
            tokens::consume_use(&*db, "once", &hash, Timestamp(T0 + 1)).await
        });
    }
    let mut consumed = 0;
    while let Some(result) = tasks.join_next().await {
        match result.unwrap().unwrap() {
            Consumption::Consumed(_) => consumed += 1,
            Consumption::Refused(refusal) => assert_eq!(refusal, TokenRefusal::Exhausted),
        }
    }
    assert_eq!(consumed, 1);
    assert_eq!(
        tokens::find(&*db, "once").await.unwrap().unwrap().uses_done,
        1
    );
}

// ---------------------------------------------------------------------------------------------
// Catalogs and compile failures

#[tokio::test]
async fn catalogs_are_stored_redacted_and_serials_only_increase() {
    let (_dir, db) = open_temp().await;
    let node = approved_node(&db, "ws-01").await;
    assert_eq!(catalogs::latest(&db, &node).await.unwrap(), None);

    catalogs::insert(&db, &catalog(&node, 1_000)).await.unwrap();
    let latest = catalogs::latest(&db, &node).await.unwrap().unwrap();
    assert_eq!(latest.node, node);
    assert_eq!(latest.serial, Serial(1_000));
    assert_eq!(latest.digest, catalog(&node, 1_000).digest);
    assert_eq!(latest.compiled_at, Timestamp(T0));
    assert_eq!(latest.expires_at, Timestamp(T0 + 86_400));
    assert_eq!(latest.site_hash, "ab".repeat(32));
    assert_eq!(latest.redacted_json, catalog(&node, 1_000).redacted_json);
    let current = nodes::get_by_name(&db, &node).await.unwrap().unwrap();
    assert_eq!(current.catalog_serial, Some(Serial(1_000)));
    assert_eq!(current.catalog_digest, Some(latest.digest.clone()));

    for stale in [1_000, 999] {
        let error = catalogs::insert(&db, &catalog(&node, stale))
            .await
            .unwrap_err();
        assert!(
            matches!(
                error,
                DbError::SerialNotIncreasing {
                    current: Serial(1_000),
                    ..
                }
            ),
            "{error:?}"
        );
    }
    let newest = 1_750_000_000_123; // max(last + 1, now in ms)
    catalogs::insert(&db, &catalog(&node, newest))
        .await
        .unwrap();
    assert_eq!(
        catalogs::latest(&db, &node).await.unwrap().unwrap().serial,
        Serial(newest)
    );
    assert_eq!(
        nodes::get_by_name(&db, &node)
            .await
            .unwrap()
            .unwrap()
            .catalog_serial,
        Some(Serial(newest))
    );
    let old = catalogs::get(&db, &node, Serial(1_000))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(old.redacted_json, catalog(&node, 1_000).redacted_json);
    assert_eq!(catalogs::get(&db, &node, Serial(5)).await.unwrap(), None);
    let serials: Vec<Serial> = catalogs::list(&db, &node, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|summary| summary.serial)
        .collect();
    assert_eq!(serials, [Serial(newest), Serial(1_000)]);
    assert_eq!(catalogs::list(&db, &node, 1).await.unwrap().len(), 1);

    let mut not_json = catalog(&node, newest + 1);
    not_json.redacted_json = "{not json".into();
    assert!(catalogs::insert(&db, &not_json).await.is_err());
    let mut too_big = catalog(&node, newest + 1);
    too_big.serial = Serial(u64::MAX);
    assert!(matches!(
        catalogs::insert(&db, &too_big).await,
        Err(DbError::Invalid { .. })
    ));
    assert!(matches!(
        catalogs::insert(&db, &catalog(&node_id("ghost"), 1)).await,
        Err(DbError::NotFound { .. })
    ));
}

#[tokio::test]
async fn compile_failures_keep_one_current_failure_and_a_history() {
    let (_dir, db) = open_temp().await;
    let node = approved_node(&db, "ws-01").await;
    let other = approved_node(&db, "ws-02").await;
    let broken = "roster.yaml:12: users.emo.tier: unknown tier `dev`";
    assert_eq!(compile_failures::current(&db, &node).await.unwrap(), None);

    compile_failures::record(&db, &node, Timestamp(T0 + 10), broken, Some("h1"))
        .await
        .unwrap();
    compile_failures::record(&db, &node, Timestamp(T0 + 20), broken, Some("h1"))
        .await
        .unwrap();
    let current = compile_failures::current(&db, &node)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(current.node, node);
    assert_eq!(
        (current.first_at, current.last_at),
        (Timestamp(T0 + 10), Timestamp(T0 + 20))
    );
    assert_eq!(current.occurrences, 2);
    assert_eq!(current.message, broken);
    assert_eq!(current.site_hash.as_deref(), Some("h1"));
    assert_eq!(current.resolved_at, None);

    // Another failure supersedes the first.
    compile_failures::record(
        &db,
        &node,
        Timestamp(T0 + 30),
        "vault: secret/platform missing",
        None,
    )
    .await
    .unwrap();
    compile_failures::record(&db, &other, Timestamp(T0 + 25), broken, Some("h1"))
        .await
        .unwrap();
    let current = compile_failures::current(&db, &node)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(current.message, "vault: secret/platform missing");
    assert_eq!(current.occurrences, 1);
    let all_current: Vec<NodeId> = compile_failures::list_current(&db)
        .await
        .unwrap()
        .into_iter()
        .map(|failure| failure.node)
        .collect();
    assert_eq!(all_current, [node.clone(), other.clone()]);

    assert!(compile_failures::clear(&db, &node, Timestamp(T0 + 40))
        .await
        .unwrap());
    assert!(!compile_failures::clear(&db, &node, Timestamp(T0 + 41))
        .await
        .unwrap());
    assert_eq!(compile_failures::current(&db, &node).await.unwrap(), None);

    let history = compile_failures::history(&db, &node, 10).await.unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[0].message, "vault: secret/platform missing");
    assert_eq!(history[0].resolved_at, Some(Timestamp(T0 + 40)));
    assert_eq!(history[1].message, broken);
    assert_eq!(history[1].resolved_at, Some(Timestamp(T0 + 30)));
    assert_eq!(
        compile_failures::history(&db, &node, 1)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        compile_failures::record(&db, &node_id("ghost"), Timestamp(T0), "x", None)
            .await
            .is_err()
    );
}

// ---------------------------------------------------------------------------------------------
// Runs

#[tokio::test]
async fn report_insert_is_idempotent_by_run_id() {
    let (_dir, db) = open_temp().await;
    let node = approved_node(&db, "ws-01").await;
    let report = report(&node, 1, T0, 12);

    assert_eq!(
        runs::insert_report(&db, &report, Timestamp(T0 + 8))
            .await
            .unwrap(),
        InsertOutcome::Inserted
    );
    let mut resent = report.clone();
    resent.message = Some("resent after a timeout".into());
    assert_eq!(
        runs::insert_report(&db, &resent, Timestamp(T0 + 60))
            .await
            .unwrap(),
        InsertOutcome::Duplicate
    );
    assert_eq!(count(&db, "runs").await, 1);
    assert_eq!(count(&db, "resource_events").await, 12);
    let stored = runs::get_with_events(&db, &report.run_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.run.received_at, Timestamp(T0 + 8));
    assert_eq!(stored.run.message, None);
}

#[tokio::test]
async fn a_batch_of_reports_gets_each_its_own_outcome() {
    let (_dir, db) = open_temp().await;
    let node = approved_node(&db, "ws-01").await;
    let other = approved_node(&db, "ws-02").await;
    let first = report(&node, 1, T0, 3);
    let second = report(&other, 2, T0, 4);
    let outcomes = runs::insert_reports(
        &db,
        &[
            (&first, Timestamp(T0)),
            (&second, Timestamp(T0)),
            (&first, Timestamp(T0 + 1)),
        ],
    )
    .await
    .unwrap();
    let outcomes: Vec<InsertOutcome> = outcomes.into_iter().map(Result::unwrap).collect();
    assert_eq!(
        outcomes,
        [
            InsertOutcome::Inserted,
            InsertOutcome::Inserted,
            InsertOutcome::Duplicate
        ]
    );
    assert_eq!(count(&db, "resource_events").await, 7);

    // One refused report (another node's run id, an unknown node) costs the others nothing:
    // the batch is stored one report at a time.
    let third = report(&node, 3, T0, 2);
    let conflict = report(&other, 1, T0, 2);
    let ghost = report(&node_id("ghost"), 4, T0, 2);
    let fifth = report(&other, 5, T0, 5);
    let outcomes = runs::insert_reports(
        &db,
        &[
            (&third, Timestamp(T0)),
            (&conflict, Timestamp(T0)),
            (&ghost, Timestamp(T0)),
            (&fifth, Timestamp(T0)),
        ],
    )
    .await
    .unwrap();
    assert!(matches!(outcomes[0], Ok(InsertOutcome::Inserted)));
    assert!(matches!(outcomes[1], Err(DbError::RunIdConflict { .. })));
    assert!(matches!(outcomes[2], Err(DbError::NotFound { .. })));
    assert!(matches!(outcomes[3], Ok(InsertOutcome::Inserted)));
    assert_eq!(count(&db, "runs").await, 4);
    assert_eq!(count(&db, "resource_events").await, 14);
}

#[tokio::test]
async fn reports_with_another_nodes_run_id_an_unknown_node_or_a_bad_id_are_refused() {
    let (_dir, db) = open_temp().await;
    let node = approved_node(&db, "ws-01").await;
    let other = approved_node(&db, "ws-02").await;
    runs::insert_report(&db, &report(&node, 1, T0, 2), Timestamp(T0))
        .await
        .unwrap();

    let error = runs::insert_report(&db, &report(&other, 1, T0, 2), Timestamp(T0))
        .await
        .unwrap_err();
    assert!(matches!(error, DbError::RunIdConflict { .. }), "{error:?}");
    let error = runs::insert_report(&db, &report(&node_id("ghost"), 2, T0, 2), Timestamp(T0))
        .await
        .unwrap_err();
    assert!(matches!(error, DbError::NotFound { .. }), "{error:?}");
    let mut bad = report(&node, 3, T0, 2);
    bad.run_id = RunId("not-a-uuid".into());
    let error = runs::insert_report(&db, &bad, Timestamp(T0))
        .await
        .unwrap_err();
    assert!(matches!(error, DbError::Invalid { .. }), "{error:?}");
    assert_eq!(count(&db, "runs").await, 1);
    assert_eq!(count(&db, "resource_events").await, 2);
}

#[tokio::test]
async fn a_run_reads_back_as_reported_with_events_in_apply_order() {
    let (_dir, db) = open_temp().await;
    let node = approved_node(&db, "ws-01").await;
    // More events than one multi-row INSERT holds.
    let mut sent = report(&node, 7, T0, 450);
    sent.noop = true;
    sent.status = RunStatus::Noop;
    sent.message = Some("noop run".into());
    runs::insert_report(&db, &sent, Timestamp(T0 + 9))
        .await
        .unwrap();

    let stored = runs::get_with_events(&db, &sent.run_id)
        .await
        .unwrap()
        .unwrap();
    let run = &stored.run;
    assert_eq!(run.run_id, sent.run_id);
    assert_eq!(run.node, node);
    assert_eq!(run.catalog_serial, sent.catalog_serial);
    assert_eq!(
        (run.started_at, run.finished_at),
        (sent.started_at, sent.finished_at)
    );
    assert_eq!(run.duration_ms, sent.duration_ms);
    assert_eq!(run.status, RunStatus::Noop);
    assert!(run.noop);
    assert_eq!(run.message, sent.message);
    assert_eq!(run.agent_version, sent.agent_version);
    assert_eq!(run.totals, sent.totals);
    assert_eq!(run.received_at, Timestamp(T0 + 9));
    assert_eq!(stored.events, sent.events);

    let mut no_catalog = report(&node, 8, T0 + 1, 0);
    no_catalog.catalog_serial = None;
    no_catalog.status = RunStatus::Error;
    runs::insert_report(&db, &no_catalog, Timestamp(T0 + 9))
        .await
        .unwrap();
    let stored = runs::get_with_events(&db, &no_catalog.run_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.run.catalog_serial, None);
    assert_eq!(stored.run.status, RunStatus::Error);
    assert!(stored.events.is_empty());
    assert_eq!(
        runs::get_with_events(&db, &run_id(999)).await.unwrap(),
        None
    );
}

/// The notices of issue 11: `kept` and `deferred` events and `drift` on an event of any status
/// are stored and read back as sent, with the run's counts of each.
#[tokio::test]
async fn kept_deferred_and_drift_round_trip_with_their_counts() {
    let (_dir, db) = open_temp().await;
    let node = approved_node(&db, "ws-01").await;
    let mut sent = report(&node, 21, T0, 0);
    let notice = |resource: ResourceId, status: ResourceStatus, message: &str| ResourceEvent {
        resource,
        status,
        message: Some(message.to_owned()),
        diff: None,
        duration_ms: 3,
        corrective: false,
        drift: None,
    };
    let mut drifted = notice(
        ResourceId::new("user", "emo"),
        ResourceStatus::Unchanged,
        "account in place",
    );
    drifted.drift = Some("holds sudo, docker beyond tier namespace-owner".into());
    sent.events = vec![
        notice(
            ResourceId::new("git_clone", "/home/emo/code"),
            ResourceStatus::Kept,
            "exists and is not this clone (a symlink to /home/ana/code): kept as found",
        ),
        notice(
            ResourceId::new("service", "t3-serve@emo.service"),
            ResourceStatus::Deferred,
            "restart waits for emo to go idle (1 session) since 2026-12-08 02:00 UTC",
        ),
        drifted,
    ];
    sent.totals = Totals::of(&sent.events);
    sent.status = RunStatus::Unchanged;
    assert_eq!(
        (sent.totals.kept, sent.totals.deferred, sent.totals.drift),
        (1, 1, 1)
    );
    runs::insert_report(&db, &sent, Timestamp(T0 + 9))
        .await
        .unwrap();
    let stored = runs::get_with_events(&db, &sent.run_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.run.totals, sent.totals);
    assert_eq!(stored.events, sent.events);
    let listed = runs::list(&db, &RunFilter::default(), Page::first(10))
        .await
        .unwrap();
    assert_eq!(listed.runs[0].totals, sent.totals);
    let stored_statuses: Vec<String> =
        sqlx::query_scalar("SELECT status FROM resource_events ORDER BY seq")
            .fetch_all(db.pool())
            .await
            .unwrap();
    assert_eq!(stored_statuses, ["kept", "deferred", "unchanged"]);
    let deferred = runs::events_with_status(&db, ResourceStatus::Deferred, Timestamp(T0), 10)
        .await
        .unwrap();
    assert_eq!(deferred.len(), 1);
    assert_eq!(deferred[0].event, sent.events[1]);
    let last = runs::last_event_for_resource(&db, &node, &ResourceId::new("user", "emo"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(last.event.drift, sent.events[2].drift);
    // The counts are checked like the others.
    let negative = sqlx::query("UPDATE runs SET total_drift = -1")
        .execute(db.pool())
        .await;
    assert!(negative.is_err(), "a negative count is refused");
    let unknown = sqlx::query("UPDATE resource_events SET status = 'ignored'")
        .execute(db.pool())
        .await;
    assert!(unknown.is_err(), "an unknown status is still refused");
}

/// A database at schema version 4 (migrations 0001–0004) with runs and events upgrades to the
/// current schema: every row kept as it was, the new counts zero, no drift, the index and the
/// cascade from runs to events still in place.
#[tokio::test]
async fn a_version_4_database_with_reports_upgrades_and_keeps_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("steward.db");
    let migrations = dir.path().join("migrations-v4");
    std::fs::create_dir(&migrations).unwrap();
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations");
    for name in [
        "0001_initial.sql",
        "0002_pending_keys.sql",
        "0003_ui_sessions.sql",
        "0004_drop_event_resource_index.sql",
    ] {
        std::fs::copy(source.join(name), migrations.join(name)).unwrap();
    }
    {
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .foreign_keys(true);
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .unwrap();
        sqlx::migrate::Migrator::new(migrations.as_path())
            .await
            .unwrap()
            .run(&pool)
            .await
            .unwrap();
        // Rows as a version-4 server wrote them.
        for statement in [
            "INSERT INTO nodes (id, name, status, created_at) VALUES (1, 'ws-01', 'approved', 1)",
            "INSERT INTO runs (id, uuid, node_id, catalog_serial, started_at, finished_at, \
             duration_ms, status, noop, message, agent_version, total_resources, \
             total_unchanged, total_changed, total_would_change, total_failed, total_skipped, \
             received_at) VALUES \
             (7, '5a5a5a5a-5a5a-4a5a-9a00-000000000007', 1, 3, 100, 107, 7000, 'failed', 0, \
              'one failed', '0.1.0', 3, 1, 1, 0, 1, 0, 110), \
             (8, '5a5a5a5a-5a5a-4a5a-9a00-000000000008', 1, 3, 200, 201, 1000, 'unchanged', \
              0, NULL, '0.1.0', 1, 1, 0, 0, 0, 0, 210)",
            "INSERT INTO resource_events (id, run_id, seq, node_id, run_started_at, resource, \
             resource_type, status, message, diff, duration_ms, corrective) VALUES \
             (40, 7, 0, 1, 100, 'file:/etc/motd', 'file', 'changed', NULL, '-a\n+b', 5, 1), \
             (41, 7, 1, 1, 100, 'package:git', 'package', 'unchanged', NULL, NULL, 2, 0), \
             (42, 7, 2, 1, 100, 'service:app', 'service', 'failed', 'exit 1', NULL, 9, 0), \
             (43, 8, 0, 1, 200, 'package:git', 'package', 'unchanged', NULL, NULL, 1, 0)",
        ] {
            sqlx::query(statement).execute(&pool).await.unwrap();
        }
        pool.close().await;
    }
    let events_before = "SELECT id, run_id, seq, node_id, run_started_at, resource, \
                         resource_type, status, coalesce(message, '-'), coalesce(diff, '-'), \
                         duration_ms, corrective FROM resource_events ORDER BY id";
    type EventTuple = (
        i64,
        i64,
        i64,
        i64,
        i64,
        String,
        String,
        String,
        String,
        String,
        i64,
        i64,
    );
    let before: Vec<EventTuple> = {
        let mut connection = SqliteConnection::connect(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        sqlx::query_as(events_before)
            .fetch_all(&mut connection)
            .await
            .unwrap()
    };
    assert_eq!(before.len(), 4);

    let db = Db::open(&path).await.unwrap();
    let after: Vec<EventTuple> = sqlx::query_as(events_before)
        .fetch_all(db.pool())
        .await
        .unwrap();
    assert_eq!(after, before, "every event kept as it was");
    let drift: i64 = sqlx::query_scalar("SELECT count(*) FROM resource_events WHERE drift IS NULL")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(drift, 4);
    let failed = runs::get_with_events(&db, &RunId("5a5a5a5a-5a5a-4a5a-9a00-000000000007".into()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(failed.run.status, RunStatus::Failed);
    assert_eq!(failed.run.message.as_deref(), Some("one failed"));
    assert_eq!(
        failed.run.totals,
        Totals {
            resources: 3,
            unchanged: 1,
            changed: 1,
            failed: 1,
            ..Totals::default()
        }
    );
    assert_eq!(failed.events.len(), 3);
    assert_eq!(failed.events[2].message.as_deref(), Some("exit 1"));
    assert_eq!(count(&db, "runs").await, 2);
    // Same indexes as before the rebuild.
    let indexes: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'resource_events' \
         ORDER BY name",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    assert_eq!(
        indexes,
        [
            "resource_events_by_status_time",
            "sqlite_autoindex_resource_events_1"
        ]
    );
    let violations: Vec<(String, i64, String, i64)> = sqlx::query_as("PRAGMA foreign_key_check")
        .fetch_all(db.pool())
        .await
        .unwrap();
    assert!(violations.is_empty(), "{violations:?}");
    // The cascade still holds: deleting a run deletes its events.
    sqlx::query("DELETE FROM runs WHERE id = 7")
        .execute(db.pool())
        .await
        .unwrap();
    assert_eq!(count(&db, "resource_events").await, 1);
    // And the upgraded database takes the new statuses.
    let node = node_id("ws-01");
    let mut sent = report(&node, 30, 300, 0);
    sent.events = vec![ResourceEvent {
        resource: ResourceId::new("git_clone", "/home/emo/code"),
        status: ResourceStatus::Kept,
        message: Some("a symlink: kept".into()),
        diff: None,
        duration_ms: 1,
        corrective: false,
        drift: Some("not a clone".into()),
    }];
    sent.totals = Totals::of(&sent.events);
    sent.status = RunStatus::Unchanged;
    runs::insert_report(&db, &sent, Timestamp(310))
        .await
        .unwrap();
    let stored = runs::get_with_events(&db, &sent.run_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.events, sent.events);
    assert_eq!(stored.run.totals, sent.totals);
}

#[tokio::test]
async fn run_lists_filter_and_page_newest_first() {
    let (_dir, db) = open_temp().await;
    let a = approved_node(&db, "ws-a").await;
    let b = approved_node(&db, "ws-b").await;
    // 30 runs, in pairs that share a start second, to exercise the id tie-breaker.
    for n in 0..30_u64 {
        let node = if n % 2 == 0 { &a } else { &b };
        let mut sent = report(node, n, T0 + (n as i64 / 2) * 60, 1);
        sent.status = if n % 3 == 0 {
            RunStatus::Failed
        } else {
            RunStatus::Unchanged
        };
        sent.noop = n % 5 == 0;
        runs::insert_report(&db, &sent, Timestamp(T0 + 10_000))
            .await
            .unwrap();
    }

    async fn all_pages(db: &Db, filter: &RunFilter, limit: u32) -> Vec<RunId> {
        let mut page = Page::first(limit);
        let mut seen = Vec::new();
        loop {
            let got = runs::list(db, filter, page).await.unwrap();
            assert!(got.runs.len() <= limit as usize);
            seen.extend(got.runs.iter().map(|run| run.run_id.clone()));
            match got.next {
                Some(next) => {
                    // The cursor survives a trip through a URL query.
                    let text = next.to_string();
                    page.before = Some(text.parse::<RunCursor>().unwrap());
                }
                None => return seen,
            }
        }
    }
    fn expected(keep: impl Fn(u64) -> bool) -> Vec<RunId> {
        // Newest first; within the same second, the later insert (higher id) first.
        (0..30_u64).rev().filter(|n| keep(*n)).map(run_id).collect()
    }

    let everything = all_pages(&db, &RunFilter::default(), 7).await;
    assert_eq!(everything, expected(|_| true));
    let first = runs::list(&db, &RunFilter::default(), Page::first(50))
        .await
        .unwrap();
    assert_eq!(first.runs.len(), 30);
    assert_eq!(first.next, None);

    let only_a = RunFilter {
        node: Some(a.clone()),
        ..RunFilter::default()
    };
    assert_eq!(all_pages(&db, &only_a, 4).await, expected(|n| n % 2 == 0));
    let failed = RunFilter {
        status: Some(RunStatus::Failed),
        ..RunFilter::default()
    };
    assert_eq!(all_pages(&db, &failed, 3).await, expected(|n| n % 3 == 0));
    let noop_on_b = RunFilter {
        node: Some(b.clone()),
        noop: Some(true),
        ..RunFilter::default()
    };
    assert_eq!(
        all_pages(&db, &noop_on_b, 10).await,
        expected(|n| n % 2 == 1 && n % 5 == 0)
    );
    let window = RunFilter {
        since: Some(Timestamp(T0 + 5 * 60)),
        until: Some(Timestamp(T0 + 10 * 60)),
        ..RunFilter::default()
    };
    assert_eq!(
        all_pages(&db, &window, 3).await,
        expected(|n| (10..20).contains(&n))
    );
    let nobody = RunFilter {
        node: Some(node_id("ghost")),
        ..RunFilter::default()
    };
    assert_eq!(all_pages(&db, &nobody, 3).await, Vec::<RunId>::new());
    assert!("12".parse::<RunCursor>().is_err());
    assert!("x.1".parse::<RunCursor>().is_err());
}

#[tokio::test]
async fn last_result_of_a_resource_and_failures_across_the_fleet() {
    let (_dir, db) = open_temp().await;
    let a = approved_node(&db, "ws-a").await;
    let b = approved_node(&db, "ws-b").await;
    // Event 2 (`file:/etc/steward/2`) fails in every report.
    runs::insert_report(&db, &report(&a, 1, T0, 5), Timestamp(T0))
        .await
        .unwrap();
    runs::insert_report(&db, &report(&b, 2, T0 + 60, 5), Timestamp(T0))
        .await
        .unwrap();
    let mut fixed = report(&a, 3, T0 + 120, 5);
    fixed.events[2].status = ResourceStatus::Changed;
    fixed.events[2].message = None;
    fixed.totals = Totals::of(&fixed.events);
    runs::insert_report(&db, &fixed, Timestamp(T0))
        .await
        .unwrap();

    let resource = ResourceId::new("file", "/etc/steward/2");
    let last = runs::last_event_for_resource(&db, &a, &resource)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(last.run_id, run_id(3));
    assert_eq!(last.node, a);
    assert_eq!(last.run_started_at, Timestamp(T0 + 120));
    assert_eq!(last.event, fixed.events[2]);
    let on_b = runs::last_event_for_resource(&db, &b, &resource)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(on_b.event.status, ResourceStatus::Failed);
    assert_eq!(
        runs::last_event_for_resource(&db, &a, &ResourceId::new("user", "nobody"))
            .await
            .unwrap(),
        None
    );

    let failures = runs::events_with_status(&db, ResourceStatus::Failed, Timestamp(T0), 10)
        .await
        .unwrap();
    let where_failed: Vec<(RunId, NodeId)> = failures
        .iter()
        .map(|record| (record.run_id.clone(), record.node.clone()))
        .collect();
    assert_eq!(
        where_failed,
        [(run_id(2), b.clone()), (run_id(1), a.clone())]
    );
    assert_eq!(failures[0].event.message.as_deref(), Some("cannot write 2"));
    let recent = runs::events_with_status(&db, ResourceStatus::Failed, Timestamp(T0 + 1), 10)
        .await
        .unwrap();
    assert_eq!(recent.len(), 1);
    assert_eq!(
        runs::events_with_status(&db, ResourceStatus::Failed, Timestamp(T0), 1)
            .await
            .unwrap()
            .len(),
        1
    );
}

// ---------------------------------------------------------------------------------------------
// State

fn sample_state() -> State {
    State {
        ports: BTreeMap::from([("emo".to_owned(), 7681), ("ada".to_owned(), 7682)]),
        managed_users: BTreeMap::from([
            (
                "emo".to_owned(),
                ManagedUser {
                    state: UserState::Present,
                    services: vec!["ttyd@emo.service".into(), "code-server@emo.service".into()],
                },
            ),
            (
                "old".to_owned(),
                ManagedUser {
                    state: UserState::Offboarded,
                    services: vec![],
                },
            ),
            (
                "gone".to_owned(),
                ManagedUser {
                    state: UserState::Purged,
                    services: vec!["ttyd@gone.service".into()],
                },
            ),
        ]),
    }
}

#[tokio::test]
async fn state_round_trips_and_save_replaces_the_previous_state() {
    let (_dir, db) = open_temp().await;
    let node = approved_node(&db, "ws-01").await;
    let other = approved_node(&db, "ws-02").await;
    assert_eq!(state::load(&db, &node).await.unwrap(), State::default());

    let first = sample_state();
    state::save(&db, &node, &first).await.unwrap();
    assert_eq!(state::load(&db, &node).await.unwrap(), first);
    // The same ports on another node are independent.
    state::save(&db, &other, &first).await.unwrap();

    let mut second = first.clone();
    second.ports.remove("ada");
    second.ports.insert("bob".into(), 7682);
    second.managed_users.remove("gone");
    state::save(&db, &node, &second).await.unwrap();
    assert_eq!(state::load(&db, &node).await.unwrap(), second);
    assert_eq!(state::load(&db, &other).await.unwrap(), first);

    assert!(matches!(
        state::load(&db, &node_id("ghost")).await,
        Err(DbError::NotFound { .. })
    ));
    assert!(state::save(&db, &node_id("ghost"), &first).await.is_err());
}

#[tokio::test]
async fn a_state_that_breaks_port_uniqueness_is_not_saved_at_all() {
    let (_dir, db) = open_temp().await;
    let node = approved_node(&db, "ws-01").await;
    let good = sample_state();
    state::save(&db, &node, &good).await.unwrap();

    let mut clash = good.clone();
    clash.ports.insert("zed".into(), 7681);
    let error = state::save(&db, &node, &clash).await.unwrap_err();
    assert!(error.is_unique_violation(), "{error:?}");
    assert_eq!(state::load(&db, &node).await.unwrap(), good);
}

// ---------------------------------------------------------------------------------------------
// Nonces and audit log

#[tokio::test]
async fn nonces_are_stored_in_batches_once_per_key_and_old_ones_pruned() {
    let (_dir, db) = open_temp().await;
    let key = KeyId::of_public_key_bytes(b"agent");
    let other_key = KeyId::of_public_key_bytes(b"other agent");
    let window = 300;
    let record = |key: &KeyId, nonce: &str, at: i64| NonceRecord {
        key_id: key.clone(),
        nonce: nonce.into(),
        seen_at: Timestamp(at),
    };

    nonces::record_batch(
        &db,
        &[record(&key, "n-1", T0), record(&other_key, "n-1", T0 + 1)],
        Timestamp(T0 - 2 * window),
    )
    .await
    .unwrap();
    // The same nonce again (a flush retried after a failure) keeps the first sighting.
    nonces::record_batch(
        &db,
        &[record(&key, "n-1", T0 + 1)],
        Timestamp(T0 - 2 * window),
    )
    .await
    .unwrap();
    assert_eq!(
        nonces::load_since(&db, Timestamp(T0)).await.unwrap(),
        vec![record(&key, "n-1", T0), record(&other_key, "n-1", T0 + 1)]
    );
    assert_eq!(
        nonces::load_since(&db, Timestamp(T0 + 1)).await.unwrap(),
        vec![record(&other_key, "n-1", T0 + 1)]
    );

    // Much later, the old entries are pruned with the next batch.
    nonces::record_batch(
        &db,
        &[record(&key, "n-2", T0 + 2 * window + 2)],
        Timestamp(T0 + 2),
    )
    .await
    .unwrap();
    assert_eq!(count(&db, "request_nonces").await, 1);

    for bad in ["", &"x".repeat(129)] {
        assert!(matches!(
            nonces::record_batch(&db, &[record(&key, bad, T0)], Timestamp(0)).await,
            Err(DbError::Invalid { .. })
        ));
    }
}

#[tokio::test]
async fn audit_entries_list_newest_first_and_cannot_be_edited() {
    let (_dir, db) = open_temp().await;
    let mut ids = Vec::new();
    for (n, target) in ["ws-01", "ws-02", "ws-01"].into_iter().enumerate() {
        let id = audit::record(
            &db,
            &NewAuditEntry {
                at: Timestamp(T0 + n as i64),
                actor: "admin".into(),
                action: "node.approve".into(),
                target: Some(target.into()),
                detail: Some(json!({ "n": n })),
            },
        )
        .await
        .unwrap();
        ids.push(id);
    }
    audit::record(
        &db,
        &NewAuditEntry {
            at: Timestamp(T0 + 9),
            actor: "system".into(),
            action: "retention.prune".into(),
            target: None,
            detail: None,
        },
    )
    .await
    .unwrap();

    let all = audit::list(&db, &AuditFilter::default()).await.unwrap();
    assert_eq!(all.len(), 4);
    assert_eq!(all[0].action, "retention.prune");
    assert_eq!(all[0].target, None);
    assert_eq!(all[0].detail, None);
    assert_eq!(all[3].id, ids[0]);
    assert_eq!(all[3].at, Timestamp(T0));
    assert_eq!(all[3].actor, "admin");
    assert_eq!(all[3].detail, Some(json!({ "n": 0 })));

    let ws01 = AuditFilter {
        target: Some("ws-01".into()),
        ..AuditFilter::default()
    };
    let about_ws01: Vec<i64> = audit::list(&db, &ws01)
        .await
        .unwrap()
        .into_iter()
        .map(|entry| entry.id)
        .collect();
    assert_eq!(about_ws01, [ids[2], ids[0]]);
    let page = AuditFilter {
        before_id: Some(ids[2]),
        limit: 1,
        ..AuditFilter::default()
    };
    let older = audit::list(&db, &page).await.unwrap();
    assert_eq!(older.len(), 1);
    assert_eq!(older[0].id, ids[1]);

    let edit = sqlx::query("UPDATE audit_log SET actor = 'mallory'")
        .execute(db.pool())
        .await;
    assert!(edit.unwrap_err().to_string().contains("append-only"));
}

// ---------------------------------------------------------------------------------------------
// Concurrency (R19), backup (R20, R7), retention, secure delete (K2)

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_report_writes_and_list_reads_never_fail_with_database_is_locked() {
    const WRITERS: u64 = 8;
    const REPORTS_PER_WRITER: u64 = 3;
    const EVENTS: usize = 500;
    let (_dir, db) = open_temp().await;
    let mut nodes_by_writer = Vec::new();
    for writer in 0..WRITERS {
        nodes_by_writer.push(approved_node(&db, &format!("ws-{writer:02}")).await);
    }
    let db = Arc::new(db);
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));

    let mut writers = tokio::task::JoinSet::new();
    for (writer, node) in nodes_by_writer.into_iter().enumerate() {
        let db = Arc::clone(&db);
        writers.spawn(async move {
            for n in 0..REPORTS_PER_WRITER {
                let run = writer as u64 * 1_000 + n;
                let sent = report(&node, run, T0 + n as i64, EVENTS);
                let outcome = runs::insert_report(&*db, &sent, Timestamp(T0 + 100)).await?;
                assert_eq!(outcome, InsertOutcome::Inserted);
                nodes::touch_last_seen(&*db, &node, Timestamp(T0 + 100 + n as i64)).await?;
            }
            Ok::<_, DbError>(())
        });
    }
    let mut readers = tokio::task::JoinSet::new();
    for reader in 0..8_u64 {
        let db = Arc::clone(&db);
        let done = Arc::clone(&done);
        readers.spawn(async move {
            let mut reads = 0_u32;
            while !done.load(std::sync::atomic::Ordering::Relaxed) || reads == 0 {
                let page = runs::list(&*db, &RunFilter::default(), Page::first(20)).await?;
                if let Some(run) = page.runs.first() {
                    let detail = runs::get_with_events(&*db, &run.run_id).await?.unwrap();
                    assert_eq!(detail.events.len(), EVENTS);
                }
                if reader % 2 == 0 {
                    nodes::list(&*db, None).await?;
                }
                reads += 1;
            }
            Ok::<_, DbError>(reads)
        });
    }
    while let Some(result) = writers.join_next().await {
        result.unwrap().unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    while let Some(result) = readers.join_next().await {
        assert!(result.unwrap().unwrap() > 0);
    }
    let runs_written = (WRITERS * REPORTS_PER_WRITER) as i64;
    assert_eq!(count(&db, "runs").await, runs_written);
    assert_eq!(
        count(&db, "resource_events").await,
        runs_written * EVENTS as i64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_copy_passes_its_integrity_check_and_opens_with_all_data() {
    let (dir, db) = open_temp().await;
    let node = approved_node(&db, "ws-01").await;
    keys::add(&db, &node, &new_key("k"), Timestamp(T0))
        .await
        .unwrap();
    tokens::create(
        &db,
        &new_token("tmpl", "secret", T0 + 100, 3),
        Timestamp(T0),
    )
    .await
    .unwrap();
    catalogs::insert(&db, &catalog(&node, 1_750_000_000_000))
        .await
        .unwrap();
    state::save(&db, &node, &sample_state()).await.unwrap();
    runs::insert_report(&db, &report(&node, 1, T0, 50), Timestamp(T0))
        .await
        .unwrap();

    // Reports keep arriving while the backup runs: the copy is a consistent snapshot.
    let db = Arc::new(db);
    let writer = {
        let db = Arc::clone(&db);
        let node = node.clone();
        tokio::spawn(async move {
            for n in 2..40 {
                runs::insert_report(&*db, &report(&node, n, T0 + n as i64, 50), Timestamp(T0))
                    .await
                    .unwrap();
            }
        })
    };
    let backup = dir.path().join("backup.db");
    db.backup_to(&backup).await.unwrap();
    writer.await.unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&backup).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "backup has mode {mode:o}");
    }

    // Restoring: open the copy as the live database.
    let restored = Db::open(&backup).await.unwrap();
    let restored_node = nodes::get_by_name(&restored, &node).await.unwrap().unwrap();
    assert_eq!(restored_node.status, EnrollmentStatus::Approved);
    assert_eq!(
        restored_node.catalog_serial,
        Some(Serial(1_750_000_000_000))
    );
    assert_eq!(keys::history(&restored, &node).await.unwrap().len(), 1);
    assert!(tokens::find(&restored, "tmpl").await.unwrap().is_some());
    assert_eq!(
        catalogs::latest(&restored, &node)
            .await
            .unwrap()
            .unwrap()
            .serial,
        Serial(1_750_000_000_000)
    );
    assert_eq!(state::load(&restored, &node).await.unwrap(), sample_state());
    let first = runs::get_with_events(&restored, &run_id(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.events.len(), 50);
    // Whatever number of concurrent runs made it into the snapshot, each is whole.
    let runs_copied = count(&restored, "runs").await;
    assert!((1..=39).contains(&runs_copied));
    assert_eq!(count(&restored, "resource_events").await, runs_copied * 50);
    // R7: after a restore the serial floor is the restored one; a new catalog moves above it.
    catalogs::insert(&restored, &catalog(&node, 1_750_000_000_001))
        .await
        .unwrap();
    restored.close().await;
    assert_eq!(count(&db, "runs").await, 39);
}

#[tokio::test]
async fn backup_refuses_to_overwrite_an_existing_file() {
    let (dir, db) = open_temp().await;
    let target = dir.path().join("yesterday.db");
    std::fs::write(&target, b"yesterday's backup").unwrap();
    let error = db.backup_to(&target).await.unwrap_err();
    assert!(matches!(error, DbError::Io { .. }), "{error:?}");
    assert_eq!(std::fs::read(&target).unwrap(), b"yesterday's backup");
}

#[tokio::test]
async fn retention_prunes_old_runs_in_batches_and_keeps_newer_ones() {
    let (_dir, db) = open_temp().await;
    let node = approved_node(&db, "ws-01").await;
    for n in 0..25_u64 {
        let received = Timestamp(T0 + n as i64);
        runs::insert_report(&db, &report(&node, n, T0, 3), received)
            .await
            .unwrap();
    }
    for n in 100..105_u64 {
        runs::insert_report(&db, &report(&node, n, T0, 3), Timestamp(T0 + 10_000))
            .await
            .unwrap();
    }
    let cutoff = Timestamp(T0 + 5_000);

    // One batch deletes the oldest `batch_size` runs and their events.
    assert_eq!(db.prune_runs_batch(cutoff, 10).await.unwrap(), 10);
    assert_eq!(runs::get_with_events(&db, &run_id(9)).await.unwrap(), None);
    assert!(runs::get_with_events(&db, &run_id(10))
        .await
        .unwrap()
        .is_some());
    assert_eq!(count(&db, "resource_events").await, 20 * 3);

    assert_eq!(db.prune_runs_older_than(cutoff, 4).await.unwrap(), 15);
    assert_eq!(db.prune_runs_older_than(cutoff, 4).await.unwrap(), 0);
    let left = runs::list(&db, &RunFilter::default(), Page::first(100))
        .await
        .unwrap();
    let mut left: Vec<RunId> = left.runs.into_iter().map(|run| run.run_id).collect();
    left.sort();
    let mut newer: Vec<RunId> = (100..105).map(run_id).collect();
    newer.sort();
    assert_eq!(left, newer);
    assert_eq!(count(&db, "resource_events").await, 5 * 3);
}

#[tokio::test]
async fn a_deleted_run_leaves_no_bytes_in_the_database_file() {
    let (_dir, db) = open_temp().await;
    let node = approved_node(&db, "ws-01").await;
    let canary = "CANARY-4f1c2a9e-deleted-report";
    let mut sent = report(&node, 1, T0, 5);
    sent.message = Some(format!("run message {canary}"));
    sent.events[2].message = Some(format!("event message {canary}"));
    // Large enough to spill into overflow pages.
    sent.events[0].diff = Some(format!("+{canary}\n").repeat(400));
    runs::insert_report(&db, &sent, Timestamp(T0))
        .await
        .unwrap();
    runs::insert_report(&db, &report(&node, 2, T0, 5), Timestamp(T0 + 10_000))
        .await
        .unwrap();

    db.checkpoint().await.unwrap();
    assert!(
        database_files_contain(db.path(), canary),
        "sanity: the canary was written"
    );

    assert_eq!(
        db.prune_runs_older_than(Timestamp(T0 + 1), 100)
            .await
            .unwrap(),
        1
    );
    db.checkpoint().await.unwrap();
    assert!(!database_files_contain(db.path(), canary));
    assert!(runs::get_with_events(&db, &run_id(2))
        .await
        .unwrap()
        .is_some());
}
