//! pgdbm's macros, used through the `pgdbm` crate: `#[derive(pgdbm::FromRow)]`, and
//! `#[pgdbm::test]` (feature `testing`).
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

/// `#[derive(FromRow)]`: reads a struct with named fields from a row, each field from the
/// column of the same name (or `#[pgdbm(rename = "col")]`) with the field type's `FromSql`.
/// See `pgdbm::FromRow`.
#[proc_macro_derive(FromRow, attributes(pgdbm))]
pub fn derive_from_row(item: TokenStream) -> TokenStream {
    let input = parse_macro_input!(item as syn::DeriveInput);
    match from_row(&input) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

fn from_row(input: &syn::DeriveInput) -> syn::Result<proc_macro2::TokenStream> {
    let syn::Data::Struct(syn::DataStruct {
        fields: syn::Fields::Named(fields),
        ..
    }) = &input.data
    else {
        return Err(syn::Error::new_spanned(
            &input.ident,
            "FromRow needs a struct with named fields",
        ));
    };
    let mut inits = Vec::new();
    for field in &fields.named {
        let ident = field.ident.as_ref().expect("named field");
        let mut column = ident.to_string().trim_start_matches("r#").to_owned();
        for attr in field.attrs.iter().filter(|a| a.path().is_ident("pgdbm")) {
            attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("rename") {
                    column = meta.value()?.parse::<LitStr>()?.value();
                    Ok(())
                } else {
                    Err(meta.error("expected `rename = \"column\"`"))
                }
            })?;
        }
        inits.push(quote! { #ident: row.get(#column)? });
    }
    let name = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    Ok(quote! {
        impl #impl_generics ::pgdbm::FromRow for #name #ty_generics #where_clause {
            fn from_row(row: &::pgdbm::Record) -> ::pgdbm::Result<Self> {
                ::std::result::Result::Ok(Self { #(#inits),* })
            }
        }
    })
}
