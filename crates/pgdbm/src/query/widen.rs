//! Binary COPY values widened to their column's type where nothing is lost: binary COPY has no
//! implicit casts, so an `i32` sent to a `bigint` column must be encoded as a `bigint`.

use std::error::Error as StdError;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::{Buf, BufMut, BytesMut};
use postgres_types::{IsNull, ToSql, Type, WrongType};

use crate::params::Params;

type BoxError = Box<dyn StdError + Sync + Send>;

/// A target column of a binary COPY, with the way the last value was encoded into it (the
/// values of one column usually share a Rust type, so the next is tried that way first).
pub(crate) struct CopyColumn {
    pub(crate) name: String,
    pub(crate) ty: Type,
    /// 0: as the column's own type; `k`: as `narrower(ty)[k - 1]`, then widened.
    route: AtomicUsize,
}

impl CopyColumn {
    pub(crate) fn new(name: String, ty: Type) -> Self {
        CopyColumn {
            name,
            ty,
            route: AtomicUsize::new(0),
        }
    }
}

/// The types a value may be encoded as and then widened to `ty` without loss, by OID.
fn narrower(ty: &Type) -> &'static [u32] {
    const INT2: u32 = 21;
    const INT4: u32 = 23;
    const INT8: u32 = 20;
    const FLOAT4: u32 = 700;
    match ty.oid() {
        INT4 => &[INT2],
        INT8 => &[INT4, INT2],
        FLOAT4 => &[INT2],
        701 => &[FLOAT4, INT4, INT2],
        1700 => &[INT8, INT4, INT2],
        _ => &[],
    }
}

/// One value of a binary COPY row, encoded as its column's type, widened if need be.
pub(crate) struct Widened<'a> {
    pub(crate) value: &'a (dyn ToSql + Sync),
    pub(crate) column: &'a CopyColumn,
}

impl fmt::Debug for Widened<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.value.fmt(f)
    }
}

/// A row's values, each with its column. A named iterator rather than `zip(..).map(closure)`:
/// a closure held across an await makes the caller's future fail `tokio::spawn`'s `Send`
/// check (a rustc limitation with higher-ranked lifetimes).
pub(crate) struct WidenedRow<'a, P: ?Sized> {
    row: &'a P,
    columns: &'a [CopyColumn],
    next: usize,
}

impl<'a, P: Params + ?Sized> WidenedRow<'a, P> {
    pub(crate) fn new(row: &'a P, columns: &'a [CopyColumn]) -> Self {
        WidenedRow {
            row,
            columns,
            next: 0,
        }
    }
}

impl<'a, P: Params + ?Sized> Iterator for WidenedRow<'a, P> {
    type Item = Widened<'a>;

    fn next(&mut self) -> Option<Widened<'a>> {
        let column = self.columns.get(self.next)?;
        if self.next >= self.row.param_count() {
            return None;
        }
        let value = self.row.param(self.next);
        self.next += 1;
        Some(Widened { value, column })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.columns.len().min(self.row.param_count()) - self.next;
        (n, Some(n))
    }
}

impl<P: Params + ?Sized> ExactSizeIterator for WidenedRow<'_, P> {}

/// A value whose Rust type the column cannot take without loss.
#[derive(Debug)]
pub(crate) struct NotLossless {
    column: String,
    column_type: String,
    rust_type: String,
}

impl fmt::Display for NotLossless {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "column `{}` is of type {}, which cannot take a Rust `{}` without loss or a cast. \
             COPY widens only where nothing is lost (i16 into integer, bigint, real, double \
             precision or numeric; i32 into bigint, double precision or numeric; i64 into \
             numeric; f32 into double precision): convert the value in Rust or change the \
             column's type",
            self.column, self.column_type, self.rust_type
        )
    }
}

impl StdError for NotLossless {}

impl Widened<'_> {
    /// Encodes the value as `narrow` (when its Rust type takes that) and widens it to
    /// `self.column.ty`. `None`: the Rust type does not take `narrow`.
    fn via(&self, narrow: &Type, out: &mut BytesMut) -> Option<Result<IsNull, BoxError>> {
        let mark = out.len();
        match self.value.to_sql_checked(narrow, out) {
            Ok(IsNull::Yes) => Some(Ok(IsNull::Yes)),
            Ok(IsNull::No) => {
                // At most 8 bytes: copied out, so the widened value goes where it was.
                let mut raw = [0u8; 8];
                let len = (out.len() - mark).min(8);
                raw[..len].copy_from_slice(&out[mark..mark + len]);
                let len = out.len() - mark;
                out.truncate(mark);
                Some(
                    widen(narrow, &self.column.ty, &raw[..len.min(8)], len, out)
                        .map(|()| IsNull::No),
                )
            }
            Err(e) if e.is::<WrongType>() => {
                out.truncate(mark);
                None
            }
            Err(e) => Some(Err(e)),
        }
    }
}

impl ToSql for Widened<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        self.to_sql_checked(ty, out)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    fn to_sql_checked(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        let candidates = narrower(ty);
        let route = &self.column.route;
        // The way the previous value of this column went, first.
        let last = route.load(Ordering::Relaxed);
        if last > 0 {
            if let Some(r) = Type::from_oid(candidates[last - 1]).and_then(|n| self.via(&n, out)) {
                return r;
            }
        }
        let wrong = match self.value.to_sql_checked(ty, out) {
            Err(e) if e.is::<WrongType>() => e,
            other => {
                route.store(0, Ordering::Relaxed);
                return other;
            }
        };
        for (k, oid) in candidates.iter().enumerate() {
            if let Some(r) = Type::from_oid(*oid).and_then(|n| self.via(&n, out)) {
                route.store(k + 1, Ordering::Relaxed);
                return r;
            }
        }
        Err(Box::new(NotLossless {
            column: self.column.name.clone(),
            column_type: ty.name().to_owned(),
            rust_type: rust_type(&*wrong),
        }))
    }
}

/// The Rust type named by the driver's `WrongType` error (it keeps the name private).
fn rust_type(wrong: &(dyn StdError + Sync + Send)) -> String {
    let text = wrong.to_string();
    text.split('`')
        .nth(1)
        .unwrap_or("value of this type")
        .to_owned()
}

/// Writes `raw`, a binary `from` value, as the wider type `to`.
fn widen(
    from: &Type,
    to: &Type,
    mut raw: &[u8],
    len: usize,
    out: &mut BytesMut,
) -> Result<(), BoxError> {
    enum N {
        Int(i64),
        Float(f32),
    }
    let n = match (from.oid(), len) {
        (21, 2) => N::Int(raw.get_i16().into()),
        (23, 4) => N::Int(raw.get_i32().into()),
        (20, 8) => N::Int(raw.get_i64()),
        (700, 4) => N::Float(raw.get_f32()),
        _ => return Err(format!("unexpected binary {from} value of {len} bytes").into()),
    };
    // Only the pairs `narrower` lists come here, and each of them is exact.
    match (n, to.oid()) {
        (N::Int(v), 23) => out.put_i32(v as i32),
        (N::Int(v), 20) => out.put_i64(v),
        (N::Int(v), 700) => out.put_f32(v as f32),
        (N::Int(v), 701) => out.put_f64(v as f64),
        (N::Float(v), 701) => out.put_f64(v.into()),
        (N::Int(v), 1700) => {
            crate::types::Numeric::from(v).to_sql(to, out)?;
        }
        _ => return Err(format!("no widening from {from} to {to}").into()),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(value: &(dyn ToSql + Sync), ty: Type) -> Result<BytesMut, BoxError> {
        let column = CopyColumn::new("c".into(), ty.clone());
        let mut out = BytesMut::new();
        Widened {
            value,
            column: &column,
        }
        .to_sql_checked(&ty, &mut out)?;
        Ok(out)
    }

    #[test]
    fn widens_exactly() {
        assert_eq!(
            &encode(&-2_i32, Type::INT8).unwrap()[..],
            &(-2_i64).to_be_bytes()
        );
        assert_eq!(
            &encode(&7_i16, Type::INT4).unwrap()[..],
            &7_i32.to_be_bytes()
        );
        assert_eq!(
            &encode(&1.5_f32, Type::FLOAT8).unwrap()[..],
            &1.5_f64.to_be_bytes()
        );
        assert_eq!(&encode(&None::<i32>, Type::INT8).unwrap()[..], b"");
        // A value that already matches is written as it is.
        assert_eq!(
            &encode(&9_i64, Type::INT8).unwrap()[..],
            &9_i64.to_be_bytes()
        );
    }

    #[test]
    fn refuses_narrowing_and_names_column_and_types_but_no_value() {
        let e = encode(&123_456_789_i64, Type::INT4).unwrap_err();
        let text = e.to_string();
        assert!(e.is::<NotLossless>(), "{text}");
        assert!(text.contains("column `c` is of type int4"), "{text}");
        assert!(text.contains("Rust `i64`"), "{text}");
        assert!(!text.contains("123456789"), "{text}");
        let e = encode(&0.1_f64, Type::FLOAT4).unwrap_err();
        assert!(e.to_string().contains("Rust `f64`"), "{e}");
        let e = encode(&"x", Type::INT8).unwrap_err();
        assert!(e.to_string().contains("Rust `&str`"), "{e}");
    }
}
