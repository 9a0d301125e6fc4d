//! Sending notifications (`pg_notify`) through the caller's connection, with the channel names
//! and payloads checked before anything is sent. Listening is `crate::notify`'s.

use super::Runner;
use crate::error::{Error, Result};
use crate::template::{check_identifier, shorten};

/// The longest payload the server accepts, in bytes (`NOTIFY_PAYLOAD_MAX_LENGTH - 1`).
pub(crate) const MAX_PAYLOAD: usize = 7999;

/// The longest channel name the server accepts, in bytes (`NAMEDATALEN - 1`).
pub(crate) const MAX_CHANNEL: usize = 63;

/// The name on the wire of `channel` in `schema`, checked like a table name.
pub(crate) fn wire_name(schema: Option<&str>, channel: &str) -> Result<String> {
    check_identifier(channel, "channel")?;
    let wire = match schema {
        Some(s) => format!("{s}.{channel}"),
        None => channel.to_owned(),
    };
    if wire.len() > MAX_CHANNEL {
        return Err(Error::Schema(format!(
            "channel {wire:?} is {} bytes on the wire (schema, '.', channel); PostgreSQL allows at \
             most {MAX_CHANNEL}: use a shorter channel name",
            wire.len()
        )));
    }
    Ok(wire)
}

/// A raw channel name: anything the server accepts as a channel.
pub(crate) fn check_raw(channel: &str) -> Result<()> {
    if channel.is_empty() || channel.len() > MAX_CHANNEL || channel.contains('\0') {
        return Err(Error::Schema(format!(
            "channel {:?} is not a valid channel name: it must be 1 to {MAX_CHANNEL} bytes \
             without NUL characters",
            shorten(channel)
        )));
    }
    Ok(())
}

pub(crate) fn check_payload(channel: &str, payload: &str) -> Result<()> {
    if payload.len() > MAX_PAYLOAD {
        return Err(Error::Notify(format!(
            "the payload for channel {channel:?} is {} bytes; PostgreSQL accepts at most \
             {MAX_PAYLOAD}. Send a key (an id) and let listeners read the data from a table",
            payload.len()
        )));
    }
    if payload.contains('\0') {
        return Err(Error::Notify(format!(
            "the payload for channel {channel:?} contains a NUL character, which PostgreSQL \
             text cannot hold"
        )));
    }
    Ok(())
}

/// `pg_notify($1, $2)` through the caller's connection (the pool, or the transaction's).
async fn send<R: Runner>(ex: &R, wire: String, payload: &str) -> Result<()> {
    check_payload(&wire, payload)?;
    crate::query::execute(ex, "SELECT pg_notify($1, $2)", &[&wire, &payload])
        .await
        .map(drop)
}

pub(crate) async fn notify<R: Runner>(ex: &R, channel: &str, payload: &str) -> Result<()> {
    let wire = wire_name(ex.templates().schema(), channel)?;
    send(ex, wire, payload).await
}

pub(crate) async fn notify_raw<R: Runner>(ex: &R, channel: &str, payload: &str) -> Result<()> {
    check_raw(channel)?;
    send(ex, channel.to_owned(), payload).await
}
