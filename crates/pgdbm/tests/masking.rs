//! Passwords never appear in any output: a property test over generated connection strings,
//! each password in every form a connection string can carry it, in every field that takes
//! one, checked against `Debug`, `get_dsn_masked`, and the errors of validation, parsing and
//! connecting.

mod common;

use common::Rng;
use pgdbm::{AsyncDatabaseManager, DatabaseConfig};

fn pick<'a>(rng: &mut Rng, items: &[&'a str]) -> &'a str {
    items[rng.below(items.len() as u64) as usize]
}

/// A password of 8 to 24 characters, with the ones connection strings treat specially.
fn password(rng: &mut Rng) -> String {
    const CHARS: &[u8] = b"abcXYZ019 @:/?&=#%'\\\"!$+,;";
    let len = 8 + rng.below(17) as usize;
    // A fixed start keeps a short random tail from matching unrelated text by chance.
    let mut pw = String::from("Pw");
    for _ in 0..len {
        pw.push(CHARS[rng.below(CHARS.len() as u64) as usize] as char);
    }
    pw
}

fn encode(pw: &str) -> String {
    percent_encoding::utf8_percent_encode(pw, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// The password in each form a connection string can carry it.
fn strings(rng: &mut Rng, pw: &str) -> Vec<String> {
    let key = pick(rng, &["password", "PASSWORD", "Password", "pass%77ord"]);
    let quoted = pw.replace('\\', "\\\\").replace('\'', "\\'");
    let bare: String = pw
        .chars()
        .flat_map(|c| match c {
            ' ' | '\\' | '\'' => vec!['\\', c],
            c => vec![c],
        })
        .collect();
    let port = pick(rng, &["1", "notaport"]);
    vec![
        format!("postgresql://u:{}@127.0.0.1:{port}/db", encode(pw)),
        // Unencoded, as people paste it: the masker must still find all of it.
        format!("postgresql://u:{pw}@127.0.0.1:1/db"),
        format!(
            "postgresql://127.0.0.1:{port}/db?user=u&{key}={}",
            encode(pw)
        ),
        format!("host=127.0.0.1 port={port} password='{quoted}' user=u"),
        format!("host=127.0.0.1 port={port} user=u password={bare}"),
    ]
}

fn assert_hidden(pw: &str, what: &str, shown: &str) {
    for secret in [pw.to_owned(), encode(pw)] {
        assert!(
            !shown.contains(&secret),
            "{what} shows the password {pw:?}: {shown}"
        );
    }
}

#[tokio::test]
async fn no_generated_password_appears_in_any_output() {
    let seed = 0x5eed_1234_u64;
    let mut rng = Rng(seed);
    for case in 0..60 {
        let pw = password(&mut rng);
        for dsn in strings(&mut rng, &pw) {
            let what = format!("seed {seed:#x} case {case} ({dsn:?})");
            let configs = [
                DatabaseConfig {
                    connection_string: Some(dsn.clone()),
                    retry_attempts: 0,
                    ..Default::default()
                },
                DatabaseConfig {
                    connection_string: Some("postgresql://postgres@127.0.0.1:1/db".into()),
                    read_replicas: vec![dsn.clone()],
                    listen_connection_string: Some(dsn.clone()),
                    direct_connection_string: Some(dsn.clone()),
                    retry_attempts: 0,
                    ..Default::default()
                },
            ];
            for cfg in configs {
                assert_hidden(&pw, &what, &format!("{cfg:?}"));
                assert_hidden(&pw, &what, &cfg.get_dsn_masked());
                match AsyncDatabaseManager::new(cfg.clone()) {
                    Err(e) => {
                        assert_hidden(&pw, &what, &e.to_string());
                        assert_hidden(&pw, &what, &format!("{e:?}"));
                    }
                    Ok(db) => {
                        assert_hidden(&pw, &what, &format!("{db:?}"));
                        if let Err(e) = db.connect().await {
                            assert_hidden(&pw, &what, &e.to_string());
                            assert_hidden(&pw, &what, &format!("{e:?}"));
                        }
                    }
                }
            }
        }
    }
}
