//! An axum service on pgdbm, the shape to copy when you start one.
//!
//! Two modules, `users` and `orders`, each in its own schema on one shared pool, each applying
//! its own migrations at start-up. Routes:
//!
//! | route | what it shows |
//! |---|---|
//! | `POST /users` | an insert returning the new id; a taken email is `409` |
//! | `GET /users` | a typed listing (`#[derive(FromRow)]`) as JSON |
//! | `POST /users/import` | a COPY bulk import of a JSON array, borrowing from the request |
//! | `POST /orders` | an order in a transaction, each line under its own savepoint |
//! | `GET /orders/export` | every order as NDJSON, streamed straight from the server |
//!
//! ```sh
//! cargo run -p pgdbm --example axum_service             # serves on 127.0.0.1:3000
//! curl -s localhost:3000/users -H 'content-type: application/json' -d '{"email":"ann@x.org","name":"Ann"}'
//! cargo test -p pgdbm --example axum_service            # its tests, one fresh database each
//! ```
//!
//! `DATABASE_URL` points it at another server.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use pgdbm::{
    AsyncDatabaseManager, AsyncMigrationManager, DatabaseConfig, EmbeddedMigrations, Pool,
};
use serde::{Deserialize, Serialize};

static USERS_MIGRATIONS: EmbeddedMigrations =
    pgdbm::embed_migrations!("$CARGO_MANIFEST_DIR/examples/axum_service_migrations/users");
static ORDERS_MIGRATIONS: EmbeddedMigrations =
    pgdbm::embed_migrations!("$CARGO_MANIFEST_DIR/examples/axum_service_migrations/orders");

/// The service's state: one manager per module, both on the same pool.
#[derive(Clone)]
struct App {
    users: AsyncDatabaseManager,
    orders: AsyncDatabaseManager,
}

impl App {
    /// Binds each module to its schema and applies its migrations (each file once, even with
    /// several replicas of the service starting together).
    async fn start(pool: Pool) -> pgdbm::Result<Self> {
        let users = AsyncDatabaseManager::from_pool(pool.clone(), Some("users"))?;
        let orders = AsyncDatabaseManager::from_pool(pool, Some("orders"))?;
        for (db, migrations) in [(&users, USERS_MIGRATIONS), (&orders, ORDERS_MIGRATIONS)] {
            AsyncMigrationManager::from_embedded(db, migrations)
                .apply_pending_migrations()
                .await?;
        }
        Ok(App { users, orders })
    }

    fn router(self) -> Router {
        Router::new()
            .route("/users", post(create_user).get(list_users))
            .route("/users/import", post(import_users))
            .route("/orders", post(place_order))
            .route("/orders/export", get(export_orders))
            .with_state(self)
    }
}

#[derive(Deserialize)]
struct NewUser {
    email: String,
    name: Option<String>,
}

#[derive(Serialize, pgdbm::FromRow)]
struct User {
    id: i64,
    email: String,
    name: Option<String>,
}

async fn create_user(
    State(app): State<App>,
    Json(user): Json<NewUser>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let id: i64 = app
        .users
        .execute_and_return_id(
            "INSERT INTO {{tables.users}} (email, name) VALUES ($1, $2)",
            &[&user.email, &user.name],
        )
        .await?;
    Ok((StatusCode::CREATED, Json(serde_json::json!({ "id": id }))))
}

async fn list_users(State(app): State<App>) -> Result<Json<Vec<User>>, ApiError> {
    let users = app
        .users
        .fetch_all_as(
            "SELECT id, email, name FROM {{tables.users}} ORDER BY id",
            &[],
        )
        .await?;
    Ok(Json(users))
}

/// COPY borrows the request's strings: no per-row allocation, and the handler stays `Send`.
async fn import_users(
    State(app): State<App>,
    Json(batch): Json<Vec<NewUser>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let rows = batch.iter().map(|u| (u.email.as_str(), u.name.as_deref()));
    let imported = app
        .users
        .copy_records_to_table("users", rows, Some(&["email", "name"]))
        .await?;
    Ok(Json(serde_json::json!({ "imported": imported })))
}

#[derive(Deserialize)]
struct NewOrder {
    user_id: i64,
    lines: Vec<Line>,
}

#[derive(Deserialize)]
struct Line {
    sku: String,
    quantity: i32,
}

/// Whether the user exists: a question for the users module, asked by the orders module.
async fn user_exists(users: &AsyncDatabaseManager, id: i64) -> pgdbm::Result<bool> {
    let known: Option<i64> = users
        .fetch_value("SELECT id FROM {{tables.users}} WHERE id = $1", &[&id])
        .await?;
    Ok(known.is_some())
}

/// The order and its valid lines commit together. A line the database refuses (a quantity
/// below 1, a SKU twice) is rolled back to its savepoint and reported; the rest stays.
// pgdbm: module = orders
async fn place_order(
    State(app): State<App>,
    Json(order): Json<NewOrder>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    if !user_exists(&app.users, order.user_id).await? {
        return Err(ApiError(StatusCode::NOT_FOUND, "no such user".into()));
    }
    let tx = app.orders.transaction().await?;
    let order_id: i64 = tx
        .execute_and_return_id(
            "INSERT INTO {{tables.orders}} (user_id) VALUES ($1)",
            &[&order.user_id],
        )
        .await?;
    let mut rejected = Vec::new();
    for line in &order.lines {
        let savepoint = tx.transaction().await?;
        let inserted = savepoint
            .execute(
                "INSERT INTO {{tables.order_lines}} (order_id, sku, quantity) VALUES ($1, $2, $3)",
                &[&order_id, &line.sku, &line.quantity],
            )
            .await;
        match inserted {
            Ok(_) => savepoint.commit().await?,
            Err(e) if e.is_check_violation() || e.is_unique_violation() => {
                savepoint.rollback().await?;
                rejected.push(line.sku.clone());
            }
            Err(e) => return Err(e.into()),
        }
    }
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "id": order_id, "rejected": rejected })),
    ))
}

/// One JSON object per line, as the rows arrive: the response holds its pooled connection,
/// and a client that hangs up cancels the query and frees the connection.
// pgdbm: module = orders
async fn export_orders(State(app): State<App>) -> Result<Response, ApiError> {
    let rows = app
        .orders
        .fetch_stream_owned(
            "SELECT o.id, o.user_id, \
                    coalesce(json_agg(json_build_object('sku', l.sku, 'quantity', l.quantity) \
                             ORDER BY l.sku) FILTER (WHERE l.sku IS NOT NULL), '[]') AS lines \
             FROM {{tables.orders}} o LEFT JOIN {{tables.order_lines}} l ON l.order_id = o.id \
             GROUP BY o.id ORDER BY o.id",
            &[],
        )
        .await?;
    let body = rows.map(|row| -> pgdbm::Result<Bytes> {
        let mut line = serde_json::to_vec(&row?.to_json()?).expect("JSON values serialize");
        line.push(b'\n');
        Ok(Bytes::from(line))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(body),
    )
        .into_response())
}

/// A pgdbm error as an HTTP answer: conflicts are 409, the rest 500 with a short text
/// (the error itself goes to the log, never parameter values).
struct ApiError(StatusCode, String);

impl From<pgdbm::Error> for ApiError {
    fn from(e: pgdbm::Error) -> Self {
        if e.is_unique_violation() {
            return ApiError(StatusCode::CONFLICT, "already exists".into());
        }
        eprintln!("request failed: {e}");
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, "database error".into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, self.1).into_response()
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = DatabaseConfig::from_env();
    let pool = AsyncDatabaseManager::create_shared_pool(&config).await?;
    let app = App::start(pool).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app.router()).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    /// Sends one request to the router in-process and returns the status and body.
    async fn call(
        router: &Router,
        method: &str,
        uri: &str,
        body: serde_json::Value,
    ) -> (StatusCode, String) {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::CONTENT_TYPE, "application/json")
            .body(if body.is_null() {
                Body::empty()
            } else {
                Body::from(body.to_string())
            })
            .unwrap();
        let response = router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    async fn app(db: &AsyncDatabaseManager) -> Router {
        App::start(db.pool().unwrap()).await.unwrap().router()
    }

    #[pgdbm::test]
    async fn users_are_created_listed_and_unique(db: AsyncDatabaseManager) {
        let router = app(&db).await;
        let (status, body) = call(
            &router,
            "POST",
            "/users",
            serde_json::json!({"email": "ann@x.org", "name": "Ann"}),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let (status, _) = call(
            &router,
            "POST",
            "/users",
            serde_json::json!({"email": "ann@x.org"}),
        )
        .await;
        assert_eq!(status, StatusCode::CONFLICT);
        let (status, body) = call(&router, "GET", "/users", serde_json::Value::Null).await;
        assert_eq!(status, StatusCode::OK);
        let users: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            users,
            serde_json::json!([{"id": 1, "email": "ann@x.org", "name": "Ann"}])
        );
    }

    #[pgdbm::test]
    async fn import_copies_every_row_or_none(db: AsyncDatabaseManager) {
        let router = app(&db).await;
        let batch: Vec<_> = (0..500)
            .map(|i| serde_json::json!({"email": format!("u{i}@x.org"), "name": null}))
            .collect();
        let (status, body) = call(&router, "POST", "/users/import", batch.into()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body, r#"{"imported":500}"#);
        // A duplicate inside the batch fails the whole COPY: nothing of it is written.
        let dup = serde_json::json!([{"email": "new@x.org"}, {"email": "u1@x.org"}]);
        let (status, _) = call(&router, "POST", "/users/import", dup).await;
        assert_eq!(status, StatusCode::CONFLICT);
        let users = AsyncDatabaseManager::from_pool(db.pool().unwrap(), Some("users")).unwrap();
        let n: Option<i64> = users
            .fetch_value("SELECT count(*) FROM {{tables.users}}", &[])
            .await
            .unwrap();
        assert_eq!(n, Some(500));
    }

    #[pgdbm::test]
    async fn an_order_keeps_its_valid_lines_and_exports_as_ndjson(db: AsyncDatabaseManager) {
        let router = app(&db).await;
        call(
            &router,
            "POST",
            "/users",
            serde_json::json!({"email": "ann@x.org"}),
        )
        .await;
        let order = serde_json::json!({"user_id": 1, "lines": [
            {"sku": "apple", "quantity": 2},
            {"sku": "pear", "quantity": 0},
            {"sku": "apple", "quantity": 5},
            {"sku": "fig", "quantity": 1},
        ]});
        let (status, body) = call(&router, "POST", "/orders", order).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body, r#"{"id":1,"rejected":["pear","apple"]}"#);
        let (status, _) = call(
            &router,
            "POST",
            "/orders",
            serde_json::json!({"user_id": 99, "lines": []}),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);

        let (status, body) = call(&router, "GET", "/orders/export", serde_json::Value::Null).await;
        assert_eq!(status, StatusCode::OK);
        let lines: Vec<serde_json::Value> = body
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            lines,
            vec![serde_json::json!({"id": 1, "user_id": 1, "lines": [
                {"sku": "apple", "quantity": 2}, {"sku": "fig", "quantity": 1}]})]
        );
    }
}
