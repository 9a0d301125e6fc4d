//! `#[derive(FromRow)]`: one expression per field, chosen by its `#[pgdbm(...)]` attributes.

use std::collections::HashSet;

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::{quote, ToTokens};
use syn::spanned::Spanned;
use syn::{DeriveInput, Field, Ident, LitStr, Path, Type};

const FIELD_KEYS: &str = "rename = \"column\", default, json, flatten, skip";

/// How one field is read.
#[derive(Default)]
pub(crate) struct FieldAttrs {
    pub(crate) rename: Option<(LitStr, Span)>,
    pub(crate) default: Option<Span>,
    pub(crate) json: Option<Span>,
    pub(crate) flatten: Option<Span>,
    pub(crate) skip: Option<Span>,
}

impl FieldAttrs {
    pub(crate) fn parse(field: &Field) -> syn::Result<Self> {
        let mut out = FieldAttrs::default();
        for attr in field.attrs.iter().filter(|a| a.path().is_ident("pgdbm")) {
            attr.parse_nested_meta(|meta| {
                let span = meta.path.span();
                let key = meta
                    .path
                    .get_ident()
                    .map(Ident::to_string)
                    .unwrap_or_default();
                let slot = match key.as_str() {
                    "rename" => {
                        let lit: LitStr = meta.value()?.parse()?;
                        if out.rename.is_some() {
                            return Err(meta.error("`rename` given twice"));
                        }
                        out.rename = Some((lit, span));
                        return Ok(());
                    }
                    "default" => &mut out.default,
                    "json" => &mut out.json,
                    "flatten" => &mut out.flatten,
                    "skip" => &mut out.skip,
                    "crate" => {
                        return Err(
                            meta.error("`crate` belongs on the struct: #[pgdbm(crate = \"path\")]")
                        )
                    }
                    _ => {
                        return Err(meta.error(format!(
                            "unknown pgdbm field attribute; expected one of: {FIELD_KEYS}"
                        )))
                    }
                };
                if !meta.input.is_empty() && !meta.input.peek(syn::Token![,]) {
                    return Err(meta.error(format!("`{key}` takes no value: #[pgdbm({key})]")));
                }
                if slot.replace(span).is_some() {
                    return Err(meta.error(format!("`{key}` given twice")));
                }
                Ok(())
            })?;
        }
        out.check()?;
        Ok(out)
    }

    /// Refuses combinations that cannot mean anything.
    fn check(&self) -> syn::Result<()> {
        let given = |name: &'static str, span: Option<Span>| span.map(|s| (name, s));
        let rename = self.rename.as_ref().map(|(_, s)| ("rename", *s));
        let others = [
            rename,
            given("default", self.default),
            given("json", self.json),
            given("flatten", self.flatten),
        ];
        if let Some(skip) = self.skip {
            if let Some((name, _)) = others.iter().flatten().next() {
                return Err(syn::Error::new(
                    skip,
                    format!(
                        "`skip` cannot be combined with `{name}`: a skipped field reads no column"
                    ),
                ));
            }
        }
        if let Some(flatten) = self.flatten {
            if let Some((name, _)) = others[..3].iter().flatten().next() {
                return Err(syn::Error::new(
                    flatten,
                    format!(
                        "`flatten` cannot be combined with `{name}`: a flattened field reads \
                         its own FromRow impl's columns from the same row, not one column"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// The struct-level `#[pgdbm(crate = "path")]`, default `::pgdbm`.
pub(crate) fn crate_path(input: &DeriveInput) -> syn::Result<Path> {
    let mut path = None;
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("pgdbm")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("crate") {
                let lit: LitStr = meta.value()?.parse()?;
                if path.is_some() {
                    return Err(meta.error("`crate` given twice"));
                }
                path = Some(lit.parse::<Path>()?);
                Ok(())
            } else {
                Err(meta.error(
                    "unknown pgdbm struct attribute; expected crate = \"path\" (field \
                     attributes go on the fields)",
                ))
            }
        })?;
    }
    Ok(path.unwrap_or_else(|| syn::parse_quote!(::pgdbm)))
}

pub(crate) fn expand(input: &DeriveInput) -> syn::Result<TokenStream> {
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
    let krate = crate_path(input)?;
    let params: HashSet<String> = input
        .generics
        .type_params()
        .map(|p| p.ident.to_string())
        .collect();
    let mut inits = Vec::new();
    let mut bounds = Vec::new();
    // Where each plain field's column usually is (`SELECT *` in field order): a hint, checked.
    let mut position = 0usize;
    for field in &fields.named {
        let attrs = FieldAttrs::parse(field)?;
        let ident = field.ident.as_ref().expect("named field");
        let ty = &field.ty;
        let column = match &attrs.rename {
            Some((lit, _)) => lit.value(),
            None => ident.to_string().trim_start_matches("r#").to_owned(),
        };
        let support = quote! { #krate::__derive };
        let (init, bound) = if attrs.skip.is_some() {
            (
                quote! { ::core::default::Default::default() },
                quote! { ::core::default::Default },
            )
        } else if attrs.flatten.is_some() {
            (
                quote! { <#ty as #krate::FromRow>::from_row(row)? },
                quote! { #krate::FromRow },
            )
        } else if attrs.json.is_some() {
            match attrs.default {
                Some(_) => (
                    quote! { #support::json_or_default(row, #column)? },
                    quote! { #support::DeserializeOwned + ::core::default::Default },
                ),
                None => (
                    quote! { #support::json(row, #column)? },
                    quote! { #support::DeserializeOwned },
                ),
            }
        } else {
            match attrs.default {
                Some(_) => (
                    quote! { #support::get_or_default(row, #column)? },
                    quote! { #support::FromSqlOwned + ::core::default::Default },
                ),
                None => (
                    quote! { #support::get(row, #column, #position)? },
                    quote! { #support::FromSqlOwned },
                ),
            }
        };
        if attrs.skip.is_none() && attrs.flatten.is_none() {
            position += 1;
        }
        inits.push(quote! { #ident: #init });
        // Only types that mention a type parameter need a bound; the others are checked as is.
        if mentions_any(ty, &params) {
            bounds.push(quote! { #ty: #bound });
        }
    }
    let name = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let mut predicates: Vec<TokenStream> = where_clause
        .map(|w| w.predicates.iter().map(ToTokens::to_token_stream).collect())
        .unwrap_or_default();
    predicates.extend(bounds);
    Ok(quote! {
        impl #impl_generics #krate::FromRow for #name #ty_generics where #(#predicates),* {
            fn from_row(row: &#krate::Record) -> #krate::Result<Self> {
                ::core::result::Result::Ok(Self { #(#inits),* })
            }
        }
    })
}

fn mentions_any(ty: &Type, params: &HashSet<String>) -> bool {
    fn walk(tokens: TokenStream, params: &HashSet<String>) -> bool {
        tokens.into_iter().any(|t| match t {
            TokenTree::Ident(i) => params.contains(&i.to_string()),
            TokenTree::Group(g) => walk(g.stream(), params),
            _ => false,
        })
    }
    !params.is_empty() && walk(ty.to_token_stream(), params)
}
