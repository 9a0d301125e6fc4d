//! pgdbm's macros, used through the `pgdbm` crate: `#[derive(pgdbm::FromRow)]`,
//! `#[derive(pgdbm::ToRow)]`, and
//! `#[pgdbm::test]` (feature `testing`). Both are documented where `pgdbm` re-exports them.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use proc_macro::TokenStream;
use syn::parse_macro_input;

mod from_row;
mod test_attr;
mod to_row;

// Documented where `pgdbm` re-exports it (rustdoc would show both texts).
#[allow(missing_docs)]
#[proc_macro_attribute]
pub fn test(args: TokenStream, item: TokenStream) -> TokenStream {
    test_attr::expand(args, parse_macro_input!(item as syn::ItemFn)).into()
}

// Documented on the `pgdbm::FromRow` trait, with the re-export pointing there.
#[allow(missing_docs)]
#[proc_macro_derive(FromRow, attributes(pgdbm))]
pub fn derive_from_row(item: TokenStream) -> TokenStream {
    let input = parse_macro_input!(item as syn::DeriveInput);
    match from_row::expand(&input) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

// Documented on the `pgdbm::ToRow` trait, with the re-export pointing there.
#[allow(missing_docs)]
#[proc_macro_derive(ToRow, attributes(pgdbm))]
pub fn derive_to_row(item: TokenStream) -> TokenStream {
    let input = parse_macro_input!(item as syn::DeriveInput);
    match to_row::expand(&input) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}
