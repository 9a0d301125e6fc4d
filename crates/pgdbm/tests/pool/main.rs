//! Pool behaviour: timeouts and cancellation, retry, settings, recycling, reaping, statements.

#[path = "../common/mod.rs"]
mod common;

mod checkouts;
mod connect;
mod homes;
mod recycling;
mod statements;
mod timeouts;
