//! `#[pgdbm::test]`: wraps an async test body in a fresh test database.

use proc_macro2::TokenStream;
use quote::quote;
use syn::parse::Parser;
use syn::{ItemFn, LitBool, LitStr};

pub(crate) fn expand(args: proc_macro::TokenStream, func: ItemFn) -> TokenStream {
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
        return e.to_compile_error();
    }
    if func.sig.asyncness.is_none() {
        return syn::Error::new_spanned(
            func.sig.fn_token,
            "#[pgdbm::test] functions must be async",
        )
        .to_compile_error();
    }
    if func.sig.inputs.len() > 1 {
        return syn::Error::new_spanned(
            &func.sig.inputs,
            "#[pgdbm::test] functions take at most one argument: the AsyncDatabaseManager",
        )
        .to_compile_error();
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
}
