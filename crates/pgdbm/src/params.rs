//! Rows of parameters for the batch methods, and masking of parameters for logs and errors.

use std::fmt::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio_postgres::types::ToSql;

/// One row of parameters for [`executemany`] and [`copy_records_to_table`]: a tuple of up to 16
/// values, a `Vec<Value>`, or a `Vec` of boxed values.
///
/// ```no_run
/// # async fn f(db: &pgdbm::AsyncDatabaseManager) -> pgdbm::Result<()> {
/// db.executemany("INSERT INTO {{tables.t}} (a, b) VALUES ($1, $2)", vec![(1_i32, "x"), (2, "y")]).await?;
/// let boxed: Vec<Box<dyn pgdbm::types::ToSql + Sync + Send>> = vec![Box::new(3_i32), Box::new("z")];
/// db.executemany("INSERT INTO {{tables.t}} (a, b) VALUES ($1, $2)", vec![boxed]).await?;
/// # Ok(()) }
/// ```
///
/// [`executemany`]: crate::AsyncDatabaseManager::executemany
/// [`copy_records_to_table`]: crate::AsyncDatabaseManager::copy_records_to_table
pub trait Params: Sync {
    /// Number of values.
    fn param_count(&self) -> usize;
    /// The value at `i` (`i < param_count()`).
    fn param(&self, i: usize) -> &(dyn ToSql + Sync);
}

/// A struct as one row of parameters for `executemany` and `copy_records_to_table`, with
/// its column names: `#[derive(pgdbm::ToRow)]` (feature `derive`) writes it. Each field is one
/// parameter, in declaration order; `#[pgdbm(rename = "column")]` names its column and
/// `#[pgdbm(skip)]` leaves it out.
///
/// ```no_run
/// #[derive(pgdbm::ToRow)]
/// struct NewUser {
///     email: String,
///     #[pgdbm(rename = "name")]
///     display: Option<String>,
/// }
/// use pgdbm::ToRow;
/// # async fn f(db: &pgdbm::AsyncDatabaseManager) -> pgdbm::Result<()> {
/// let users = vec![NewUser { email: "a@x.org".into(), display: None }];
/// db.executemany("INSERT INTO {{tables.users}} (email, name) VALUES ($1, $2)", &users).await?;
/// db.copy_records_to_table("users", &users, Some(NewUser::columns())).await?;
/// # Ok(()) }
/// ```
pub trait ToRow: Params {
    /// The column of each parameter, in order.
    fn columns() -> &'static [&'static str];
}

pub(crate) fn param_iter<P: Params + ?Sized>(
    row: &P,
) -> impl ExactSizeIterator<Item = &(dyn ToSql + Sync)> {
    (0..row.param_count()).map(move |i| row.param(i))
}

macro_rules! tuple_params {
    ($n:expr; $($idx:tt $t:ident),+) => {
        impl<$($t: ToSql + Sync),+> Params for ($($t,)+) {
            fn param_count(&self) -> usize { $n }
            fn param(&self, i: usize) -> &(dyn ToSql + Sync) {
                match i {
                    $($idx => &self.$idx,)+
                    _ => panic!("parameter index {i} out of range for a tuple of {}", $n),
                }
            }
        }
    };
}

tuple_params!(1; 0 A);
tuple_params!(2; 0 A, 1 B);
tuple_params!(3; 0 A, 1 B, 2 C);
tuple_params!(4; 0 A, 1 B, 2 C, 3 D);
tuple_params!(5; 0 A, 1 B, 2 C, 3 D, 4 E);
tuple_params!(6; 0 A, 1 B, 2 C, 3 D, 4 E, 5 F);
tuple_params!(7; 0 A, 1 B, 2 C, 3 D, 4 E, 5 F, 6 G);
tuple_params!(8; 0 A, 1 B, 2 C, 3 D, 4 E, 5 F, 6 G, 7 H);
tuple_params!(9; 0 A, 1 B, 2 C, 3 D, 4 E, 5 F, 6 G, 7 H, 8 I);
tuple_params!(10; 0 A, 1 B, 2 C, 3 D, 4 E, 5 F, 6 G, 7 H, 8 I, 9 J);
tuple_params!(11; 0 A, 1 B, 2 C, 3 D, 4 E, 5 F, 6 G, 7 H, 8 I, 9 J, 10 K);
tuple_params!(12; 0 A, 1 B, 2 C, 3 D, 4 E, 5 F, 6 G, 7 H, 8 I, 9 J, 10 K, 11 L);
tuple_params!(13; 0 A, 1 B, 2 C, 3 D, 4 E, 5 F, 6 G, 7 H, 8 I, 9 J, 10 K, 11 L, 12 M);
tuple_params!(14; 0 A, 1 B, 2 C, 3 D, 4 E, 5 F, 6 G, 7 H, 8 I, 9 J, 10 K, 11 L, 12 M, 13 N);
tuple_params!(15; 0 A, 1 B, 2 C, 3 D, 4 E, 5 F, 6 G, 7 H, 8 I, 9 J, 10 K, 11 L, 12 M, 13 N, 14 O);
tuple_params!(16; 0 A, 1 B, 2 C, 3 D, 4 E, 5 F, 6 G, 7 H, 8 I, 9 J, 10 K, 11 L, 12 M, 13 N, 14 O, 15 P);

impl Params for Vec<crate::Value> {
    fn param_count(&self) -> usize {
        self.len()
    }
    fn param(&self, i: usize) -> &(dyn ToSql + Sync) {
        &self[i]
    }
}

impl<T: ToSql + Sync, const N: usize> Params for [T; N] {
    fn param_count(&self) -> usize {
        N
    }
    fn param(&self, i: usize) -> &(dyn ToSql + Sync) {
        &self[i]
    }
}

impl Params for Vec<Box<dyn ToSql + Sync + Send>> {
    fn param_count(&self) -> usize {
        self.len()
    }
    fn param(&self, i: usize) -> &(dyn ToSql + Sync) {
        &*self[i]
    }
}

impl Params for [&(dyn ToSql + Sync)] {
    fn param_count(&self) -> usize {
        self.len()
    }
    fn param(&self, i: usize) -> &(dyn ToSql + Sync) {
        self[i]
    }
}

impl<P: Params + ?Sized> Params for &P {
    fn param_count(&self) -> usize {
        (**self).param_count()
    }
    fn param(&self, i: usize) -> &(dyn ToSql + Sync) {
        (**self).param(i)
    }
}

/// Values longer than this are shown only as their length, even when values are shown.
const MAX_SHOWN: usize = 20;

/// Whether logs, spans and errors show parameter values (`log_parameter_values`).
static SHOW_VALUES: AtomicBool = AtomicBool::new(false);

/// Turns showing parameter values on for the process: a pool made with
/// `log_parameter_values = true` does, and it stays on.
pub(crate) fn show_parameter_values() {
    SHOW_VALUES.store(true, Ordering::Relaxed);
}

/// Parameters for logs, spans and errors. By default each is a placeholder and the kind of
/// value it holds (`$1: text(12 chars)`, `$2: number`, `$3: NULL`), never the value: e-mail
/// addresses and tokens stay out of logs. With `log_parameter_values`, short values as
/// written and longer ones as `<N chars>`.
pub(crate) fn mask_params<'a>(params: impl Iterator<Item = &'a (dyn ToSql + Sync)>) -> String {
    mask_params_with(params, SHOW_VALUES.load(Ordering::Relaxed))
}

fn mask_params_with<'a>(
    params: impl Iterator<Item = &'a (dyn ToSql + Sync)>,
    values: bool,
) -> String {
    let mut out = String::from("[");
    for (i, p) in params.enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let shown = format!("{p:?}");
        if !values {
            let _ = write!(out, "${}: {}", i + 1, kind_of(&shown));
            continue;
        }
        let len = shown.trim_matches('"').chars().count();
        if len > MAX_SHOWN {
            let _ = write!(out, "${}=<{len} chars>", i + 1);
        } else {
            let _ = write!(out, "${}={shown}", i + 1);
        }
    }
    out.push(']');
    out
}

/// What kind of value a parameter's `Debug` form shows, without the value.
fn kind_of(debug: &str) -> String {
    let inner = debug
        .strip_prefix("Some(")
        .and_then(|d| d.strip_suffix(')'))
        .unwrap_or(debug);
    if inner == "None" {
        return "NULL".into();
    }
    if let Some(text) = inner.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        return format!("text({} chars)", text.chars().count());
    }
    if inner == "true" || inner == "false" {
        return "bool".into();
    }
    if inner.parse::<f64>().is_ok() {
        return "number".into();
    }
    if inner.starts_with('[') {
        return "array".into();
    }
    "value".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shows_kinds_by_default_and_short_values_when_asked() {
        let long = "x".repeat(50);
        let short = "hi";
        let n = 5_i32;
        let none: Option<i32> = None;
        let flag = Some(true);
        let params: [&(dyn ToSql + Sync); 5] = [&long, &short, &n, &none, &flag];
        assert_eq!(
            mask_params_with(params.iter().copied(), false),
            "[$1: text(50 chars), $2: text(2 chars), $3: number, $4: NULL, $5: bool]"
        );
        let s = mask_params_with(params.iter().copied(), true);
        assert!(s.starts_with("[$1=<50 chars>, $2=\"hi\", $3=5"), "{s}");
        assert!(!s.contains(&long));
    }

    #[test]
    fn tuples_and_vecs() {
        let t = (1_i32, "a", 2.5_f64);
        assert_eq!(t.param_count(), 3);
        let v: Vec<Box<dyn ToSql + Sync + Send>> = vec![Box::new(1_i32)];
        assert_eq!(v.param_count(), 1);
    }
}
