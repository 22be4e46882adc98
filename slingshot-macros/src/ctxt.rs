//! Error collection: every mistake of one macro call is reported together, each at its own token.
//!
//! As serde_derive's `Ctxt`: a context must be consumed by [`Ctxt::check`],
//! and dropping one that was not panics, so that no code path can gather
//! an error and then forget to report it.

use std::fmt::Display;

use quote::ToTokens;

/// Gathers errors while a macro input is checked. Consume it with
/// [`Ctxt::check`]; dropping it unchecked is a bug and panics.
pub struct Ctxt {
    /// `None` once checked.
    errors: Option<Vec<syn::Error>>,
}

impl Ctxt {
    /// A context without errors, still to be checked.
    pub fn new() -> Self {
        Ctxt {
            errors: Some(Vec::new()),
        }
    }

    /// Records an error spanning `tokens`.
    pub fn error_spanned(&mut self, tokens: impl ToTokens, message: impl Display) {
        self.push(syn::Error::new_spanned(tokens.into_token_stream(), message));
    }

    /// Records an error at `span`.
    pub fn error_at(&mut self, span: proc_macro2::Span, message: impl Display) {
        self.push(syn::Error::new(span, message));
    }

    /// Records a ready-made error.
    pub fn push(&mut self, error: syn::Error) {
        self.errors
            .as_mut()
            .expect("a checked Ctxt takes no more errors")
            .push(error);
    }

    /// Consumes the context: `Err` with every recorded error, in the order
    /// they were recorded, or `Ok` if there were none.
    pub fn check(mut self) -> Result<(), syn::Error> {
        let errors = self.errors.take().expect("a Ctxt is checked once");
        errors
            .into_iter()
            .reduce(|mut all, next| {
                all.combine(next);
                all
            })
            .map_or(Ok(()), Err)
    }
}

impl Drop for Ctxt {
    fn drop(&mut self) {
        if self.errors.is_some() && !std::thread::panicking() {
            panic!("slingshot-macros bug: a Ctxt was dropped without `check`, so its errors would be lost");
        }
    }
}

/// The messages of the `compile_error!`s in a macro's output, in order: what
/// a user would see, for tests.
#[cfg(test)]
pub(crate) fn compile_errors(output: &proc_macro2::TokenStream) -> Vec<String> {
    use proc_macro2::TokenTree;
    let tokens: Vec<TokenTree> = output.clone().into_iter().collect();
    let mut messages = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        if let TokenTree::Ident(ident) = token {
            if ident == "compile_error" {
                if let Some(TokenTree::Group(group)) = tokens.get(i + 2) {
                    let message: syn::LitStr = syn::parse2(group.stream()).unwrap();
                    messages.push(message.value());
                }
            }
        }
    }
    messages
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_come_out_together_in_order() {
        let mut cx = Ctxt::new();
        cx.error_at(proc_macro2::Span::call_site(), "first");
        cx.error_spanned(quote::quote!(a b), "second");
        let messages: Vec<String> = cx.check().unwrap_err().into_iter().map(|e| e.to_string()).collect();
        assert_eq!(messages, ["first", "second"]);
    }

    #[test]
    fn no_errors_check_ok() {
        assert!(Ctxt::new().check().is_ok());
    }

    #[test]
    #[should_panic(expected = "dropped without `check`")]
    fn an_unchecked_context_panics() {
        let mut cx = Ctxt::new();
        cx.error_at(proc_macro2::Span::call_site(), "forgotten");
        drop(cx);
    }

    #[test]
    #[should_panic(expected = "dropped without `check`")]
    fn an_unchecked_empty_context_panics_too() {
        drop(Ctxt::new());
    }
}
