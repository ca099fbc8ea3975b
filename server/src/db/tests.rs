//! Unit tests of the store's internals: the queries the UI depends on use the schema's indexes
//! (no full table scan, no sort of the whole result). Behaviour is tested in `tests/db.rs`.

use steward_protocol::{NodeId, RunStatus, Timestamp};

use crate::db::runs::{self, RunCursor, RunFilter};
use crate::db::{Db, PRUNE_EVENTS_SQL, PRUNE_RUNS_SQL};

async fn open() -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&dir.path().join("steward.db")).await.unwrap();
    (dir, db)
}

/// Rows of `EXPLAIN QUERY PLAN`: id, parent, unused, detail.
type PlanRow = (i64, i64, i64, String);

fn details(rows: Vec<PlanRow>) -> String {
    rows.into_iter()
        .map(|(_, _, _, detail)| detail)
        .collect::<Vec<_>>()
        .join("\n")
}

fn explain(sql: &str) -> String {
    format!("EXPLAIN QUERY PLAN {sql}")
}

/// Fails if the plan scans a table without an index or sorts in a temp b-tree.
fn assert_indexed(plan: &str, expected_index: &str) {
    assert!(
        plan.contains(expected_index),
        "expected {expected_index}:\n{plan}"
    );
    assert!(
        !plan.contains("TEMP B-TREE"),
        "sorts instead of using the index:\n{plan}"
    );
    for line in plan.lines() {
        let scan = line.starts_with("SCAN");
        assert!(!scan || line.contains("USING"), "full table scan:\n{plan}");
    }
}

#[tokio::test]
async fn run_lists_use_an_index_in_order() {
    let (_dir, db) = open().await;
    let cursor = Some(RunCursor {
        started_at: Timestamp(1_700_000_000),
        id: 42,
    });
    let cases = [
        (RunFilter::default(), "runs_by_time"),
        (
            RunFilter {
                node: Some(NodeId("ws-01".into())),
                ..RunFilter::default()
            },
            "runs_by_node_time",
        ),
        (
            RunFilter {
                status: Some(RunStatus::Failed),
                since: Some(Timestamp(1_600_000_000)),
                ..RunFilter::default()
            },
            "runs_by_status_time",
        ),
    ];
    for (filter, index) in &cases {
        for before in [None, cursor] {
            let mut query = runs::list_query("EXPLAIN QUERY PLAN ", filter, before, 51);
            let rows: Vec<PlanRow> = query.build_query_as().fetch_all(db.pool()).await.unwrap();
            assert_indexed(&details(rows), index);
        }
    }
}

#[tokio::test]
async fn event_queries_use_their_indexes() {
    let (_dir, db) = open().await;
    let rows: Vec<PlanRow> = sqlx::query_as(&explain(runs::LAST_EVENT_FOR_RESOURCE_SQL))
        .bind("ws-01")
        .bind("package:git")
        .fetch_all(db.pool())
        .await
        .unwrap();
    let plan = details(rows);
    assert_indexed(&plan, "runs_by_node_time");
    assert_indexed(&plan, "sqlite_autoindex_resource_events_1");

    let rows: Vec<PlanRow> = sqlx::query_as(&explain(runs::EVENTS_WITH_STATUS_SQL))
        .bind("failed")
        .bind(0_i64)
        .bind(50_i64)
        .fetch_all(db.pool())
        .await
        .unwrap();
    assert_indexed(&details(rows), "resource_events_by_status_time");
}

#[tokio::test]
async fn a_runs_notices_are_read_through_its_events_index() {
    let (_dir, db) = open().await;
    let rows: Vec<PlanRow> = sqlx::query_as(&explain(crate::ui::queries::RUN_NOTICES_SQL))
        .bind("00000000-0000-4000-8000-000000000000")
        .fetch_all(db.pool())
        .await
        .unwrap();
    let plan = details(rows);
    assert_indexed(&plan, "sqlite_autoindex_resource_events_1");
    assert_indexed(&plan, "sqlite_autoindex_runs_1");
}

#[tokio::test]
async fn retention_deletes_by_index() {
    let (_dir, db) = open().await;
    for (sql, index) in [
        (PRUNE_RUNS_SQL, "runs_by_received"),
        (PRUNE_EVENTS_SQL, "sqlite_autoindex_resource_events_1"),
    ] {
        let rows: Vec<PlanRow> = sqlx::query_as(&explain(sql))
            .bind(0_i64)
            .bind(100_i64)
            .fetch_all(db.pool())
            .await
            .unwrap();
        assert_indexed(&details(rows), index);
    }
}
