//! Verdicts drawn from SQL text, each computed once per statement text by its caller.

mod session;

pub(crate) use session::Effects;
