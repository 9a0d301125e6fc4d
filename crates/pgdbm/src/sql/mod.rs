//! Everything drawn from SQL text, in the lowest layer: the lexer, and the verdicts built on it
//! (statement splitting and transaction control for migrations, session effects, read-only
//! routing, operation names for spans, `RETURNING id`). Each caller computes a verdict once
//! per statement text and keeps it.

pub(crate) mod lexer;
pub(crate) mod operation;
mod returning;
pub(crate) mod routing;
mod session;

pub(crate) use returning::with_returning_id;
pub(crate) use session::Effects;
