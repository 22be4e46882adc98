//! Procedural macros of slingshot: `#[microservice]` and `#[derive(Case)]`.
//!
//! Thin: parse, validate, expand; all logic about types is left to rustc
//! through the runtime's traits.

mod case;
mod ctxt;
mod microservice;

use proc_macro::TokenStream;

/// Turns a `process` function into a slingshot service. See the `slingshot` crate.
#[proc_macro_attribute]
pub fn microservice(args: TokenStream, item: TokenStream) -> TokenStream {
    microservice::expand(args.into(), item.into()).into()
}

/// Derives `slingshot::Case` for an enum of unit variants. See the `slingshot` crate.
#[proc_macro_derive(Case, attributes(case))]
pub fn derive_case(input: TokenStream) -> TokenStream {
    case::expand(input.into()).into()
}
