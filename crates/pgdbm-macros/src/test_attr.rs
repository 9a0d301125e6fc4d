//! `#[pgdbm::test]`: wraps an async test body in a fresh test database.

use proc_macro2::TokenStream;
use quote::quote;
use syn::parse::Parser;
use syn::{Expr, ExprArray, ItemFn, Lit, LitBool, LitStr};

pub(crate) fn expand(args: proc_macro::TokenStream, func: ItemFn) -> TokenStream {
    let mut options = Vec::new();
    let (mut has_modules, mut per_test_schema) = (false, None);
    let parser = syn::meta::parser(|meta| {
        let key = meta
            .path
            .get_ident()
            .map(|i| i.to_string())
            .unwrap_or_default();
        match key.as_str() {
            "migrations" => {
                let value = meta.value()?;
                if value.peek(syn::token::Bracket) {
                    let list: ExprArray = value.parse()?;
                    for (module, dir) in modules(&list)? {
                        has_modules = true;
                        options.push(quote! {
                            .module(#module, ::std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(#dir))
                        });
                    }
                } else {
                    let dir: LitStr = value.parse()?;
                    options.push(quote! {
                        .migrations(::std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(#dir))
                    });
                }
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
                    per_test_schema = Some(on.span());
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
    if let (true, Some(span)) = (has_modules, per_test_schema) {
        return syn::Error::new(
            span,
            "schema_per_test cannot take a list of modules: each module has a schema of its \
             own, which parallel tests sharing one database would collide on",
        )
        .to_compile_error();
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

/// `[("users", "migrations/users"), ...]`: (module name, directory) pairs.
fn modules(list: &ExprArray) -> syn::Result<Vec<(LitStr, LitStr)>> {
    let shape = "expected migrations = [(\"module\", \"dir\"), ...]: a module name (also its \
                 schema) and a directory relative to Cargo.toml";
    if list.elems.is_empty() {
        return Err(syn::Error::new_spanned(list, shape));
    }
    list.elems
        .iter()
        .map(|e| {
            let Expr::Tuple(t) = e else {
                return Err(syn::Error::new_spanned(e, shape));
            };
            let strings: Vec<LitStr> = t
                .elems
                .iter()
                .filter_map(|x| match x {
                    Expr::Lit(syn::ExprLit {
                        lit: Lit::Str(s), ..
                    }) => Some(s.clone()),
                    _ => None,
                })
                .collect();
            match <[LitStr; 2]>::try_from(strings) {
                Ok([module, dir]) if t.elems.len() == 2 => Ok((module, dir)),
                _ => Err(syn::Error::new_spanned(t, shape)),
            }
        })
        .collect()
}
