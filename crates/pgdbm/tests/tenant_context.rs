//! Tenant contexts for row-level security: `with_settings`, `with_role` and `tx.set_local`
//! apply to each call's own transaction and end with it.

mod common;

use common::*;
use pgdbm::AsyncDatabaseManager;

/// A table with a row-level security policy by `app.tenant_id`, readable by `role`.
async fn rls_table(db: &AsyncDatabaseManager, role: &str) {
    db.execute(
        &format!(
            "CREATE TABLE {{{{tables.items}}}} (tenant_id int NOT NULL, name text NOT NULL); \
             INSERT INTO {{{{tables.items}}}} SELECT t, 'item ' || i \
               FROM generate_series(1, 2) t, generate_series(1, 5) i; \
             ALTER TABLE {{{{tables.items}}}} ENABLE ROW LEVEL SECURITY; \
             CREATE POLICY by_tenant ON {{{{tables.items}}}} \
               USING (tenant_id = current_setting('app.tenant_id')::int) \
               WITH CHECK (tenant_id = current_setting('app.tenant_id')::int); \
             GRANT USAGE ON SCHEMA {{{{schema}}}} TO \"{role}\"; \
             GRANT SELECT, INSERT ON {{{{tables.items}}}} TO \"{role}\""
        ),
        &[],
    )
    .await
    .unwrap();
}

fn make_role() -> (String, RoleGuard) {
    let role = unique("tenant_reader");
    (role.clone(), RoleGuard(role))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tenants_interleaved_never_see_each_others_rows() {
    let (role, _r) = make_role();
    admin(&format!("CREATE ROLE \"{role}\" NOLOGIN")).await;
    let (db, _g) = schema_db_with(pool_of(2)).await;
    rls_table(&db, &role).await;
    let mut tasks = Vec::new();
    for tenant in [1i32, 2] {
        let db = db.clone();
        let role = role.clone();
        tasks.push(tokio::spawn(async move {
            let id = tenant.to_string();
            let view = db.with_role(&role).with_settings(&[("app.tenant_id", &id)]);
            for i in 0..500 {
                let rows = view
                    .fetch_all("SELECT tenant_id FROM {{tables.items}}", &[])
                    .await
                    .unwrap();
                assert_eq!(rows.len(), 5, "tenant {tenant}, request {i}");
                for r in &rows {
                    assert_eq!(r.get::<i32>("tenant_id").unwrap(), tenant);
                }
                // The plain manager, between the tenant's calls: the pool's own role, and no
                // tenant setting left on the session.
                if i % 5 == 0 {
                    let who: Option<String> = db
                        .fetch_value(
                            "SELECT current_user::text || '/' || \
                             coalesce(current_setting('app.tenant_id', true), '')",
                            &[],
                        )
                        .await
                        .unwrap();
                    assert_eq!(who.as_deref(), Some("postgres/"), "request {i}");
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test]
async fn a_view_transaction_and_set_local_apply_the_context_until_the_end() {
    let (role, _r) = make_role();
    admin(&format!("CREATE ROLE \"{role}\" NOLOGIN")).await;
    let (db, _g) = schema_db_with(pool_of(1)).await;
    rls_table(&db, &role).await;
    let view = db.with_role(&role).with_settings(&[("app.tenant_id", "2")]);
    let tx = view.transaction().await.unwrap();
    let who: Option<String> = tx
        .fetch_value("SELECT current_user::text", &[])
        .await
        .unwrap();
    assert_eq!(who.as_deref(), Some(role.as_str()));
    tx.execute("INSERT INTO {{tables.items}} VALUES (2, 'new')", &[])
        .await
        .unwrap();
    // The policy's WITH CHECK refuses another tenant's row.
    let sp = tx.transaction().await.unwrap();
    let err = sp
        .execute("INSERT INTO {{tables.items}} VALUES (1, 'other')", &[])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("42501"), "{err}");
    sp.rollback().await.unwrap();
    tx.commit().await.unwrap();
    let after: Option<String> = db
        .fetch_value("SELECT current_user::text", &[])
        .await
        .unwrap();
    assert_eq!(after.as_deref(), Some("postgres"));

    // set_local on a plain transaction ends with it.
    let tx = db.transaction().await.unwrap();
    tx.set_local("app.tenant_id", "1").await.unwrap();
    let seen: Option<String> = tx
        .fetch_value("SELECT current_setting('app.tenant_id')", &[])
        .await
        .unwrap();
    assert_eq!(seen.as_deref(), Some("1"));
    tx.commit().await.unwrap();
    let gone: Option<String> = db
        .fetch_value(
            "SELECT coalesce(current_setting('app.tenant_id', true), '')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(gone.as_deref(), Some(""));
}

#[tokio::test]
async fn a_failing_call_on_a_view_writes_nothing_and_a_bad_role_is_a_clear_error() {
    let (role, _r) = make_role();
    admin(&format!("CREATE ROLE \"{role}\" NOLOGIN")).await;
    let (db, _g) = schema_db_with(pool_of(1)).await;
    rls_table(&db, &role).await;
    let view = db.with_settings(&[("app.tenant_id", "1")]);
    // Two rows in one statement, the second failing: the call's own transaction rolls back.
    let err = view
        .execute(
            "INSERT INTO {{tables.items}} VALUES (1, 'kept?'), (1, NULL)",
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("23502"), "{err}");
    let n: Option<i64> = db
        .fetch_value(
            "SELECT count(*) FROM {{tables.items}} WHERE name = 'kept?'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(n, Some(0));
    // Writes through a view commit.
    let wrote = view
        .execute("INSERT INTO {{tables.items}} VALUES (1, 'kept')", &[])
        .await
        .unwrap();
    assert_eq!(wrote, 1);
    let err = db
        .with_role("no_such_role_anywhere")
        .fetch_all("SELECT 1", &[])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("22023"), "{err}");
    assert!(err.to_string().contains("no_such_role_anywhere"), "{err}");
    // The connection is fine afterwards.
    assert_eq!(
        db.fetch_value::<i32>("SELECT 1", &[]).await.unwrap(),
        Some(1)
    );
    // A stream from a view reads under the context, read-only.
    use futures_util::TryStreamExt;
    let reader = view.with_role(&role);
    let rows: Vec<pgdbm::Record> = reader
        .fetch_stream("SELECT tenant_id FROM {{tables.items}}", &[])
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(rows.len(), 6);
    assert!(rows.iter().all(|r| r.get::<i32>(0).unwrap() == 1));
    let write: Result<Vec<pgdbm::Record>, _> = async {
        reader
            .fetch_stream(
                "INSERT INTO {{tables.items}} VALUES (1, 'x') RETURNING 1",
                &[],
            )
            .await?
            .try_collect()
            .await
    }
    .await;
    assert_eq!(write.unwrap_err().code(), Some("25006"));
}
