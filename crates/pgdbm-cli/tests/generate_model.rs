//! `pgdbm generate model`, proven to compile: `golden/every_type.rs` is what the command prints
//! for the table of `golden/every_type.sql` (one column of every mapped type). It is compiled
//! here, read from the live table with `fetch_all_as`, and regenerated and compared.

mod common;

use common::Sandbox;

include!("golden/every_type.rs");

const FIXTURE: &str = include_str!("golden/every_type.sql");
const GOLDEN: &str = include_str!("golden/every_type.rs");

/// A database holding the fixture table (in `public`), and a pgdbm.toml pointing at it.
fn sandbox() -> Sandbox {
    let sb = Sandbox::new("golden");
    sb.write(
        "pgdbm.toml",
        &format!(
            "[project]\ndefault_env = \"local\"\n[environments.local]\nurl = \"{}\"\n",
            sb.url()
        ),
    );
    sb.query(|db| {
        Box::pin(async move {
            db.execute(FIXTURE, &[]).await.expect("fixture");
        })
    });
    sb
}

#[test]
fn the_golden_model_reads_the_live_table() {
    let sb = sandbox();
    // The enum reads as its label; the unmapped type is selected as text, as its comment says.
    let rows: Vec<EveryType> = sb.query(|db| {
        Box::pin(async move {
            db.fetch_all_as::<EveryType>(
                "SELECT id, flag, small, medium, big, real_, double, an_oid, body, label, code, \
                        ident, one_byte, raw, ref, doc, docb, at_local, created_at, day, clock, \
                        amount, addr, net, span, note, tags, scores, m, \
                        pos::text AS pos, \"type\", \"Weird Name\" \
                 FROM every_type ORDER BY id",
                &[],
            )
            .await
            .expect("fetch_all_as::<EveryType>")
        })
    });
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert_eq!((r.id, r.flag, r.small, r.medium, r.big), (1, true, 2, 3, 4));
    assert_eq!((r.real_, r.double, r.an_oid), (1.5, 2.25, 42));
    assert_eq!(
        (&*r.body, &*r.label, &*r.code, &*r.ident),
        ("body", "label", "abc", "ident")
    );
    assert_eq!(r.one_byte, b'x' as i8);
    assert_eq!(r.raw, vec![1u8, 2]);
    assert_eq!(
        r.r#ref,
        uuid::Uuid::parse_str("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11").expect("uuid")
    );
    assert_eq!(r.doc, serde_json::json!({"a": 1}));
    assert_eq!(r.docb, serde_json::json!({"b": [true]}));
    let at = chrono::NaiveDate::from_ymd_opt(2024, 1, 2)
        .and_then(|d| d.and_hms_opt(3, 4, 5))
        .expect("date");
    assert_eq!(r.at_local, at);
    assert_eq!(r.created_at, at.and_utc());
    assert_eq!(r.day, at.date());
    assert_eq!(r.clock, at.time());
    assert_eq!(r.amount.to_string(), "1234.50");
    assert_eq!(r.addr.to_string(), "192.168.0.1");
    assert_eq!(r.net.to_string(), "10.0.0.0/8");
    assert_eq!(r.note, None);
    assert_eq!(r.tags, ["x", "y"]);
    assert_eq!(r.scores, Some(vec![1, 2]));
    assert_eq!(r.m, "sad");
    assert_eq!(r.pos.as_deref(), Some("(1,2)"));
    assert_eq!(r.r#type, "kind");
    assert_eq!(r.weird_name, 7);

    // serde: the renamed column keeps its name, and the JSON reads back into the struct.
    let json = serde_json::to_value(r).expect("serialize");
    assert_eq!(json["Weird Name"], 7);
    assert_eq!(json["type"], "kind");
    assert_eq!(json["ref"], "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
    let back: EveryType = serde_json::from_value(json.clone()).expect("deserialize");
    assert_eq!(serde_json::to_value(&back).expect("serialize again"), json);
    let _ = format!("{:?}", back.clone());
}

#[test]
fn generate_model_reproduces_the_golden_file() {
    let sb = sandbox();
    let run = sb.run(&["generate", "model", "every_type"]);
    let printed = &run.ok().stdout;
    assert!(
        printed == GOLDEN,
        "`pgdbm generate model every_type` differs from tests/golden/every_type.rs; if the \
         change is intended, regenerate the golden file (see golden/every_type.sql).\n\
         printed:\n{printed}"
    );
}
