//! Tests of `error`.

use std::fmt;

use super::*;

#[derive(Debug)]
struct Layer(String, Option<Box<Layer>>);

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Layer {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.1.as_deref().map(|l| l as _)
    }
}

#[test]
fn timeouts_say_what_happened() {
    let query = Error::Timeout {
        operation: "SELECT pg_sleep(5)".into(),
        after: Duration::from_millis(200),
    };
    assert!(query.is_timeout());
    assert_eq!(query.kind(), ErrorKind::Timeout);
    assert!(
        query.to_string().contains("cancelled on the server"),
        "{query}"
    );
    let exhausted = Error::AcquireTimeout {
        after: Duration::from_millis(100),
        size: 4,
        max_size: 4,
        waiting: 2,
    };
    assert!(exhausted.is_timeout());
    assert_eq!(exhausted.kind(), ErrorKind::Timeout);
    let text = exhausted.to_string();
    assert!(!text.contains("cancelled"), "{text}");
    assert!(
        text.contains("no connection became free within 100ms"),
        "{text}"
    );
    assert!(text.contains("exhausted (4/4"), "{text}");
    assert!(text.contains("2 other task(s) waiting"), "{text}");
    assert!(text.contains("no query was sent"), "{text}");
    let slow = Error::AcquireTimeout {
        after: Duration::from_secs(1),
        size: 1,
        max_size: 4,
        waiting: 0,
    };
    assert!(
        slow.to_string().contains("opening a new connection"),
        "{slow}"
    );
    assert_eq!(Error::Pool("x".into()).kind(), ErrorKind::Other);
}

#[test]
fn causes_are_shown_once_and_cut_short() {
    let long = format!("value {} is too long", "x".repeat(5000));
    let e = Layer(
        "error serializing parameter 0".into(),
        Some(Box::new(Layer(
            "cannot convert".into(),
            Some(Box::new(Layer(
                "cannot convert".into(),
                Some(Box::new(Layer(long.clone(), None))),
            ))),
        ))),
    );
    let text = with_causes(&e);
    assert!(
        text.starts_with("error serializing parameter 0: cannot convert: value xxx"),
        "{text}"
    );
    assert_eq!(text.matches("cannot convert").count(), 1, "{text}");
    assert!(!text.contains(&long), "a long cause is cut");
    assert!(text.len() < 300, "{}", text.len());
    assert!(text.ends_with(&format!("({} bytes)", long.len())), "{text}");
}
