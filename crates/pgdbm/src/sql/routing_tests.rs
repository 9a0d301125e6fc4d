//! The routing verdicts' tests.

use super::*;

#[test]
fn plain_reads() {
    for sql in [
        "SELECT 1",
        "select * from users where id = $1",
        "SELECT count(*) FROM \"app\".users;",
        "SELECT count(*) FROM \"app\".users;  -- done\n",
        "  /* lead */ SELECT a, b FROM t ORDER BY a LIMIT 10 OFFSET 5",
        "WITH x AS (SELECT 1 AS a) SELECT a FROM x",
        "WITH RECURSIVE t(n) AS (VALUES (1) UNION ALL SELECT n + 1 FROM t WHERE n < 5) SELECT sum(n) FROM t",
        "WITH x AS MATERIALIZED (SELECT 1) SELECT * FROM x",
        "VALUES (1, 'a'), (2, 'b')",
        "TABLE users",
        "SELECT 'insert'",
        "SELECT 'delete from t; update x'",
        "select * from \"update\"",
        "SELECT \"insert\" FROM \"delete\" WHERE \"for\" = 1",
        "SELECT $$ INSERT INTO t VALUES (1) $$",
        "SELECT E'it\\'s an update'",
        "SELECT a -- delete everything\nFROM t",
        "SELECT a /* FOR UPDATE */ FROM t",
        "SELECT coalesce(max(id), 0) FROM t WHERE id IN (1, 2) AND EXISTS (SELECT 1)",
        "SELECT lower(email), upper(name), length(name) FROM users",
        "SELECT now(), date_trunc('day', created), extract(epoch FROM created) FROM t",
        "SELECT x::numeric(10, 2), CAST(y AS varchar(20)) FROM t",
        "SELECT jsonb_build_object('a', 1), data->>'k' FROM t",
        "SELECT array_agg(a ORDER BY a), string_agg(b, ',') FILTER (WHERE b <> '') FROM t",
        "SELECT row_number() OVER (PARTITION BY a ORDER BY b) FROM t",
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY x) FROM t",
        "SELECT * FROM generate_series(1, 3) AS g(n)",
        "SELECT * FROM t WHERE a = ANY($1) OR b = ALL(ARRAY[1, 2])",
        "SELECT pg_catalog.count(*) FROM t",
        "SELECT pg_is_in_recovery()",
        "SELECT a FROM t GROUP BY ROLLUP (a)",
        "SELECT deleted_at, updated_by, insert_count FROM t",
    ] {
        assert!(is_plain_read(sql), "should be a plain read: {sql}");
    }
}

#[test]
fn everything_else_goes_to_the_primary() {
    for sql in [
        "",
        "   -- only a comment",
        "SELECT nextval('s')",
        "SELECT currval('s')",
        "SELECT setval('s', 1)",
        "SELECT set_config('a.b', 'c', false)",
        "SELECT pg_advisory_lock(1)",
        "SELECT txid_current()",
        "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
        "WITH u AS (UPDATE t SET a = 1 RETURNING a) SELECT a FROM u",
        "WITH i AS (INSERT INTO t VALUES (1) RETURNING *) SELECT 1",
        "SELECT * FROM t FOR UPDATE",
        "SELECT * FROM t FOR NO KEY UPDATE",
        "select * from t for share",
        "SELECT * FROM t FOR KEY SHARE SKIP LOCKED",
        "SELECT my_func()",
        "SELECT app.lookup(1)",
        "SELECT \"MyFunc\"(1)",
        "SELECT * FROM t, LATERAL my_srf(t.id)",
        "SELECT a INTO new_table FROM t",
        "INSERT INTO t VALUES (1)",
        "UPDATE t SET a = 1",
        "DELETE FROM t",
        "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE",
        "COPY t TO STDOUT",
        "CALL proc()",
        "EXPLAIN ANALYZE SELECT 1",
        "SET search_path = x",
        "SHOW search_path",
        "BEGIN",
        "SELECT 1; SELECT 2",
        "SELECT 1; DELETE FROM t",
        "LOCK TABLE t",
        "SELECT t.update FROM t",
        "SELECT range(1, 2)",
        "SELECT rows(t) FROM t",
        "SELECT filter(a) FROM t",
        "SELECT * FROM t WHERE x = cube(1)",
        "SELECT 'unterminated",
        "SELECT \"unterminated",
        "SELECT $$ unterminated",
        "SELECT $a$ x $a",
        "SELECT E'it\\'s",
        "SELECT 1 /* unterminated",
        "(SELECT 1)",
    ] {
        assert!(!is_plain_read(sql), "should go to the primary: {sql}");
    }
}

#[test]
fn attribute_notation_calls_go_to_the_primary() {
    let v = Verdicts::default();
    // Unknown functions: any `x.name` may be a call.
    assert!(!v.is_plain_read("SELECT j.id FROM jobs j"));
    v.set_attribute_calls("claim\tother");
    assert!(!v.is_plain_read("SELECT j.claim FROM jobs j"));
    assert!(!v.is_plain_read("SELECT j.\"claim\" FROM jobs j"));
    assert!(v.is_plain_read("SELECT j.id, j.name FROM \"app\".jobs j"));
    // A new function of that name turns a cached verdict around.
    v.set_attribute_calls("claim\tother\tname");
    assert!(!v.is_plain_read("SELECT j.id, j.name FROM \"app\".jobs j"));
    v.not_for_replicas("SELECT 1");
    assert!(!v.is_plain_read("SELECT 1"));
}

#[test]
fn verdicts_are_cached_and_bounded() {
    let v = Verdicts::default();
    v.set_attribute_calls("");
    assert!(v.is_plain_read("SELECT 1"));
    assert!(!v.is_plain_read("SELECT nextval('s')"));
    assert!(v.is_plain_read("SELECT 1"));
    for i in 0..MAX_VERDICTS + 10 {
        v.is_plain_read(&format!("SELECT {i}"));
    }
    assert!(v.map.read().unwrap().len() <= MAX_VERDICTS);
}
