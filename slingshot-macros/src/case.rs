//! `#[derive(Case)]`: an enum of unit variants becomes a case variable.
//!
//! A variant routes by its name, by `#[case(rename = "...")]`, or, under
//! `#[case(int)]`, by its discriminant.

use proc_macro2::TokenStream;
use quote::quote;
use syn::{Data, DeriveInput, Expr, Fields, Lit, Meta};

use crate::ctxt::Ctxt;

pub fn expand(input: TokenStream) -> TokenStream {
    let input: DeriveInput = match syn::parse2(input) {
        Ok(input) => input,
        Err(e) => return e.to_compile_error(),
    };
    let Data::Enum(data) = &input.data else {
        let error = syn::Error::new_spanned(
            &input.ident,
            "#[derive(Case)] works on enums of unit variants; for a struct, return one of its fields as the case",
        );
        return with_errors(error, &input);
    };
    let mut cx = Ctxt::new();
    if !input.generics.params.is_empty() {
        cx.error_spanned(&input.generics, "#[derive(Case)] does not support generic enums");
    }
    if data.variants.is_empty() {
        cx.error_spanned(&input.ident, "an enum without variants has no case to route");
    }
    let mut int = false;
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("case")) {
        match &attr.meta {
            Meta::List(list) => {
                let parsed = list.parse_nested_meta(|meta| {
                    if meta.path.is_ident("int") {
                        int = true;
                        Ok(())
                    } else {
                        Err(meta.error("unknown enum option; `#[case(int)]` routes by discriminant (variants take `#[case(rename = \"...\")]`)"))
                    }
                });
                if let Err(e) = parsed {
                    cx.push(e);
                }
            }
            other => cx.error_spanned(other, "expected `#[case(int)]`"),
        }
    }

    let ident = &input.ident;
    let mut arms = Vec::new();
    let mut values = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    for variant in &data.variants {
        if !matches!(variant.fields, Fields::Unit) {
            cx.error_spanned(
                &variant.fields,
                format!("case variants carry no data: make `{}` a unit variant", variant.ident),
            );
            continue;
        }
        let mut rename: Option<syn::LitStr> = None;
        for attr in variant.attrs.iter().filter(|a| a.path().is_ident("case")) {
            let parsed = attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("rename") {
                    let mut value: Expr = meta.value()?.parse()?;
                    // A `$name:literal` from a `macro_rules!` macro comes in an invisible group.
                    while let Expr::Group(group) = value {
                        value = *group.expr;
                    }
                    match value {
                        Expr::Lit(syn::ExprLit { lit: Lit::Str(s), .. }) => {
                            rename = Some(s);
                            Ok(())
                        }
                        other => Err(syn::Error::new_spanned(
                            other,
                            "`rename` takes a string literal, e.g. `#[case(rename = \"spam\")]`",
                        )),
                    }
                } else {
                    Err(meta.error("unknown variant option; the option is `rename = \"...\"`"))
                }
            });
            if let Err(e) = parsed {
                cx.push(e);
            }
        }
        let name = &variant.ident;
        if int {
            if let Some(rename) = &rename {
                cx.error_spanned(rename, "`rename` names a string case, but `#[case(int)]` routes this enum by discriminant; remove one of them");
            }
            arms.push(quote!(Self::#name => ::slingshot::CaseValue::Int(Self::#name as i128)));
            values.push(quote!(::slingshot::CaseValue::Int(Self::#name as i128)));
        } else {
            let text = rename
                .as_ref()
                .map(syn::LitStr::value)
                .unwrap_or_else(|| name.to_string());
            if seen.contains(&text) {
                cx.error_spanned(
                    rename.as_ref().map(|r| quote!(#r)).unwrap_or_else(|| quote!(#name)),
                    format!("case {text:?} is produced by two variants; rename one of them"),
                );
            }
            seen.push(text.clone());
            arms.push(quote!(Self::#name => ::slingshot::CaseValue::Str(::std::borrow::Cow::Borrowed(#text))));
            values.push(quote!(::slingshot::CaseValue::Str(::std::borrow::Cow::Borrowed(#text))));
        }
    }
    if let Err(errors) = cx.check() {
        return with_errors(errors, &input);
    }
    quote! {
        impl ::slingshot::Case for #ident {
            fn to_case(&self) -> ::slingshot::CaseValue {
                match self { #(#arms,)* }
            }
            fn domain() -> ::slingshot::CaseDomain {
                ::slingshot::CaseDomain::OneOf(::std::vec![#(#values),*])
            }
        }
    }
}

/// The errors, and a placeholder implementation so that uses of the type as a
/// case are not reported as a second mistake.
fn with_errors(errors: syn::Error, input: &DeriveInput) -> TokenStream {
    let errors = errors.to_compile_error();
    if !input.generics.params.is_empty() {
        return errors;
    }
    let ident = &input.ident;
    quote! {
        #errors
        impl ::slingshot::Case for #ident {
            fn to_case(&self) -> ::slingshot::CaseValue {
                ::core::unreachable!()
            }
            fn domain() -> ::slingshot::CaseDomain {
                ::core::unreachable!()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctxt::compile_errors as errors;
    use proc_macro2::{Delimiter, Group, TokenTree};

    #[test]
    fn variants_route_by_name_or_rename() {
        let output = expand(quote! {
            enum Verdict { Accepted, #[case(rename = "spam")] Junk }
        });
        assert!(errors(&output).is_empty());
        let text = output.to_string();
        assert!(text.contains("\"Accepted\"") && text.contains("\"spam\"") && !text.contains("\"Junk\""));
    }

    #[test]
    fn a_rename_from_macro_rules_is_accepted() {
        let rename = TokenTree::Group(Group::new(Delimiter::None, quote!("spam")));
        let output = expand(quote! {
            enum Verdict { #[case(rename = #rename)] Junk }
        });
        assert!(errors(&output).is_empty(), "{:?}", errors(&output));
        assert!(output.to_string().contains("\"spam\""));
    }

    #[test]
    fn mistakes_are_reported_together_with_a_placeholder_impl() {
        let output = expand(quote! {
            #[case(int)]
            enum Priority { Low = 1, #[case(rename = "high")] High = 2, Broken(u8) }
        });
        let errors = errors(&output);
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].starts_with("`rename` names a string case"));
        assert!(errors[1].starts_with("case variants carry no data"));
        // The placeholder keeps uses of `Priority` as a case from failing too.
        assert!(output.to_string().contains("impl :: slingshot :: Case for Priority"));
    }

    #[test]
    fn duplicate_cases_are_reported() {
        let output = expand(quote! {
            enum Verdict { #[case(rename = "Ham")] Spam, Ham }
        });
        assert_eq!(
            errors(&output),
            ["case \"Ham\" is produced by two variants; rename one of them"]
        );
    }
}
