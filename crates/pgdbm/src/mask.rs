//! The one masker of connection strings, used by every output that may show one: `Debug` of
//! the config, errors, logs, spans and the CLI.
//!
//! It hides the password wherever a connection string can carry it:
//! - a URL's user info (`postgresql://user:secret@host`), with `@`, `:` or `/` in the password;
//! - a URL's `password=` query parameter, in any case, with a percent-encoded name or not;
//! - a key=value string's `password` value, quoted (`'se cr\'et'`) or not (`se\ cret`).
//!
//! A string that is neither is returned with every `password=...` it holds masked.

/// What replaces a password.
pub(crate) const MASK: &str = "****";

/// `dsn` with its password, in whatever form, replaced by `****`.
///
/// ```text
/// postgresql://u:secret@h/db             → postgresql://u:****@h/db
/// postgresql://h/db?user=u&Password=x    → postgresql://h/db?user=u&Password=****
/// host=h password='se cr\'et' user=u     → host=h password=**** user=u
/// ```
pub(crate) fn mask_dsn(dsn: &str) -> String {
    match dsn.find("://") {
        Some(scheme_end) if dsn[..scheme_end].bytes().all(|b| b.is_ascii_alphanumeric()) => {
            mask_url(dsn, scheme_end + 3)
        }
        _ => mask_key_values(dsn),
    }
}

fn mask_url(dsn: &str, start: usize) -> String {
    let rest = &dsn[start..];
    // The user info ends at the last '@' followed by something that looks like a host, so a
    // password holding '@', '/' or '?' is still all inside it.
    let at = rest
        .char_indices()
        .rev()
        .filter(|&(_, c)| c == '@')
        .find_map(|(i, _)| {
            let after = &rest[i + 1..];
            let host_end = after.find(['/', '?']).unwrap_or(after.len());
            after[..host_end]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-.:[]%,_".contains(c))
                .then_some(i)
        });
    let mut out = String::with_capacity(dsn.len());
    out.push_str(&dsn[..start]);
    let after_userinfo = match at {
        Some(at) => {
            let userinfo = &rest[..at];
            match userinfo.find(':') {
                Some(colon) => {
                    out.push_str(&userinfo[..colon + 1]);
                    out.push_str(MASK);
                }
                None => out.push_str(userinfo),
            }
            &rest[at..]
        }
        None => rest,
    };
    match after_userinfo.find('?') {
        None => out.push_str(after_userinfo),
        Some(q) => {
            out.push_str(&after_userinfo[..q + 1]);
            let query: Vec<String> = after_userinfo[q + 1..]
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, _)) if is_password_key(&percent_decode(key)) => {
                        format!("{key}={MASK}")
                    }
                    _ => pair.to_owned(),
                })
                .collect();
            out.push_str(&query.join("&"));
        }
    }
    out
}

fn is_password_key(key: &str) -> bool {
    key.trim().eq_ignore_ascii_case("password")
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// libpq's key=value form: `key = value` pairs separated by whitespace, a value quoted with
/// `'` (backslash escapes inside) or bare (a backslash escapes the next character, a space
/// included).
fn mask_key_values(dsn: &str) -> String {
    let b = dsn.as_bytes();
    let mut out = String::with_capacity(dsn.len());
    let mut i = 0;
    let mut copied = 0;
    while i < b.len() {
        // A key starts here: at the start, or after whitespace.
        let at_key = i == 0 || b[i - 1].is_ascii_whitespace();
        if !at_key || b[i].is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let key_start = i;
        while i < b.len() && !b[i].is_ascii_whitespace() && b[i] != b'=' {
            i += 1;
        }
        let key = &dsn[key_start..i];
        let mut j = i;
        while j < b.len() && b[j].is_ascii_whitespace() {
            j += 1;
        }
        if j >= b.len() || b[j] != b'=' {
            continue;
        }
        j += 1;
        while j < b.len() && b[j].is_ascii_whitespace() {
            j += 1;
        }
        let value_start = j;
        let value_end = value_end(b, value_start);
        if is_password_key(key) {
            out.push_str(&dsn[copied..value_start]);
            out.push_str(MASK);
            copied = value_end;
        }
        i = value_end;
    }
    out.push_str(&dsn[copied..]);
    out
}

/// Where a key=value string's value that starts at `start` ends.
fn value_end(b: &[u8], start: usize) -> usize {
    let mut j = start;
    if b.get(j) == Some(&b'\'') {
        j += 1;
        while j < b.len() {
            match b[j] {
                b'\\' => j += 2,
                b'\'' => return j + 1,
                _ => j += 1,
            }
        }
        return b.len();
    }
    while j < b.len() && !b[j].is_ascii_whitespace() {
        j += if b[j] == b'\\' { 2 } else { 1 };
    }
    j.min(b.len())
}

#[cfg(test)]
mod tests {
    use super::mask_dsn;

    #[test]
    fn masks_every_form() {
        for (dsn, want) in [
            ("postgresql://u:secret@h/db", "postgresql://u:****@h/db"),
            (
                "postgresql://u:p@ss@h:5432/db",
                "postgresql://u:****@h:5432/db",
            ),
            (
                "postgresql://u:a:b/c@h/db?sslmode=disable",
                "postgresql://u:****@h/db?sslmode=disable",
            ),
            ("postgresql://u@h/db", "postgresql://u@h/db"),
            (
                "postgres://u:x%40y@[::1]:5432/db",
                "postgres://u:****@[::1]:5432/db",
            ),
            (
                "postgresql://host/db?user=u&password=secret",
                "postgresql://host/db?user=u&password=****",
            ),
            (
                "postgresql://host/db?PassWord=secret&sslmode=require",
                "postgresql://host/db?PassWord=****&sslmode=require",
            ),
            (
                "postgresql://host/db?pass%77ord=secret",
                "postgresql://host/db?pass%77ord=****",
            ),
            (
                "postgresql://u:a?b@h/db?password=c",
                "postgresql://u:****@h/db?password=****",
            ),
            (
                "host=h password=secret user=u",
                "host=h password=**** user=u",
            ),
            (
                "host=h password='se cr\\'et' user=u",
                "host=h password=**** user=u",
            ),
            (
                "host=h password=se\\ cret user=u",
                "host=h password=**** user=u",
            ),
            ("host=h PASSWORD = secret", "host=h PASSWORD = ****"),
            ("password=", "password=****"),
        ] {
            assert_eq!(mask_dsn(dsn), want, "{dsn}");
        }
    }
}
