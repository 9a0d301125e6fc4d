//! Rows of parameters for the batch methods, and masking of parameters for logs and errors.

use std::fmt::Write;

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

/// Values longer than this are shown only as their length.
const MAX_SHOWN: usize = 20;

/// Parameters for logs and errors: short values as written, longer ones as `<N chars>`.
pub(crate) fn mask_params<'a>(params: impl Iterator<Item = &'a (dyn ToSql + Sync)>) -> String {
    let mut out = String::from("[");
    for (i, p) in params.enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let shown = format!("{p:?}");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_long_values() {
        let long = "x".repeat(50);
        let short = "hi";
        let n = 5_i32;
        let params: [&(dyn ToSql + Sync); 3] = [&long, &short, &n];
        let s = mask_params(params.iter().copied());
        assert_eq!(s, "[$1=<50 chars>, $2=\"hi\", $3=5]");
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
