//! Connections survive recreated types and deallocated or discarded statements.

use pgdbm::AsyncDatabaseManager;

use super::{mode_db, Colour, Mood, NAMED, UNNAMED};

fn mode_name(cache: usize) -> &'static str {
    if cache == 0 {
        "unnamed"
    } else {
        "named"
    }
}

async fn mood_table(db: &AsyncDatabaseManager) {
    db.execute(
        "DROP TABLE IF EXISTS {{tables.feelings}}; DROP TYPE IF EXISTS {{tables.mood}}; \
         CREATE TYPE {{tables.mood}} AS ENUM ('sad', 'happy'); \
         CREATE TABLE {{tables.feelings}} (id serial PRIMARY KEY, m {{tables.mood}} NOT NULL)",
        &[],
    )
    .await
    .unwrap();
}

const INSERT_MOOD: &str = "INSERT INTO {{tables.feelings}} (m) VALUES ($1) RETURNING m";

/// Defect 6 (a): a recreated type gets a new OID; cached statements and the driver's type cache
/// must follow it.
#[tokio::test]
async fn recreated_enum_type_is_picked_up() {
    for cache in [NAMED, UNNAMED] {
        let (db, _g) = mode_db(cache, 1).await;
        mood_table(&db).await;
        let m: Option<Mood> = db.fetch_value(INSERT_MOOD, &[&Mood::Happy]).await.unwrap();
        assert_eq!(m, Some(Mood::Happy));
        mood_table(&db).await;
        let m: Option<Mood> = db
            .fetch_value(INSERT_MOOD, &[&Mood::Sad])
            .await
            .unwrap_or_else(|e| panic!("{}: after the type was recreated: {e}", mode_name(cache)));
        assert_eq!(m, Some(Mood::Sad));
        // And a plain read of the column decodes with the new type.
        let all: Vec<pgdbm::Record> = db
            .fetch_all(
                "SELECT m FROM {{tables.feelings}} WHERE m = $1",
                &[&Mood::Sad],
            )
            .await
            .unwrap();
        assert_eq!(all.len(), 1);
    }
}

/// Defect 6 (a) inside a transaction: no retry there, but the next call works.
#[tokio::test]
async fn recreated_type_inside_a_transaction_heals_for_the_next_call() {
    for cache in [NAMED, UNNAMED] {
        let (db, _g) = mode_db(cache, 1).await;
        mood_table(&db).await;
        db.fetch_value::<Mood>(INSERT_MOOD, &[&Mood::Happy])
            .await
            .unwrap();
        mood_table(&db).await;
        let tx = db.transaction().await.unwrap();
        let first = tx.fetch_value::<Mood>(INSERT_MOOD, &[&Mood::Sad]).await;
        if let Err(e) = &first {
            assert!(e.code().is_some(), "{}: {e}", mode_name(cache));
        }
        drop(tx);
        let m = db.fetch_value::<Mood>(INSERT_MOOD, &[&Mood::Sad]).await;
        assert_eq!(m.unwrap(), Some(Mood::Sad), "{}", mode_name(cache));
    }
}

/// Uses `mood` (so the driver prepares its type-lookup statements and we cache statements),
/// runs `reset` on the one connection, then needs a new custom type and an old statement.
async fn survives_reset(cache: usize, reset: &str, through_manager: bool) {
    let what = format!("{} / {reset} / manager {through_manager}", mode_name(cache));
    let (db, _g) = mode_db(cache, 1).await;
    db.add_prepared_statement(
        "pinned",
        "SELECT count(*) FROM {{tables.feelings}} WHERE id > $1",
    )
    .unwrap();
    mood_table(&db).await;
    db.fetch_value::<Mood>(INSERT_MOOD, &[&Mood::Happy])
        .await
        .unwrap();
    let before = db.acquire().await.unwrap().backend_pid();
    if through_manager {
        db.execute(reset, &[]).await.unwrap();
    } else {
        db.acquire()
            .await
            .unwrap()
            .batch_execute(reset)
            .await
            .unwrap();
    }
    // A custom type this connection has never looked up.
    db.execute(
        "CREATE TYPE {{tables.colour}} AS ENUM ('red', 'green'); \
         CREATE TABLE {{tables.paint}} (c {{tables.colour}})",
        &[],
    )
    .await
    .unwrap();
    let c: Option<Colour> = db
        .fetch_value(
            "INSERT INTO {{tables.paint}} (c) VALUES ($1) RETURNING c",
            &[&Colour::Green],
        )
        .await
        .unwrap_or_else(|e| panic!("{what}: new type: {e}"));
    assert_eq!(c, Some(Colour::Green), "{what}");
    // The statement cached before the reset.
    let m: Option<Mood> = db
        .fetch_value(INSERT_MOOD, &[&Mood::Sad])
        .await
        .unwrap_or_else(|e| panic!("{what}: cached statement: {e}"));
    assert_eq!(m, Some(Mood::Sad), "{what}");
    // The registered statement.
    let n: Option<i64> = db
        .fetch_value(
            "SELECT count(*) FROM {{tables.feelings}} WHERE id > $1",
            &[&0_i32],
        )
        .await
        .unwrap_or_else(|e| panic!("{what}: registered statement: {e}"));
    assert_eq!(n, Some(2), "{what}");
    // Named statements that are still cached exist on the server again.
    if cache == NAMED {
        let pinned: Option<i64> = db
            .fetch_value(
                "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE 'SELECT count(*) FROM % WHERE id > $1'",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(
            pinned,
            Some(1),
            "{what}: registered statement not prepared again"
        );
    }
    let _ = before;
}

/// Defect 6 (b): DEALLOCATE ALL removes our statements and the driver's type-lookup statements.
#[tokio::test]
async fn deallocate_all_does_not_break_the_connection() {
    for cache in [NAMED, UNNAMED] {
        for through_manager in [true, false] {
            survives_reset(cache, "DEALLOCATE ALL", through_manager).await;
        }
    }
}

/// Defect 6 (c): the same for DISCARD ALL.
#[tokio::test]
async fn discard_all_does_not_break_the_connection() {
    for cache in [NAMED, UNNAMED] {
        for through_manager in [true, false] {
            survives_reset(cache, "DISCARD ALL", through_manager).await;
        }
    }
}

/// Statements deallocated inside a transaction fail there (no retry), but are cleaned up so
/// that the next call works.
#[tokio::test]
async fn deallocate_inside_a_transaction_heals_for_the_next_call() {
    for cache in [NAMED, UNNAMED] {
        let (db, _g) = mode_db(cache, 1).await;
        mood_table(&db).await;
        db.fetch_value::<Mood>(INSERT_MOOD, &[&Mood::Happy])
            .await
            .unwrap();
        let tx = db.transaction().await.unwrap();
        tx.execute("DEALLOCATE ALL", &[]).await.unwrap();
        tx.execute(
            "CREATE TYPE {{tables.colour}} AS ENUM ('red', 'green'); \
             CREATE TABLE {{tables.paint}} (c {{tables.colour}})",
            &[],
        )
        .await
        .unwrap();
        let _ = tx.fetch_value::<Mood>(INSERT_MOOD, &[&Mood::Sad]).await;
        tx.rollback().await.unwrap();
        let m = db.fetch_value::<Mood>(INSERT_MOOD, &[&Mood::Sad]).await;
        assert_eq!(m.unwrap(), Some(Mood::Sad), "{}", mode_name(cache));
        db.execute(
            "CREATE TYPE {{tables.colour}} AS ENUM ('red', 'green'); \
             CREATE TABLE {{tables.paint}} (c {{tables.colour}})",
            &[],
        )
        .await
        .unwrap();
        let c = db
            .fetch_value::<Colour>(
                "INSERT INTO {{tables.paint}} (c) VALUES ($1) RETURNING c",
                &[&Colour::Red],
            )
            .await;
        assert_eq!(c.unwrap(), Some(Colour::Red), "{}", mode_name(cache));
    }
}
