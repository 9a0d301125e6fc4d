//! The manager against the real server: both patterns, lifecycle, every query method, templates.

#[path = "../common/mod.rs"]
mod common;

mod errors;
mod lifecycle;
mod queries;
