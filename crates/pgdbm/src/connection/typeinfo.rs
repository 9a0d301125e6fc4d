//! Custom-type lookups behind a transaction pooler.
//!
//! tokio-postgres looks up a custom type (enum, domain, composite, range) the first time it
//! meets its OID, with up to three named statements of its own that it prepares once per
//! client and keeps. Behind a transaction pooler those statements exist only on the server
//! connection where they were prepared; anywhere else the lookup fails with `26000`, or,
//! worse, runs another client's leftover statement of the same name.
//!
//! So, when a connection is made, pgdbm has the driver prepare all three inside one
//! transaction, reads their names and texts from `pg_prepared_statements`, and removes them
//! again. From then on every describe (the only place where lookups happen, see
//! `PgConn::describe`) recreates them with `PREPARE` in the same transaction and removes them
//! with `DEALLOCATE` before it ends: nothing is left on any server connection.

use tokio_postgres::{Client, SimpleQueryMessage};

use crate::template::quote_ident;

/// The driver's lookup statements of one client, as SQL that recreates and removes them.
#[derive(Debug)]
pub(crate) struct TypeLookups {
    /// `PREPARE "s1"(oid) AS ...;` for each, run where lookups may happen.
    pub(super) prepare: String,
    /// `DEALLOCATE "s1";` for each.
    pub(super) deallocate: String,
}

/// Throwaway types that make the driver prepare each of its lookup statements: an enum needs
/// the type and enum-label lookups, a composite the attribute lookup.
const PROBE: &str = "BEGIN;
CREATE TYPE pg_temp.pgdbm_probe_enum AS ENUM ('a');
CREATE TYPE pg_temp.pgdbm_probe_row AS (a int4)";

/// Statements prepared since the transaction began, which are the driver's lookups (our probe
/// statement was closed before this runs).
const FIND: &str =
    "SELECT name, pg_catalog.array_to_string(parameter_types::text[], ','), statement \
     FROM pg_catalog.pg_prepared_statements \
     WHERE NOT from_sql AND prepare_time >= pg_catalog.now() ORDER BY name";

impl TypeLookups {
    /// Has `client` prepare its lookup statements inside one transaction, reads them back,
    /// removes them from the server and forgets the probe types. `Ok(None)` when the role may
    /// not create temporary types: then custom types may fail behind the pooler.
    pub(crate) async fn capture(client: &Client) -> Result<Option<Self>, tokio_postgres::Error> {
        if let Err(e) = client.batch_execute(PROBE).await {
            client.batch_execute("ROLLBACK").await?;
            if e.as_db_error().is_some() {
                tracing::warn!(
                    error = %crate::pool::db_message(&e),
                    "cannot create temporary types to prepare custom-type lookups; enums, domains \
                     and composites may fail with 26000 behind the transaction pooler"
                );
                return Ok(None);
            }
            return Err(e);
        }
        let outcome = async {
            let probe = client
                .prepare("SELECT NULL::pg_temp.pgdbm_probe_enum, NULL::pg_temp.pgdbm_probe_row")
                .await?;
            drop(probe);
            client.simple_query(FIND).await
        }
        .await;
        let rows = match outcome {
            Ok(rows) => rows,
            Err(e) => {
                client.batch_execute("ROLLBACK").await?;
                return Err(e);
            }
        };
        let mut lookups = TypeLookups {
            prepare: String::new(),
            deallocate: String::new(),
        };
        for row in rows.iter().filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        }) {
            let (Some(name), Some(types), Some(text)) = (row.get(0), row.get(1), row.get(2)) else {
                continue;
            };
            let name = quote_ident(name);
            lookups
                .prepare
                .push_str(&format!("PREPARE {name}({types}) AS {text};\n"));
            lookups
                .deallocate
                .push_str(&format!("DEALLOCATE {name};\n"));
        }
        let end = format!("{}ROLLBACK", lookups.deallocate);
        client.batch_execute(&end).await?;
        // The probe types are gone with the transaction; so must be their cached OIDs.
        client.clear_type_cache();
        Ok(Some(lookups))
    }
}
