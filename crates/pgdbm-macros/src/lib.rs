//! `#[pgdbm::test]`: use it through the `pgdbm` crate (feature `testing`), not directly.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use proc_macro::TokenStream;
use quote::quote;
use syn::parse::Parser;
use syn::{parse_macro_input, ItemFn, LitBool, LitStr};

/// Runs an async test against a fresh database, dropped afterwards whether the test passes or
/// panics. The function takes the connected manager (or nothing) and returns `()` or a
/// `Result`.
///
/// Options: `migrations = "dir"` (relative to the crate's `Cargo.toml`; applied once to a
/// template that each test clones), `schema = "name"` (the manager's schema),
/// `schema_per_test = true` (one database, a fresh schema per test), `template = false`
/// (migrate every test database from scratch), `prefix = "test"`.
///
/// ```ignore
/// #[pgdbm::test(migrations = "migrations", schema = "app")]
/// async fn inserts(db: pgdbm::AsyncDatabaseManager) -> pgdbm::Result<()> {
///     db.execute("INSERT INTO {{tables.users}} (email) VALUES ('a@x')", &[]).await?;
///     Ok(())
/// }
/// ```
#[proc_macro_attribute]
pub fn test(args: TokenStream, item: TokenStream) -> TokenStream {
    let func = parse_macro_input!(item as ItemFn);
    let mut options = Vec::new();
    let parser = syn::meta::parser(|meta| {
        let key = meta
            .path
            .get_ident()
            .map(|i| i.to_string())
            .unwrap_or_default();
        match key.as_str() {
            "migrations" => {
                let dir: LitStr = meta.value()?.parse()?;
                options.push(quote! {
                    .migrations(::std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(#dir))
                });
            }
            "schema" => {
                let schema: LitStr = meta.value()?.parse()?;
                options.push(quote! { .schema(#schema) });
            }
            "prefix" => {
                let prefix: LitStr = meta.value()?.parse()?;
                options.push(quote! { .prefix(#prefix) });
            }
            "schema_per_test" => {
                let on: LitBool = meta.value()?.parse()?;
                if on.value {
                    options.push(quote! { .schema_per_test() });
                }
            }
            "template" => {
                let on: LitBool = meta.value()?.parse()?;
                if !on.value {
                    options.push(quote! { .without_template() });
                }
            }
            _ => return Err(meta.error(
                "unknown option; expected migrations, schema, prefix, schema_per_test or template",
            )),
        }
        Ok(())
    });
    if let Err(e) = parser.parse(args) {
        return e.to_compile_error().into();
    }
    if func.sig.asyncness.is_none() {
        return syn::Error::new_spanned(
            func.sig.fn_token,
            "#[pgdbm::test] functions must be async",
        )
        .to_compile_error()
        .into();
    }
    if func.sig.inputs.len() > 1 {
        return syn::Error::new_spanned(
            &func.sig.inputs,
            "#[pgdbm::test] functions take at most one argument: the AsyncDatabaseManager",
        )
        .to_compile_error()
        .into();
    }
    let attrs = &func.attrs;
    let vis = &func.vis;
    let name = &func.sig.ident;
    let output = &func.sig.output;
    let block = &func.block;
    let inputs = &func.sig.inputs;
    let call = if inputs.is_empty() {
        quote! { |_db: ::pgdbm::AsyncDatabaseManager| __pgdbm_test_body() }
    } else {
        quote! { __pgdbm_test_body }
    };
    quote! {
        #[::core::prelude::v1::test]
        #(#attrs)*
        #vis fn #name() {
            async fn __pgdbm_test_body(#inputs) #output #block
            let builder = ::pgdbm::testing::TestDatabase::builder() #(#options)*;
            ::pgdbm::testing::__private::run(builder, #call);
        }
    }
    .into()
}
