//! One `tracing` span per operation, named and attributed by OpenTelemetry's database
//! conventions the way `tracing-opentelemetry` reads them (`otel.name`, `otel.kind`,
//! `otel.status_code`).

use tracing::field::Empty;
use tracing::Span;

use crate::sql::operation::classify;

/// The operations that get a span of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    Execute,
    ExecuteAndReturnId,
    Executemany,
    FetchValue,
    FetchValueAt,
    FetchOne,
    FetchAll,
    FetchAsModel,
    FetchAllAsModel,
    FetchOneAs,
    FetchAllAs,
    FetchExactlyOne,
    FetchExactlyOneAs,
    FetchColumn,
    FetchStream,
    FetchStreamOwned,
    CopyTo,
    CopyToOwned,
    CopyRecordsToTable,
    CopyFromCsv,
    TableExists,
    Begin,
    Commit,
    Rollback,
    Savepoint,
    ReleaseSavepoint,
    RollbackToSavepoint,
    Migration,
}

/// The same fields on every callsite; span names must be literals, hence the macro.
macro_rules! op_span {
    ($name:literal) => {
        tracing::info_span!(
            target: "pgdbm::query",
            $name,
            otel.name = Empty,
            otel.kind = "client",
            otel.status_code = Empty,
            db.system.name = "postgresql",
            db.namespace = Empty,
            db.operation.name = Empty,
            db.collection.name = Empty,
            db.query.text = Empty,
            db.operation.batch.size = Empty,
            db.response.returned_rows = Empty,
            db.response.status_code = Empty,
            error.type = Empty,
            server.address = Empty,
            server.port = Empty,
            pgdbm.schema = Empty,
            pgdbm.rows_affected = Empty,
            pgdbm.migration = Empty,
        )
    };
}

impl Method {
    /// The method's name, as the public API spells it.
    pub(crate) fn name(self) -> &'static str {
        use Method::*;
        match self {
            Execute => "execute",
            ExecuteAndReturnId => "execute_and_return_id",
            Executemany => "executemany",
            FetchValue => "fetch_value",
            FetchValueAt => "fetch_value_at",
            FetchOne => "fetch_one",
            FetchAll => "fetch_all",
            FetchAsModel => "fetch_as_model",
            FetchAllAsModel => "fetch_all_as_model",
            FetchOneAs => "fetch_one_as",
            FetchAllAs => "fetch_all_as",
            FetchExactlyOne => "fetch_exactly_one",
            FetchExactlyOneAs => "fetch_exactly_one_as",
            FetchColumn => "fetch_column",
            FetchStream => "fetch_stream",
            FetchStreamOwned => "fetch_stream_owned",
            CopyTo => "copy_to",
            CopyToOwned => "copy_to_owned",
            CopyRecordsToTable => "copy_records_to_table",
            CopyFromCsv => "copy_from_csv",
            TableExists => "table_exists",
            Begin => "begin",
            Commit => "commit",
            Rollback => "rollback",
            Savepoint => "savepoint",
            ReleaseSavepoint => "release_savepoint",
            RollbackToSavepoint => "rollback_to_savepoint",
            Migration => "migration",
        }
    }

    /// A new span under the caller's current one; disabled (and free) when nothing listens.
    pub(crate) fn span(self) -> Span {
        use Method::*;
        // Checked first: with `tracing`'s `log` feature on (another crate may turn it on), the
        // macro would otherwise build and log every field of a disabled span.
        if tracing::Level::INFO > tracing::level_filters::STATIC_MAX_LEVEL
            || tracing::Level::INFO > tracing::level_filters::LevelFilter::current()
        {
            return Span::none();
        }
        match self {
            Execute => op_span!("execute"),
            ExecuteAndReturnId => op_span!("execute_and_return_id"),
            Executemany => op_span!("executemany"),
            FetchValue => op_span!("fetch_value"),
            FetchValueAt => op_span!("fetch_value_at"),
            FetchOne => op_span!("fetch_one"),
            FetchAll => op_span!("fetch_all"),
            FetchAsModel => op_span!("fetch_as_model"),
            FetchAllAsModel => op_span!("fetch_all_as_model"),
            FetchOneAs => op_span!("fetch_one_as"),
            FetchAllAs => op_span!("fetch_all_as"),
            FetchExactlyOne => op_span!("fetch_exactly_one"),
            FetchExactlyOneAs => op_span!("fetch_exactly_one_as"),
            FetchColumn => op_span!("fetch_column"),
            FetchStream => op_span!("fetch_stream"),
            FetchStreamOwned => op_span!("fetch_stream_owned"),
            CopyTo => op_span!("copy_to"),
            CopyToOwned => op_span!("copy_to_owned"),
            CopyRecordsToTable => op_span!("copy_records_to_table"),
            CopyFromCsv => op_span!("copy_from_csv"),
            TableExists => op_span!("table_exists"),
            Begin => op_span!("begin"),
            Commit => op_span!("commit"),
            Rollback => op_span!("rollback"),
            Savepoint => op_span!("savepoint"),
            ReleaseSavepoint => op_span!("release_savepoint"),
            RollbackToSavepoint => op_span!("rollback_to_savepoint"),
            Migration => op_span!("migration"),
        }
    }

    /// The transaction-control method a statement of a transaction stands for.
    pub(crate) fn of_control(sql: &str) -> Method {
        let first = sql.split_whitespace().next().unwrap_or("");
        match first.to_ascii_uppercase().as_str() {
            "BEGIN" | "START" => Method::Begin,
            "SAVEPOINT" => Method::Savepoint,
            "RELEASE" => Method::ReleaseSavepoint,
            "ROLLBACK" if sql.contains(" TO ") => Method::RollbackToSavepoint,
            "ROLLBACK" => Method::Rollback,
            _ => Method::Commit,
        }
    }

    /// `db.operation.name` of the transaction-control methods, whose statement text does not
    /// start with it (`SELECT 1; COMMIT`).
    fn control_operation(self) -> Option<&'static str> {
        use Method::*;
        Some(match self {
            Begin => "BEGIN",
            Commit => "COMMIT",
            Rollback | RollbackToSavepoint => "ROLLBACK",
            Savepoint => "SAVEPOINT",
            ReleaseSavepoint => "RELEASE",
            _ => return None,
        })
    }
}

/// What a statement does and to which table, as span attributes and metric labels use them.
#[derive(Debug, Clone, Default)]
pub(crate) struct Described {
    /// `db.operation.name`, upper case.
    pub(crate) operation: Option<String>,
    /// `db.collection.name`, as written in the statement.
    pub(crate) collection: Option<String>,
}

pub(crate) fn describe(method: Method, sql: &str) -> Described {
    let statement = classify(sql);
    Described {
        operation: method
            .control_operation()
            .map(str::to_owned)
            .or_else(|| statement.operation.map(str::to_ascii_uppercase)),
        collection: statement.collection.map(unquote),
    }
}

/// A table name as a person writes it: `"app".users` -> `app.users`, `"Mixed"` -> `Mixed`,
/// a doubled quote inside a quoted part kept once.
fn unquote(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut chars = name.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                out.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            c => out.push(c),
        }
    }
    out
}

/// Records the attributes known before the statement runs. `sql` is the rendered text (no
/// parameter values: they travel separately and are never recorded).
pub(crate) fn record_start(
    span: &Span,
    d: &Described,
    sql: &str,
    target: &crate::otel::Target<'_>,
) {
    if let Some(op) = &d.operation {
        span.record("db.operation.name", op.as_str());
    }
    if let Some(c) = &d.collection {
        span.record("db.collection.name", c.as_str());
    }
    let name = match (&d.operation, &d.collection) {
        (Some(op), Some(c)) => format!("{op} {c}"),
        (Some(op), None) => op.clone(),
        (None, _) => "postgresql".to_owned(),
    };
    span.record("otel.name", name.as_str());
    span.record("db.query.text", sql);
    crate::otel::record_target(span, target);
}
