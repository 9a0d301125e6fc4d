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

/// What a connection behind a transaction pooler does about the driver's lookup statements.
#[derive(Debug)]
pub(crate) enum TypeLookups {
    /// Recreates them for each describe and removes them after.
    Recreate {
        /// `PREPARE "s1"(oid) AS ...;` for each.
        prepare: String,
        /// `DEALLOCATE "s1";` for each.
        deallocate: String,
    },
    /// The pooler keeps named statements itself (PgBouncer >= 1.21 with
    /// `max_prepared_statements`): they follow the client, nothing to do.
    Tracked,
    /// They could not be learned (a hot standby refuses the probe types, or the role may not
    /// create temporary types): every describe ends with `DEALLOCATE ALL`, so none is left
    /// behind. A custom type first met after the first describe then fails with `26000` and
    /// the connection is replaced.
    Unknown,
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
    pub(crate) async fn capture(client: &Client) -> Result<Self, tokio_postgres::Error> {
        if let Err(e) = client.batch_execute(PROBE).await {
            client.batch_execute("ROLLBACK").await?;
            if e.as_db_error().is_some() {
                tracing::debug!(
                    error = %crate::error::db_message(&e),
                    "cannot create temporary types to learn the custom-type lookups; each \
                     describe will clear named statements instead"
                );
                return Ok(TypeLookups::Unknown);
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
        let found: Vec<(String, String, String)> = rows
            .iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(r) => Some((
                    r.get(0)?.to_owned(),
                    r.get(1)?.to_owned(),
                    r.get(2)?.to_owned(),
                )),
                _ => None,
            })
            .collect();
        let driver_named = |name: &str| {
            name.strip_prefix('s')
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        };
        let lookups = if found.is_empty() {
            TypeLookups::Unknown
        } else if !found.iter().all(|(name, _, _)| driver_named(name)) {
            // The pooler renamed them: it tracks named statements and must be left to do so.
            client.batch_execute("ROLLBACK").await?;
            client.clear_type_cache();
            return Ok(TypeLookups::Tracked);
        } else {
            let (mut prepare, mut deallocate) = (String::new(), String::new());
            for (name, types, text) in &found {
                let name = quote_ident(name);
                prepare.push_str(&format!("PREPARE {name}({types}) AS {text};\n"));
                deallocate.push_str(&format!("DEALLOCATE {name};\n"));
            }
            TypeLookups::Recreate {
                prepare,
                deallocate,
            }
        };
        let end = match &lookups {
            TypeLookups::Recreate { deallocate, .. } => format!("{deallocate}ROLLBACK"),
            _ => "DEALLOCATE ALL;\nROLLBACK".to_owned(),
        };
        client.batch_execute(&end).await?;
        // The probe types are gone with the transaction; so must be their cached OIDs.
        client.clear_type_cache();
        Ok(lookups)
    }

    /// The statements around one describe: what opens it, and what closes it when all went
    /// well, when the prepare of the caller's SQL failed, and when the opening failed.
    /// `clean_first` clears leftover named statements first (after a `42P05`).
    pub(super) fn bracket(&self, in_transaction: bool, clean_first: bool) -> Bracket {
        // Outside a transaction the bracket is ours; inside one, a savepoint stands in for it.
        let (begin, end, abort) = if in_transaction {
            (
                "SAVEPOINT pgdbm_describe",
                "RELEASE SAVEPOINT pgdbm_describe",
                "ROLLBACK TO SAVEPOINT pgdbm_describe;\nRELEASE SAVEPOINT pgdbm_describe",
            )
        } else {
            ("BEGIN", "ROLLBACK", "ROLLBACK")
        };
        match self {
            TypeLookups::Recreate {
                prepare,
                deallocate,
            } => Bracket {
                // The second savepoint marks the lookups in place: a failed prepare rolls
                // back to it, and they are removed before the bracket ends.
                open: format!(
                    "{begin};\n{}{prepare}SAVEPOINT pgdbm_described",
                    if clean_first { "DEALLOCATE ALL;\n" } else { "" }
                ),
                ok: format!("{deallocate}{end}"),
                prepare_failed: format!(
                    "ROLLBACK TO SAVEPOINT pgdbm_described;\n{deallocate}{end}"
                ),
                // Which lookups exist is not known: clear them all, in the same message, so
                // on the same server connection.
                open_failed: format!("{abort};\nDEALLOCATE ALL"),
            },
            TypeLookups::Tracked => Bracket::plain(begin, end, abort),
            TypeLookups::Unknown => Bracket {
                open: if clean_first {
                    format!("{begin};\nDEALLOCATE ALL")
                } else {
                    begin.to_owned()
                },
                ok: format!("DEALLOCATE ALL;\n{end}"),
                prepare_failed: format!("{abort};\nDEALLOCATE ALL"),
                open_failed: format!("{abort};\nDEALLOCATE ALL"),
            },
        }
    }
}

/// See [`TypeLookups::bracket`].
pub(super) struct Bracket {
    pub(super) open: String,
    pub(super) ok: String,
    pub(super) prepare_failed: String,
    pub(super) open_failed: String,
}

impl Bracket {
    pub(super) fn plain(begin: &str, end: &str, abort: &str) -> Bracket {
        Bracket {
            open: begin.to_owned(),
            ok: end.to_owned(),
            prepare_failed: abort.to_owned(),
            open_failed: abort.to_owned(),
        }
    }
}
