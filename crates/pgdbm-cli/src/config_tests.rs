//! Tests of `config`.

use super::*;

fn vars(k: &str) -> Option<String> {
    (k == "DB_PASS").then(|| "s3cret".to_owned())
}

#[test]
fn expands_and_names_unset_variables() {
    assert_eq!(
        expand("postgresql://u:${DB_PASS}@h/db", "k", &vars).unwrap(),
        "postgresql://u:s3cret@h/db"
    );
    assert_eq!(expand("a$$b$c", "k", &vars).unwrap(), "a$b$c");
    let err = expand("${NOPE}", "environments.dev.url", &vars).unwrap_err();
    assert!(
        err.contains("NOPE") && err.contains("environments.dev.url"),
        "{err}"
    );
}

#[test]
fn unknown_keys_are_named() {
    let err = parse(
        "[environments.dev]\nurll = 'x'\n",
        Path::new("p.toml"),
        vars,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("urll"), "{err}");
}

#[test]
fn reset_on_release_is_read() {
    let text = "[environments.dev]\nurl='postgresql://x@db:5432/d'\nreset_on_release='always'\n";
    let file = parse(text, Path::new("p.toml"), vars).unwrap();
    let s = resolve(file, Path::new("p.toml"), None).unwrap();
    assert_eq!(
        s.db().unwrap().reset_on_release,
        pgdbm::ResetOnRelease::Always
    );
}

#[test]
fn pooler_and_direct_url_are_read() {
    let text = "[environments.dev]\nurl='postgresql://x@pgbouncer:6432/d'\n\
                pooler='transaction'\ndirect_url='postgresql://x@db:5432/d'\n";
    let file = parse(text, Path::new("p.toml"), vars).unwrap();
    let s = resolve(file, Path::new("p.toml"), None).unwrap();
    let db = s.db().unwrap();
    assert_eq!(db.pooler, pgdbm::Pooler::Transaction);
    assert_eq!(
        db.direct_connection_string.as_deref(),
        Some("postgresql://x@db:5432/d")
    );
    let err = parse(
        "[environments.dev]\npooler='statement'\n",
        Path::new("p.toml"),
        vars,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("statement"), "{err}");
}

#[test]
fn multiplexing_is_read() {
    let text = "[environments.dev]\nurl='postgresql://x@db:5432/d'\nmultiplexing=true\n";
    let file = parse(text, Path::new("p.toml"), vars).unwrap();
    let s = resolve(file, Path::new("p.toml"), None).unwrap();
    assert!(s.db().unwrap().multiplexing);
    let file = parse(
        "[environments.dev]\nurl='postgresql://x@db:5432/d'\n",
        Path::new("p.toml"),
        vars,
    )
    .unwrap();
    let s = resolve(file, Path::new("p.toml"), None).unwrap();
    assert!(!s.db().unwrap().multiplexing, "off by default");
}

#[test]
fn cycles_are_named() {
    let text = "[environments.dev]\nurl='postgresql://x@h/d'\n\
                [modules.a]\ndepends_on=['b']\n[modules.b]\ndepends_on=['a']\n[modules.c]\n";
    let file = parse(text, Path::new("p.toml"), vars).unwrap();
    let s = resolve(file, Path::new("p.toml"), None).unwrap();
    let err = s.ordered(None).unwrap_err().to_string();
    assert!(err.contains("a -> b -> a"), "{err}");
    assert_eq!(
        s.ordered(Some("c"))
            .unwrap()
            .iter()
            .map(|m| &m.name)
            .collect::<Vec<_>>(),
        ["c"]
    );
}

#[test]
fn ssl_modes() {
    let env = |mode: Option<&str>, enabled: Option<bool>| {
        let e = Environment {
            ssl_mode: mode.map(str::to_owned),
            ssl_enabled: enabled,
            ..Default::default()
        };
        let db = environment_config(&e, "t").unwrap();
        (db.ssl_enabled, db.ssl_mode)
    };
    assert_eq!(env(None, None), (false, None));
    assert_eq!(env(Some("prefer"), None), (false, None));
    assert_eq!(
        env(Some("prefer"), Some(true)),
        (true, Some("require".into()))
    );
    assert_eq!(env(Some("disable"), Some(true)), (false, None));
    assert_eq!(
        env(Some("verify-ca"), None),
        (true, Some("verify-ca".into()))
    );
    assert_eq!(env(None, Some(true)), (true, None));
}

#[test]
fn dependency_order() {
    let text = "[environments.dev]\nurl='postgresql://x@h/d'\n\
                [modules.a]\ndepends_on=['b']\n[modules.b]\ndepends_on=['c']\n[modules.c]\n";
    let file = parse(text, Path::new("p.toml"), vars).unwrap();
    let s = resolve(file, Path::new("p.toml"), None).unwrap();
    let names: Vec<_> = s
        .ordered(None)
        .unwrap()
        .iter()
        .map(|m| m.name.clone())
        .collect();
    assert_eq!(names, ["c", "b", "a"]);
}
