//! What an [`Error`] says: its kind, SQLSTATE, server fields, and the questions application
//! code asks of it.

use std::fmt;

use tokio_postgres::error::{DbError, SqlState};

use super::{Error, ErrorKind};

impl Error {
    /// The server's error fields, when the server raised this error.
    pub fn as_db_error(&self) -> Option<&DbError> {
        match self {
            Error::Query { source, .. } => source.as_db_error(),
            Error::Connection {
                source: Some(source),
                ..
            } => source.as_db_error(),
            Error::Migration {
                source: Some(inner),
                ..
            }
            | Error::RetriesExhausted { source: inner, .. } => inner.as_db_error(),
            _ => None,
        }
    }

    /// The SQLSTATE, when the server raised this error.
    pub fn sqlstate(&self) -> Option<&SqlState> {
        self.as_db_error().map(DbError::code)
    }

    /// The five-character SQLSTATE code, e.g. `"23505"`.
    pub fn code(&self) -> Option<&str> {
        self.sqlstate().map(SqlState::code)
    }

    /// The violated constraint's name, if any.
    pub fn constraint(&self) -> Option<&str> {
        self.as_db_error().and_then(DbError::constraint)
    }

    /// The server's own message for a server error (`duplicate key value violates unique
    /// constraint "users_email_key"`), without the SQL, the parameters or anything pgdbm adds:
    /// what an application may pass on, where `Display` (for logs) shows the statement too.
    ///
    /// ```
    /// # fn f(e: &pgdbm::Error) {
    /// let for_client = e.server_message().unwrap_or("internal error");
    /// # }
    /// ```
    pub fn server_message(&self) -> Option<&str> {
        self.as_db_error().map(DbError::message)
    }

    /// The server's DETAIL line, if any.
    pub fn detail(&self) -> Option<&str> {
        self.as_db_error().and_then(DbError::detail)
    }

    /// The portable kind of this error.
    pub fn kind(&self) -> ErrorKind {
        if self.is_timeout() {
            return ErrorKind::Timeout;
        }
        if matches!(self, Error::NotificationsMissed { .. }) {
            return ErrorKind::NotificationsMissed;
        }
        if matches!(self, Error::NoReplica { .. }) {
            return ErrorKind::NoReplica;
        }
        if matches!(self, Error::RowCount { .. }) {
            return ErrorKind::RowCount;
        }
        if matches!(self, Error::PipelineAborted { .. }) {
            return ErrorKind::PipelineAborted;
        }
        if matches!(self, Error::ConnectionLost { .. }) {
            return ErrorKind::ConnectionLost;
        }
        let Some(state) = self.sqlstate() else {
            return ErrorKind::Other;
        };
        match *state {
            SqlState::UNIQUE_VIOLATION => ErrorKind::UniqueViolation,
            SqlState::FOREIGN_KEY_VIOLATION => ErrorKind::ForeignKeyViolation,
            SqlState::NOT_NULL_VIOLATION => ErrorKind::NotNullViolation,
            SqlState::CHECK_VIOLATION => ErrorKind::CheckViolation,
            SqlState::T_R_SERIALIZATION_FAILURE => ErrorKind::SerializationFailure,
            SqlState::T_R_DEADLOCK_DETECTED => ErrorKind::DeadlockDetected,
            SqlState::QUERY_CANCELED => ErrorKind::QueryCanceled,
            SqlState::UNDEFINED_TABLE => ErrorKind::UndefinedTable,
            SqlState::UNDEFINED_COLUMN => ErrorKind::UndefinedColumn,
            SqlState::SYNTAX_ERROR => ErrorKind::SyntaxError,
            _ => ErrorKind::OtherDatabase,
        }
    }

    /// A unique constraint was violated (`23505`).
    pub fn is_unique_violation(&self) -> bool {
        self.kind() == ErrorKind::UniqueViolation
    }

    /// A foreign key constraint was violated (`23503`).
    pub fn is_foreign_key_violation(&self) -> bool {
        self.kind() == ErrorKind::ForeignKeyViolation
    }

    /// A NOT NULL constraint was violated (`23502`).
    pub fn is_not_null_violation(&self) -> bool {
        self.kind() == ErrorKind::NotNullViolation
    }

    /// A CHECK constraint was violated (`23514`).
    pub fn is_check_violation(&self) -> bool {
        self.kind() == ErrorKind::CheckViolation
    }

    /// This is a timeout raised by pgdbm: a query cancelled on the server
    /// ([`Error::Timeout`]) or a wait for a free connection that gave up
    /// ([`Error::AcquireTimeout`]).
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            Error::Timeout { .. }
                | Error::AcquireTimeout { .. }
                | Error::PipelineTimeout { .. }
                | Error::SharedTimeout { .. }
        )
    }

    /// For a call whose shared connection was lost ([`Error::ConnectionLost`]): whether its
    /// statement may have run. `None` for other errors.
    pub fn may_have_run(&self) -> Option<bool> {
        match self {
            Error::ConnectionLost { may_have_run, .. } => Some(*may_have_run),
            _ => None,
        }
    }

    /// For a pipeline that timed out ([`Error::PipelineTimeout`]): the positions of the
    /// statements that had completed.
    pub fn completed_statements(&self) -> Option<&[usize]> {
        match self {
            Error::PipelineTimeout { completed, .. } => Some(completed),
            _ => None,
        }
    }

    pub(crate) fn config(field: &'static str, message: impl Into<String>) -> Self {
        Error::Configuration {
            field,
            message: message.into(),
        }
    }

    pub(crate) fn decode(
        column: impl fmt::Display,
        pg_type: impl fmt::Display,
        message: impl fmt::Display,
    ) -> Self {
        Error::Decode {
            column: column.to_string(),
            pg_type: pg_type.to_string(),
            message: message.to_string(),
        }
    }
}
