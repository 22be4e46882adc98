//! `#[microservice(name = "...", sys_map = "...")]`: parse, validate and expand, one module each.
//!
//! [`parse`] reads the tokens into a [`parse::Input`] (the arguments as
//! written, each with its syntax mistake, and the item); [`validate`] applies
//! the rules to it and returns a [`validate::Service`], or a
//! [`validate::Rejected`] with every mistake together; [`expand`] turns
//! either into tokens. Only `validate` decides what is a mistake.
//!
//! Shape is checked here (what a parameter *is*: the request, a shared
//! reference, the `&mut` connection); types are checked by rustc through
//! the runtime's traits, each assertion spanned on the user's own type.
//! Whether the return type is a `Result` is a question about types too: an
//! alias (`anyhow::Result<C>`, `type Out = ...`) hides it from the macro.
//!
//! An attribute macro sees only the function, not whether it sits inside
//! an `impl` block. A `self` parameter gives a method away; for an
//! associated function without one, the expansion is shaped so that rustc
//! rejects exactly one of its items there (see [`expand::service`]).

mod expand;
mod parse;
mod validate;

use proc_macro2::TokenStream;
use quote::ToTokens;

/// The attribute's output for `args` on `item`: the service, or the
/// mistakes beside the user's item.
pub fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    match validate::validate(parse::parse(args, item)) {
        Ok(service) => expand::service(&service),
        Err(rejected) => expand::rejected(rejected),
    }
}

/// Tokens as a user would write them (`&mut diesel::PgConnection`, not
/// `& mut diesel :: PgConnection`), for messages.
fn display(tokens: impl ToTokens) -> String {
    let mut text = tokens.to_token_stream().to_string();
    for (from, to) in [
        (" :: ", "::"),
        (":: ", "::"),
        ("& ", "&"),
        (" <", "<"),
        ("< ", "<"),
        (" >", ">"),
        (" ,", ","),
        ("( ", "("),
        (" )", ")"),
        ("[ ", "["),
        (" ]", "]"),
        (" ;", ";"),
        (" :", ":"),
    ] {
        text = text.replace(from, to);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use syn::Type;

    /// The service `args` and `function` validate into, or the messages of
    /// their mistakes.
    pub(super) fn validated(args: TokenStream, function: TokenStream) -> Result<validate::Service, Vec<String>> {
        validate::validate(parse::parse(args, function))
            .map_err(|rejected| rejected.errors.into_iter().map(|e| e.to_string()).collect())
    }

    /// The messages of the mistakes in `args` and `function` (none if valid).
    pub(super) fn mistakes(args: TokenStream, function: TokenStream) -> Vec<String> {
        validated(args, function).err().unwrap_or_default()
    }

    #[test]
    fn types_are_displayed_as_written() {
        let ty: Type = syn::parse_quote!(&mut diesel::pg::PgConnection);
        assert_eq!(display(&ty), "&mut diesel::pg::PgConnection");
        let ty: Type = syn::parse_quote!(Vec<(u64, &'static str)>);
        assert_eq!(display(&ty), "Vec<(u64, &'static str)>");
        let ty: Type = syn::parse_quote!(HashMap<u64, Vec<u8>>);
        assert_eq!(display(&ty), "HashMap<u64, Vec<u8>>");
    }
}
