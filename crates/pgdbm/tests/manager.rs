//! The manager against the real server: both patterns, lifecycle, every query method, templates.

mod common;

use common::*;
use pgdbm::{AsyncDatabaseManager, DatabaseConfig, Error, ErrorKind, Record};
use serde::Deserialize;

#[tokio::test]
async fn owned_pool_lifecycle_and_schema_isolation() {
    let (db, _g) = schema_db().await;
    let schema = db.schema().unwrap().to_owned();
    users_table(&db).await;
    // The table was created inside the manager's schema, not in public.
    let n = admin_value(&format!(
        "SELECT count(*) FROM pg_tables WHERE schemaname = '{schema}' AND tablename = 'users'"
    ))
    .await;
    assert_eq!(n.as_deref(), Some("1"));
    assert!(db.table_exists("users").await.unwrap());
    assert!(db.table_exists(&format!("{schema}.users")).await.unwrap());
    assert!(!db.table_exists("nope").await.unwrap());
    assert!(matches!(
        db.table_exists("bad-name").await,
        Err(Error::Schema(_))
    ));
    // An owned pool with a schema sets search_path to "schema", public.
    let path: Option<String> = db.fetch_value("SHOW search_path", &[]).await.unwrap();
    assert_eq!(path.unwrap(), format!("{schema}, public"));
}

#[tokio::test]
async fn using_before_connect_is_a_pool_error() {
    let db = AsyncDatabaseManager::new(config()).unwrap();
    let err = db.fetch_value::<i32>("SELECT 1", &[]).await.unwrap_err();
    assert!(matches!(err, Error::Pool(_)), "{err:?}");
    assert!(err.to_string().contains("connect()"), "{err}");
    let stats = db.get_pool_stats().await.unwrap();
    assert!(!stats.is_connected());
    assert_eq!(stats.size, 0);
}

#[tokio::test]
async fn disconnect_closes_server_connections() {
    let app = unique("app");
    let mut cfg = config();
    cfg.min_connections = 3;
    cfg.server_settings = Some([("application_name".to_string(), app.clone())].into());
    let db = AsyncDatabaseManager::new(cfg).unwrap();
    db.connect().await.unwrap();
    let count = |app: String| async move {
        admin_value(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = '{app}'"
        ))
        .await
        .unwrap()
    };
    assert_eq!(
        count(app.clone()).await,
        "3",
        "min_connections are opened eagerly"
    );
    db.disconnect().await.unwrap();
    let mut left = String::new();
    for _ in 0..50 {
        left = count(app.clone()).await;
        if left == "0" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        left, "0",
        "connections still open on the server after disconnect"
    );
    assert!(matches!(
        db.fetch_value::<i32>("SELECT 1", &[]).await,
        Err(Error::Pool(_))
    ));
    // Connecting again works.
    db.connect().await.unwrap();
    assert_eq!(
        db.fetch_value::<i32>("SELECT 1", &[]).await.unwrap(),
        Some(1)
    );
    db.disconnect().await.unwrap();
}

#[tokio::test]
async fn shared_pool_many_managers() {
    let s1 = unique("sa");
    let s2 = unique("sb");
    let _g1 = SchemaGuard(s1.clone());
    let _g2 = SchemaGuard(s2.clone());
    let cfg = DatabaseConfig {
        schema: Some("ignored_here".into()),
        ..config()
    };
    let before = cfg.clone();
    let pool = AsyncDatabaseManager::create_shared_pool(&cfg)
        .await
        .unwrap();
    assert_eq!(cfg, before, "the caller's config is never mutated");
    let a = AsyncDatabaseManager::from_pool(pool.clone(), Some(&s1)).unwrap();
    let b = AsyncDatabaseManager::from_pool(pool.clone(), Some(&s2)).unwrap();
    // External pools: connect is an error, disconnect a no-op.
    assert!(matches!(a.connect().await, Err(Error::Pool(_))));
    a.disconnect().await.unwrap();
    for (db, s) in [(&a, &s1), (&b, &s2)] {
        db.execute(&format!("CREATE SCHEMA \"{s}\""), &[])
            .await
            .unwrap();
        db.execute(
            "CREATE TABLE {{tables.items}} (id int PRIMARY KEY, owner text)",
            &[],
        )
        .await
        .unwrap();
        db.execute("INSERT INTO {{tables.items}} VALUES (1, $1)", &[s])
            .await
            .unwrap();
    }
    let owner_a: Option<String> = a
        .fetch_value("SELECT owner FROM {{tables.items}}", &[])
        .await
        .unwrap();
    let owner_b: Option<String> = b
        .fetch_value("SELECT owner FROM {{tables.items}}", &[])
        .await
        .unwrap();
    assert_eq!(owner_a.as_deref(), Some(s1.as_str()));
    assert_eq!(owner_b.as_deref(), Some(s2.as_str()));
    // The shared pool pins a neutral search_path: unqualified names fail loudly.
    let path: Option<String> = a.fetch_value("SHOW search_path", &[]).await.unwrap();
    assert_eq!(path.as_deref(), Some("pg_catalog"));
    let err = a.fetch_all("SELECT * FROM items", &[]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UndefinedTable);
    // Still usable after the disconnect no-op.
    assert_eq!(
        a.fetch_value::<i32>("SELECT 1", &[]).await.unwrap(),
        Some(1)
    );
    pool.close();
}

#[tokio::test]
async fn shared_pool_refuses_an_overridden_search_path() {
    let cfg = DatabaseConfig {
        init_commands: Some(vec!["SET search_path TO public".into()]),
        ..config()
    };
    let err = AsyncDatabaseManager::create_shared_pool(&cfg)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Connection { .. }), "{err:?}");
    assert!(err.to_string().contains("search_path"), "{err}");
    // Turning the pin off works.
    let cfg = DatabaseConfig {
        shared_pool_search_path: None,
        ..cfg
    };
    let pool = AsyncDatabaseManager::create_shared_pool(&cfg)
        .await
        .unwrap();
    pool.close();
}

#[derive(Debug, Deserialize, PartialEq)]
struct User {
    id: i32,
    email: String,
    name: Option<String>,
}

#[tokio::test]
async fn every_query_method() {
    let (db, _g) = schema_db().await;
    users_table(&db).await;

    let id: i32 = db
        .execute_and_return_id(
            "INSERT INTO {{tables.users}} (email, name) VALUES ($1, $2);",
            &[&"a@x.org", &"A"],
        )
        .await
        .unwrap();
    assert_eq!(id, 1);
    // An explicit RETURNING is kept (case-insensitive), not doubled.
    let email: String = db
        .execute_and_return_id(
            "INSERT INTO {{tables.users}} (email) VALUES ($1) returning email",
            &[&"b@x.org"],
        )
        .await
        .unwrap();
    assert_eq!(email, "b@x.org");

    let n = db
        .executemany(
            "INSERT INTO {{tables.users}} (email, name) VALUES ($1, $2)",
            vec![("c@x.org", "C"), ("d@x.org", "D")],
        )
        .await
        .unwrap();
    assert_eq!(n, 2);

    let count: Option<i64> = db
        .fetch_value("SELECT count(*) FROM {{tables.users}}", &[])
        .await
        .unwrap();
    assert_eq!(count, Some(4));
    let name: Option<String> = db
        .fetch_value_at(
            "SELECT email, name FROM {{tables.users}} WHERE id = $1",
            &[&id],
            1,
        )
        .await
        .unwrap();
    assert_eq!(name.as_deref(), Some("A"));
    // None for no row, and None for NULL.
    let none: Option<String> = db
        .fetch_value("SELECT name FROM {{tables.users}} WHERE id = -1", &[])
        .await
        .unwrap();
    assert_eq!(none, None);
    let null: Option<String> = db
        .fetch_value("SELECT name FROM {{tables.users}} WHERE id = 2", &[])
        .await
        .unwrap();
    assert_eq!(null, None);
    let bad_col = db
        .fetch_value_at::<String>("SELECT 1", &[], 3)
        .await
        .unwrap_err();
    assert!(matches!(bad_col, Error::Decode { .. }), "{bad_col:?}");

    let row: Record = db
        .fetch_one("SELECT * FROM {{tables.users}} WHERE id = $1", &[&id])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        row.columns().collect::<Vec<_>>(),
        ["id", "email", "name", "age"]
    );
    assert_eq!(row.get::<String>("email").unwrap(), "a@x.org");
    assert_eq!(row.get::<i32>(0).unwrap(), 1);
    assert_eq!(row.get::<Option<i32>>("age").unwrap(), None);
    let wrong = row.get::<i64>("id").unwrap_err();
    match &wrong {
        Error::Decode {
            column, pg_type, ..
        } => {
            assert_eq!(column, "id");
            assert_eq!(pg_type, "int4");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        row.get::<i32>("missing"),
        Err(Error::Decode { .. })
    ));
    assert!(db
        .fetch_one("SELECT * FROM {{tables.users}} WHERE id = -1", &[])
        .await
        .unwrap()
        .is_none());

    let rows = db
        .fetch_all("SELECT * FROM {{tables.users}} ORDER BY id", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 4);
    let json = serde_json::to_value(&rows[0]).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"id": 1, "email": "a@x.org", "name": "A", "age": null})
    );

    let u: Option<User> = db
        .fetch_as_model("SELECT * FROM {{tables.users}} WHERE id = $1", &[&id])
        .await
        .unwrap();
    assert_eq!(
        u,
        Some(User {
            id: 1,
            email: "a@x.org".into(),
            name: Some("A".into())
        })
    );
    let all: Vec<User> = db
        .fetch_all_as_model("SELECT * FROM {{tables.users}} ORDER BY id", &[])
        .await
        .unwrap();
    assert_eq!(all.len(), 4);
    assert_eq!(all[1].name, None);
    let none: Option<User> = db
        .fetch_as_model("SELECT * FROM {{tables.users}} WHERE id = -1", &[])
        .await
        .unwrap();
    assert!(none.is_none());

    let copied = db
        .copy_records_to_table(
            "users",
            vec![("e@x.org", "E"), ("f@x.org", "F")],
            Some(&["email", "name"]),
        )
        .await
        .unwrap();
    assert_eq!(copied, 2);
    let deleted = db
        .execute(
            "DELETE FROM {{tables.users}} WHERE email LIKE $1",
            &[&"%f@x.org"],
        )
        .await
        .unwrap();
    assert_eq!(deleted, 1);

    // Raw connection.
    let conn = db.acquire().await.unwrap();
    let r = conn.query_one("SELECT 41 + 1", &[]).await.unwrap();
    assert_eq!(r.get::<_, i32>(0), 42);
    assert!(conn.backend_pid() > 0);
}

#[tokio::test]
async fn execute_without_params_runs_a_script() {
    let (db, _g) = schema_db().await;
    db.execute(
        "CREATE TABLE {{tables.a}} (id int); CREATE TABLE {{tables.b}} (id int); INSERT INTO {{tables.a}} VALUES (1), (2)",
        &[],
    )
    .await
    .unwrap();
    assert!(db.table_exists("b").await.unwrap());
    assert_eq!(
        db.fetch_value::<i64>("SELECT count(*) FROM {{tables.a}}", &[])
            .await
            .unwrap(),
        Some(2)
    );
}

#[tokio::test]
async fn templates_render_and_camel_case_schema_is_quoted() {
    let schema = unique("CamelCase");
    let _g = SchemaGuard(schema.clone());
    let db = AsyncDatabaseManager::new(DatabaseConfig {
        schema: Some(schema.clone()),
        ..config()
    })
    .unwrap();
    assert_eq!(
        db.prepare_query("SELECT * FROM {{tables.users}}").unwrap(),
        format!("SELECT * FROM \"{schema}\".users")
    );
    assert_eq!(
        db.prepare_query("SELECT {{schema}}").unwrap(),
        format!("SELECT \"{schema}\"")
    );
    assert_eq!(
        db.prepare_query("SELECT * FROM {{tables.other.t}}")
            .unwrap(),
        "SELECT * FROM \"other\".t"
    );
    db.connect().await.unwrap();
    users_table(&db).await;
    db.execute(
        "INSERT INTO {{tables.users}} (email) VALUES ($1)",
        &[&"x@y"],
    )
    .await
    .unwrap();
    assert!(db.table_exists("users").await.unwrap());
    let schema_exists = admin_value(&format!(
        "SELECT count(*) FROM pg_namespace WHERE nspname = '{schema}'"
    ))
    .await;
    assert_eq!(
        schema_exists.as_deref(),
        Some("1"),
        "mixed-case schema created with its exact name"
    );
    // Malformed placeholders never reach the server.
    for bad in [
        "SELECT * FROM {{tables.bad; DROP.users}}",
        "SELECT * FROM {{tables.a-b}}",
        "SELECT {{schema",
    ] {
        assert!(
            matches!(db.execute(bad, &[]).await, Err(Error::Schema(_))),
            "{bad}"
        );
    }
    let no_schema = AsyncDatabaseManager::new(config()).unwrap();
    assert_eq!(
        no_schema
            .prepare_query("SELECT * FROM {{tables.users}}")
            .unwrap(),
        "SELECT * FROM users"
    );
    assert_eq!(
        no_schema
            .prepare_query("SELECT * FROM {{schema}}.users")
            .unwrap(),
        "SELECT * FROM users"
    );
}

#[tokio::test]
async fn errors_carry_sqlstate_and_portable_kinds() {
    let (db, _g) = schema_db().await;
    users_table(&db).await;
    db.execute(
        "CREATE TABLE {{tables.posts}} (id int, user_id int REFERENCES {{tables.users}}(id))",
        &[],
    )
    .await
    .unwrap();
    db.execute(
        "INSERT INTO {{tables.users}} (email) VALUES ($1)",
        &[&"a@x"],
    )
    .await
    .unwrap();
    let e = db
        .execute(
            "INSERT INTO {{tables.users}} (email) VALUES ($1)",
            &[&"a@x"],
        )
        .await
        .unwrap_err();
    assert!(e.is_unique_violation());
    assert_eq!(e.code(), Some("23505"));
    assert_eq!(e.constraint(), Some("users_email_key"));
    assert!(e.detail().unwrap().contains("a@x"));
    assert!(e.to_string().contains("23505"), "{e}");
    let e = db
        .execute("INSERT INTO {{tables.posts}} VALUES (1, 999)", &[])
        .await
        .unwrap_err();
    assert!(e.is_foreign_key_violation());
    let e = db
        .execute("INSERT INTO {{tables.users}} (email) VALUES (NULL)", &[])
        .await
        .unwrap_err();
    assert!(e.is_not_null_violation());
    let e = db
        .execute(
            "INSERT INTO {{tables.users}} (email, age) VALUES ('z', -1)",
            &[],
        )
        .await
        .unwrap_err();
    assert!(e.is_check_violation());
    let e = db.execute("SELEC 1", &[]).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::SyntaxError);
    match &e {
        Error::Query { sql, .. } => assert_eq!(sql, "SELEC 1"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn wrong_parameters_are_precise_errors_and_the_pool_stays_healthy() {
    let (db, _g) = schema_db_with(|c| c.max_connections = 1).await;
    users_table(&db).await;
    let e = db
        .execute(
            "INSERT INTO {{tables.users}} (email) VALUES ($1)",
            &[&"a", &"b"],
        )
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Query { .. }), "{e:?}");
    assert!(e.to_string().contains("parameters"), "{e}");
    let e = db
        .execute(
            "INSERT INTO {{tables.users}} (email) VALUES ($1)",
            &[&5_i64],
        )
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Query { .. }), "{e:?}");
    // A long parameter value is never echoed.
    let secret = "s3cr3t-".repeat(10);
    let e = db
        .execute(
            "INSERT INTO {{tables.users}} (id, email) VALUES ($1, $2)",
            &[&"x", &secret],
        )
        .await
        .unwrap_err();
    let shown = format!("{e} {e:?}");
    assert!(!shown.contains(&secret), "{shown}");
    // The single connection is still fine.
    assert_eq!(
        db.fetch_value::<i32>("SELECT 1", &[]).await.unwrap(),
        Some(1)
    );
}

#[tokio::test]
async fn pool_stats_have_the_seed_keys() {
    let (db, _g) = schema_db_with(|c| {
        c.min_connections = 2;
        c.max_connections = 5;
    })
    .await;
    let held = db.acquire().await.unwrap();
    let stats = db.get_pool_stats().await.unwrap();
    assert!(stats.is_connected());
    assert_eq!(stats.status.to_string(), "connected");
    assert_eq!((stats.min_size, stats.max_size), (2, 5));
    assert_eq!(stats.size, 2);
    assert_eq!(stats.used_size, 1, "{stats:?}");
    assert_eq!(stats.free_size, 1);
    assert_eq!(stats.database, "postgres");
    assert_eq!(stats.schema.as_deref(), db.schema());
    assert!(stats.pid.unwrap() > 0);
    assert!(stats.version.as_deref().unwrap().starts_with("PostgreSQL"));
    assert!(stats.acquire_count >= 2);
    assert!((stats.usage() - 0.5).abs() < 1e-9);
    let json = serde_json::to_value(&stats).unwrap();
    for key in [
        "status",
        "min_size",
        "max_size",
        "size",
        "free_size",
        "used_size",
        "database",
        "schema",
        "pid",
        "version",
    ] {
        assert!(json.get(key).is_some(), "missing {key}");
    }
    drop(held);
}

#[tokio::test]
async fn concurrent_tasks_share_one_manager() {
    let (db, _g) = schema_db_with(|c| c.max_connections = 3).await;
    db.execute("CREATE TABLE {{tables.n}} (v int)", &[])
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            db.execute("INSERT INTO {{tables.n}} VALUES ($1)", &[&i])
                .await
                .unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let sum: Option<i64> = db
        .fetch_value("SELECT sum(v) FROM {{tables.n}}", &[])
        .await
        .unwrap();
    assert_eq!(sum, Some((0..20).sum()));
    let stats = db.get_pool_stats().await.unwrap();
    assert!(stats.size <= 3);
}

#[tokio::test]
async fn streaming_keeps_rows_flowing() {
    use futures_util::TryStreamExt;
    let (db, _g) = schema_db().await;
    let stream = db
        .fetch_stream("SELECT g FROM generate_series(1, 5000) g", &[])
        .await
        .unwrap();
    let rows: Vec<Record> = stream.try_collect().await.unwrap();
    assert_eq!(rows.len(), 5000);
    assert_eq!(rows[4999].get::<i32>(0).unwrap(), 5000);
}

#[tokio::test]
async fn a_closed_shared_pool_is_a_pool_error() {
    let pool = AsyncDatabaseManager::create_shared_pool(&config())
        .await
        .unwrap();
    let db = AsyncDatabaseManager::from_pool(pool.clone(), None).unwrap();
    assert_eq!(
        db.fetch_value::<i32>("SELECT 1", &[]).await.unwrap(),
        Some(1)
    );
    pool.close();
    assert!(pool.is_closed());
    let err = db.fetch_value::<i32>("SELECT 1", &[]).await.unwrap_err();
    assert!(matches!(err, Error::Pool(_)), "{err:?}");
    assert!(err.to_string().contains("closed"), "{err}");
    assert!(matches!(db.transaction().await, Err(Error::Pool(_))));
    let stats = db.get_pool_stats().await.unwrap();
    assert!(!stats.is_connected());
}

#[tokio::test]
async fn connect_with_an_existing_schema_needs_no_create_privilege() {
    // A least-privilege role: LOGIN, USAGE on its (pre-created) schema, no CREATE on the
    // database. Guards drop in reverse order: the schema (and its grant) before the role.
    let role = unique("lp");
    let _role = RoleGuard(role.clone());
    admin(&format!("CREATE ROLE \"{role}\" LOGIN")).await;
    let schema = unique("lps");
    let _schema = SchemaGuard(schema.clone());
    admin(&format!(
        "CREATE SCHEMA \"{schema}\"; GRANT USAGE ON SCHEMA \"{schema}\" TO \"{role}\""
    ))
    .await;
    let premise = admin_value(&format!(
        "SELECT has_database_privilege('{role}', current_database(), 'CREATE')::text"
    ))
    .await;
    assert_eq!(
        premise.as_deref(),
        Some("false"),
        "the role must lack CREATE"
    );

    let db = AsyncDatabaseManager::new(DatabaseConfig {
        connection_string: Some(url_as(&role)),
        schema: Some(schema.clone()),
        ..config()
    })
    .unwrap();
    db.connect()
        .await
        .unwrap_or_else(|e| panic!("connect as a least-privilege role failed: {e}"));
    let who: Option<String> = db
        .fetch_value("SELECT current_user::text", &[])
        .await
        .unwrap();
    assert_eq!(who.as_deref(), Some(role.as_str()));
    let path: Option<String> = db.fetch_value("SHOW search_path", &[]).await.unwrap();
    assert_eq!(path.unwrap(), format!("{schema}, public"));
    db.disconnect().await.unwrap();

    // A missing schema is still created when the role may do so (the superuser here).
    let missing = unique("lpm");
    let _missing = SchemaGuard(missing.clone());
    let db = AsyncDatabaseManager::new(DatabaseConfig {
        schema: Some(missing.clone()),
        ..config()
    })
    .unwrap();
    db.connect().await.unwrap();
    let n = admin_value(&format!(
        "SELECT count(*) FROM pg_namespace WHERE nspname = '{missing}'"
    ))
    .await;
    assert_eq!(n.as_deref(), Some("1"));
    db.disconnect().await.unwrap();
}

#[tokio::test]
async fn execute_and_return_id_ignores_returning_in_literals_and_comments() {
    let (db, _g) = schema_db().await;
    db.execute(
        "CREATE TABLE {{tables.notes}} (id serial PRIMARY KEY, note text, \"returning\" int)",
        &[],
    )
    .await
    .unwrap();
    let count = || async {
        db.fetch_value::<i64>("SELECT count(*) FROM {{tables.notes}}", &[])
            .await
            .unwrap()
            .unwrap()
    };
    for (k, sql) in [
        "INSERT INTO {{tables.notes}} (note) VALUES ('returning soon')",
        "INSERT INTO {{tables.notes}} (note) VALUES ($$returning$$)",
        "INSERT INTO {{tables.notes}} (note) VALUES (E'it\\'s returning')",
        "INSERT INTO {{tables.notes}} (\"returning\") VALUES (1)",
        "INSERT INTO {{tables.notes}} (note) /* returning */ VALUES ('x')",
        "INSERT INTO {{tables.notes}} (note) VALUES ('x') -- returning later",
        // A RETURNING inside a CTE is not the statement's own clause.
        "WITH d AS (DELETE FROM {{tables.notes}} WHERE false RETURNING id) \
         INSERT INTO {{tables.notes}} (note) SELECT 'w'",
    ]
    .into_iter()
    .enumerate()
    {
        let id: i32 = db
            .execute_and_return_id(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert_eq!(id, k as i32 + 1, "{sql}");
        assert_eq!(count().await, k as i64 + 1, "{sql}: one row per call");
    }
    // A top-level RETURNING of its own is kept.
    let note: String = db
        .execute_and_return_id(
            "INSERT INTO {{tables.notes}} (note) VALUES ('z') RETURNING note",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(note, "z");
}

#[tokio::test]
async fn a_parameter_encoding_error_shows_its_cause() {
    let (db, _g) = schema_db().await;
    users_table(&db).await;
    let e = db
        .execute(
            "INSERT INTO {{tables.users}} (email, age) VALUES ($1, $2)",
            &[&"a@x", &5_i64],
        )
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(text.contains("error serializing parameter 1"), "{text}");
    assert!(
        text.contains("cannot convert between the Rust type `i64` and the Postgres type `int4`"),
        "{text}"
    );
    assert_eq!(text.matches("error serializing").count(), 1, "{text}");
    assert_eq!(text.matches("cannot convert").count(), 1, "{text}");
    assert!(text.contains("sql: INSERT INTO"), "{text}");
}

#[tokio::test]
async fn raw_client_errors_convert_with_question_mark() {
    let (db, _g) = schema_db().await;
    let conn = db.acquire().await.unwrap();
    async fn raw(client: &tokio_postgres::Client) -> pgdbm::Result<u64> {
        Ok(client.execute("SELEC 1", &[]).await?)
    }
    let e = raw(&conn).await.unwrap_err();
    assert_eq!(e.code(), Some("42601"));
    assert_eq!(e.kind(), ErrorKind::SyntaxError);
    let text = e.to_string();
    assert!(text.contains("42601"), "{text}");
    assert!(!text.contains("sql:"), "no SQL is known here: {text}");
}
