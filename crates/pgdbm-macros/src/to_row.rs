//! `#[derive(ToRow)]`: a struct as one row of parameters, for `executemany` and COPY.

use proc_macro2::TokenStream;
use quote::quote;
use syn::DeriveInput;

use crate::from_row::{crate_path, FieldAttrs};

pub(crate) fn expand(input: &DeriveInput) -> syn::Result<TokenStream> {
    let syn::Data::Struct(syn::DataStruct {
        fields: syn::Fields::Named(fields),
        ..
    }) = &input.data
    else {
        return Err(syn::Error::new_spanned(
            &input.ident,
            "ToRow needs a struct with named fields",
        ));
    };
    let krate = crate_path(input)?;
    let mut columns = Vec::new();
    let mut arms = Vec::new();
    for field in &fields.named {
        let attrs = FieldAttrs::parse(field)?;
        // What only reading means (`default`) does not matter here; what cannot be a
        // parameter is refused.
        if let Some(span) = attrs.json.or(attrs.flatten) {
            return Err(syn::Error::new(
                span,
                "ToRow sends each field as one parameter: `json` and `flatten` are for FromRow \
                 only (wrap the field in pgdbm::types::Json, or skip it)",
            ));
        }
        if attrs.skip.is_some() {
            continue;
        }
        let ident = field.ident.as_ref().expect("named field");
        let column = match &attrs.rename {
            Some((lit, _)) => lit.value(),
            None => ident.to_string().trim_start_matches("r#").to_owned(),
        };
        let index = columns.len();
        columns.push(column);
        arms.push(quote! { #index => &self.#ident, });
    }
    let count = columns.len();
    let name = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    Ok(quote! {
        impl #impl_generics #krate::Params for #name #ty_generics #where_clause {
            fn param_count(&self) -> usize {
                #count
            }
            fn param(&self, i: usize) -> &(dyn #krate::tokio_postgres::types::ToSql + Sync) {
                match i {
                    #(#arms)*
                    _ => panic!("{} has {} parameters, not {}", stringify!(#name), #count, i + 1),
                }
            }
        }
        impl #impl_generics #krate::ToRow for #name #ty_generics #where_clause {
            fn columns() -> &'static [&'static str] {
                &[#(#columns),*]
            }
        }
    })
}
