//! `#[pgdbm::test]` and `TestDatabase` with several migration modules, each in its own schema.

use pgdbm::testing::TestDatabase;
use pgdbm::{AsyncDatabaseManager, Error};

const USERS: &str = "tests/fixtures/modules/users";
const ORDERS: &str = "tests/fixtures/modules/orders";

/// `(module_name, filename)` rows of a manager's tracking table.
async fn tracked(db: &AsyncDatabaseManager) -> pgdbm::Result<Vec<(String, String)>> {
    db.fetch_all_as(
        "SELECT module_name::text, filename::text FROM {{tables.schema_migrations}} ORDER BY 2",
        &[],
    )
    .await
}

#[pgdbm::test(migrations = [("users", "tests/fixtures/modules/users"), ("orders", "tests/fixtures/modules/orders")])]
async fn each_module_is_migrated_into_its_own_schema(
    db: AsyncDatabaseManager,
) -> pgdbm::Result<()> {
    // The manager works in the first module's schema; the others share its pool.
    assert_eq!(db.schema(), Some("users"));
    let orders = AsyncDatabaseManager::from_pool(db.pool()?, Some("orders"))?;
    assert!(db.table_exists("accounts").await?);
    assert!(!db.table_exists("orders").await?);
    assert!(orders.table_exists("orders").await?);
    assert!(!orders.table_exists("accounts").await?);
    // Each schema records its own module's files under the module's name.
    assert_eq!(
        tracked(&db).await?,
        vec![("users".to_owned(), "001_accounts.sql".to_owned())]
    );
    assert_eq!(
        tracked(&orders).await?,
        vec![
            ("orders".to_owned(), "001_orders.sql".to_owned()),
            ("orders".to_owned(), "002_first_order.sql".to_owned()),
        ]
    );
    // The modules were applied in order: orders' seed row points at users' seed row.
    let email: Option<String> = orders
        .fetch_value(
            "SELECT a.email FROM {{tables.orders}} o JOIN {{tables.users.accounts}} a \
             ON a.id = o.account_id",
            &[],
        )
        .await?;
    assert_eq!(email.as_deref(), Some("seed@x"));
    // The foreign key across the schemas holds.
    let e = orders
        .execute(
            "INSERT INTO {{tables.orders}} (account_id, total_cents) VALUES (99, 1)",
            &[],
        )
        .await
        .unwrap_err();
    assert!(e.is_foreign_key_violation(), "{e:?}");
    Ok(())
}

#[pgdbm::test(
    schema = "app",
    migrations = [("users", "tests/fixtures/modules/users"), ("orders", "tests/fixtures/modules/orders")],
    template = false
)]
async fn schema_names_the_managers_schema_and_template_false_migrates_in_place(
    db: AsyncDatabaseManager,
) -> pgdbm::Result<()> {
    assert_eq!(db.schema(), Some("app"));
    let users = AsyncDatabaseManager::from_pool(db.pool()?, Some("users"))?;
    assert_eq!(pgdbm::testing::count_rows(&users, "accounts").await?, 1);
    assert!(db.table_exists("orders.orders").await?);
    Ok(())
}

#[tokio::test]
async fn modules_through_the_builder_and_bad_plans() {
    let dir = |d: &str| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(d);
    let tdb = TestDatabase::builder()
        .module("users", dir(USERS))
        .module("orders", dir(ORDERS))
        .create()
        .await
        .unwrap();
    let orders =
        AsyncDatabaseManager::from_pool(tdb.manager().pool().unwrap(), Some("orders")).unwrap();
    assert_eq!(
        pgdbm::testing::count_rows(&orders, "orders").await.unwrap(),
        1
    );
    tdb.cleanup().await.unwrap();

    let refused = |b: pgdbm::testing::TestDatabaseBuilder| async move {
        match b.create().await {
            Err(Error::TestDatabase(msg)) => msg,
            other => panic!("expected a TestDatabase error, got {other:?}"),
        }
    };
    let msg = refused(
        TestDatabase::builder()
            .module("users", dir(USERS))
            .module("users", dir(ORDERS)),
    )
    .await;
    assert!(
        msg.contains("two migration sets for schema \"users\""),
        "{msg}"
    );
    let msg = refused(
        TestDatabase::builder()
            .schema("users")
            .migrations(dir(ORDERS))
            .module("users", dir(USERS)),
    )
    .await;
    assert!(msg.contains("\"users\""), "{msg}");
    let msg = refused(TestDatabase::builder().module("bad-name", dir(USERS))).await;
    assert!(msg.contains("bad-name"), "{msg}");
    let msg = refused(
        TestDatabase::builder()
            .schema_per_test()
            .module("users", dir(USERS)),
    )
    .await;
    assert!(msg.contains("schema_per_test"), "{msg}");
}
