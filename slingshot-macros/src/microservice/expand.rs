//! Expand: a valid service into its handler, registration and `main`; mistakes beside the user's item.
//!
//! Generated code names only `::slingshot::__private` paths and items
//! prefixed `__slingshot_`, so a user's crate needs no other dependency.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;

use super::parse::Item;
use super::validate::{Param, Rejected, Service};

/// The output when the input has mistakes: the errors, and the user's item,
/// so that rustc reports its body's own errors and the IDE keeps working.
pub(super) fn rejected(rejected: Rejected) -> TokenStream {
    let Rejected {
        errors,
        item,
        main,
        named_main,
    } = rejected;
    let errors = errors.to_compile_error();
    let function = match item {
        Item::Function(function) => function,
        Item::Other { tokens, .. } => {
            // A stub `main` so that rustc does not add "`main` function not
            // found" to the one mistake.
            let stub = main.then(stub_main);
            return quote! { #tokens #stub #errors };
        }
    };
    if named_main {
        // Kept out of the crate root, so that rustc does not also complain
        // about the signature of `main`; a stub stands in for it.
        let stub = stub_main();
        return quote! {
            const _: () = {
                #[allow(dead_code)]
                #function
            };
            #stub
            #errors
        };
    }
    // A stub `main`, so that rustc does not add "`main` function not found";
    // not inside an `impl`, where it would be an associated function.
    let in_impl = matches!(function.sig.inputs.first(), Some(syn::FnArg::Receiver(_)));
    let stub = (main && !in_impl).then(stub_main);
    quote! { #function #stub #errors }
}

fn stub_main() -> TokenStream {
    quote! {
        #[allow(dead_code)]
        fn main() {}
    }
}

/// The spans of the first and the last token of `tokens`. On stable rustc a
/// proc macro cannot join spans, but rustc spans an expression from its
/// first token to its last: tokens built with these two point at all of
/// `tokens`, not only at their first token (`impl` of `impl Iterator<...>`).
fn outer_spans(tokens: impl ToTokens) -> (Span, Span) {
    let mut tokens = tokens.into_token_stream().into_iter();
    let first = tokens.next().map_or_else(Span::call_site, |t| t.span());
    let last = tokens.last().map_or(first, |t| t.span());
    (first, last)
}

/// The service's expansion: the user's function, its handler and
/// registration inside a trait, and `main` unless `main = false`.
pub(super) fn service(service: &Service) -> TokenStream {
    let Service {
        name,
        sys_map,
        main,
        once,
        function,
        ..
    } = service;
    let fn_name = &function.sig.ident;
    let container = format_ident!("__slingshot_service_{}", fn_name);
    let handler = format_ident!("__slingshot_handler_{}", fn_name);
    let def = format_ident!("__SLINGSHOT_SERVICE_{}", fn_name);
    let private = quote!(::slingshot::__private);

    let connection = match &service.connection {
        Some(ty) => quote_spanned!(ty.span()=> #ty),
        None => quote!(#private::NoConnection),
    };
    // Typed objects are read (and checked) before `process` runs: one that
    // does not parse fails the request without calling it.
    let objects: Vec<_> = service
        .params
        .iter()
        .filter_map(|param| match param {
            Param::Object { reference, ty } => Some((reference, ty)),
            _ => None,
        })
        .collect();
    let bind_objects = objects.iter().enumerate().map(|(i, (reference, ty))| {
        let var = format_ident!("__slingshot_object_{}", i);
        let bind = quote_spanned!(ty.span()=>
            <#ty as #private::ObjectParam>::bind(__slingshot_parts, #reference, __slingshot_request)
        );
        quote! {
            let #var = match #bind {
                ::core::result::Result::Ok(value) => value,
                ::core::result::Result::Err(error) => {
                    return ::core::result::Result::Err(::std::boxed::Box::new(error));
                }
            };
        }
    });
    let schemas = objects
        .iter()
        .map(|(reference, ty)| quote_spanned!(ty.span()=> <#ty as #private::ObjectParam>::schema(#reference)));
    let mut object_index = 0usize;
    let args: Vec<_> = service
        .params
        .iter()
        .map(|param| match param {
            Param::Request(ty) => {
                quote_spanned!(ty.span()=> <#ty as #private::RequestId>::from_id(__slingshot_request))
            }
            Param::Shared(ty) => {
                quote_spanned!(ty.span()=> <#ty as #private::RefParam>::from_parts(__slingshot_parts))
            }
            Param::Connection => quote!(__slingshot_connection),
            Param::Object { .. } => {
                let var = format_ident!("__slingshot_object_{}", object_index);
                object_index += 1;
                quote!(#var)
            }
        })
        .collect();
    let call = if function.sig.asyncness.is_some() {
        quote!(#private::block_on_local(async { #fn_name(#(#args),*).await }))
    } else {
        quote!(#fn_name(#(#args),*))
    };

    // The return type is `Result<C, E>` or plain `C`, whatever either is
    // called. A `FormProbe` tells which (by what the type is), `returns` checks
    // it: `C` must be `Outputs`, `E` a `ProcessError`. A wrong type is
    // reported by those bounds, at the user's return type: named in a
    // turbofish where possible; an `impl Trait` cannot be named, so there
    // the call itself is spanned from the type's first token to its last.
    let output = &service.output;
    let (first, last) = outer_spans(output);
    let (convert, domain) = if service.opaque_output {
        // `identity(value)`, spanned from the type's first token to its
        // last: the argument rustc blames for an unsatisfied bound.
        let identity = quote_spanned!(first=> ::core::convert::identity);
        let value = quote_spanned!(last=> (__slingshot_returned));
        let convert = quote! {
            use #private::PlainForm as _;
            let __slingshot_form = #private::FormProbe::of(&__slingshot_returned).form();
            #private::convert(__slingshot_form, #identity #value)
        };
        // An `impl Trait` type cannot be named outside the function, so
        // its case type is unknown at start-up and the route check is
        // skipped.
        (convert, quote!(::core::option::Option::None))
    } else {
        let returns = quote_spanned!(first=>
            #private::returns::<#output, _>(#private::FormProbe::<#output>::new().form())
        );
        (
            quote! {
                use #private::PlainForm as _;
                #returns.convert(__slingshot_returned)
            },
            quote! {
                use #private::PlainForm as _;
                ::core::option::Option::Some(#returns.domain())
            },
        )
    };
    let generated_main = main.then(|| {
        quote! {
            #[allow(dead_code)]
            fn main() -> ::std::process::ExitCode {
                #private::main_named(#name)
            }
        }
    });

    // Everything that names the function sits in the default of a trait's
    // associated const: a block, so it sees what the function sees (also
    // inside a function body), in an item that cannot be written inside an
    // `impl` block. An attribute macro cannot tell that it is on an
    // associated function; this way that mistake is one error, "trait is
    // not supported in `trait`s or `impl`s", at the attribute, and not a
    // wall of errors about the items below. `main` names nothing of it.
    quote! {
        #function

        #[doc(hidden)]
        #[allow(non_camel_case_types, dead_code)]
        trait #container {
            const REGISTERED: () = {
                #[allow(non_camel_case_types)]
                #[derive(Default)]
                struct #handler;

                impl #private::Handler for #handler {
                    type Connection = #connection;

                    #[allow(unused_variables, clippy::needless_borrow)]
                    fn call(
                        &self,
                        __slingshot_request: u64,
                        __slingshot_parts: &#private::Parts<'_>,
                        __slingshot_connection: &mut Self::Connection,
                    ) -> #private::Outcome {
                        #(#bind_objects)*
                        let __slingshot_returned = #call;
                        #convert
                    }

                    fn case_domain() -> ::core::option::Option<#private::CaseDomain> {
                        #domain
                    }
                }

                #[allow(non_upper_case_globals)]
                const #def: #private::ServiceDef = #private::ServiceDef {
                    name: #name,
                    sys_map: #sys_map,
                    function: ::core::stringify!(#fn_name),
                    once: #once,
                    // Through the handler, so that a type that is not a
                    // connection is reported once, at `type Connection`.
                    connection: {
                        const fn kind<H: #private::Handler>() -> #private::ConnectionKind {
                            <H::Connection as #private::DbConnection>::KIND
                        }
                        kind::<#handler>()
                    },
                    prepare: #private::prepare::<#handler>,
                    case_domain: <#handler as #private::Handler>::case_domain,
                    objects: |_| ::std::vec![#(#schemas),*],
                };

                #private::inventory::submit! { #def }
            };
        }

        #generated_main
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctxt::compile_errors;
    use crate::microservice::tests::validated;

    /// The expansion of a valid service.
    fn expanded(args: TokenStream, function: TokenStream) -> TokenStream {
        match validated(args, function) {
            Ok(valid) => service(&valid),
            Err(mistakes) => panic!("rejected: {mistakes:?}"),
        }
    }

    /// The whole macro's output and the messages of its `compile_error!`s.
    fn expand_fn(args: TokenStream, function: TokenStream) -> (TokenStream, Vec<String>) {
        let output = crate::microservice::expand(args, function);
        let errors = compile_errors(&output);
        (output, errors)
    }

    fn has_main(output: &TokenStream) -> bool {
        let file: syn::File = syn::parse2(output.clone()).unwrap();
        file.items
            .iter()
            .any(|item| matches!(item, syn::Item::Fn(f) if f.sig.ident == "main"))
    }

    #[test]
    fn a_valid_service_registers_and_gets_a_main() {
        let (output, errors) = expand_fn(
            quote!(name = "echo", sys_map = "sys-map.example.com"),
            quote!(
                fn process(request: u64) -> Vec<(u64, bool)> {
                    vec![(request, true)]
                }
            ),
        );
        assert_eq!(errors, Vec::<String>::new());
        assert!(has_main(&output));
        assert!(output.to_string().contains("inventory :: submit"));

        let (output, errors) = expand_fn(
            quote!(name = "echo", sys_map = "sys-map.example.com", main = false),
            quote!(
                fn process(request: u64) -> Vec<(u64, bool)> {
                    vec![(request, true)]
                }
            ),
        );
        assert!(errors.is_empty());
        assert!(!has_main(&output));
    }

    #[test]
    fn only_one_generated_item_cannot_sit_in_an_impl() {
        // Inside an `impl` block, a trait is the one item rustc rejects:
        // one error, at the attribute. The function and `main` are valid
        // there, and `main` names nothing inside the trait.
        let output = expanded(
            quote!(name = "echo", sys_map = "sys-map.example.com"),
            quote!(
                fn process(request: u64) -> Vec<(u64, bool)> {
                    vec![(request, true)]
                }
            ),
        );
        let file: syn::File = syn::parse2(output).unwrap();
        let items: Vec<String> = file
            .items
            .iter()
            .map(|item| match item {
                syn::Item::Fn(f) => format!("fn {}", f.sig.ident),
                syn::Item::Trait(t) => format!("trait {}", t.ident),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(items, ["fn process", "trait __slingshot_service_process", "fn main"]);
        let syn::Item::Fn(main) = &file.items[2] else {
            unreachable!()
        };
        assert_eq!(
            main.block.to_token_stream().to_string(),
            quote!({ ::slingshot::__private::main_named("echo") }).to_string()
        );
    }

    #[test]
    fn parameters_are_passed_in_the_order_written() {
        let output = expanded(
            quote!(name = "a", sys_map = "b", main = false),
            quote!(
                fn process(id: u64, db: &mut Db, read: &ReadFileFn) -> Vec<(u64, bool)> {
                    vec![]
                }
            ),
        )
        .to_string();
        let call = quote!(process(
            <u64 as ::slingshot::__private::RequestId>::from_id(__slingshot_request),
            __slingshot_connection,
            <ReadFileFn as ::slingshot::__private::RefParam>::from_parts(__slingshot_parts)
        ));
        assert!(output.contains(&call.to_string()), "{output}");
        assert!(output.contains("type Connection = Db ;"), "{output}");

        // Without a connection parameter, the handler's is `NoConnection`;
        // an `async fn` is awaited on a runtime of the calling thread.
        let output = expanded(
            quote!(name = "a", sys_map = "b", main = false),
            quote!(
                async fn process(id: u64) -> Vec<(u64, bool)> {
                    vec![]
                }
            ),
        )
        .to_string();
        assert!(
            output.contains("type Connection = :: slingshot :: __private :: NoConnection ;"),
            "{output}"
        );
        assert!(output.contains("block_on_local (async { process (< u64 as"), "{output}");
    }

    #[test]
    fn the_return_type_is_classified_by_rustc_not_by_its_name() {
        let expansion = |output: TokenStream| {
            let output_text = output.to_string();
            let tokens = expanded(
                quote!(name = "echo", sys_map = "x", main = false),
                quote!(fn process(request: u64) -> #output { todo() }),
            );
            tokens.to_string().replace(&output_text, "OUTPUT")
        };
        let result = expansion(quote!(Result<Vec<(u64, bool)>, AnyError>));
        assert_eq!(result, expansion(quote!(AliasedOutputs)));
        assert_eq!(result, expansion(quote!(Vec<(u64, bool)>)));
        assert!(
            result.contains("FormProbe :: < OUTPUT > :: new () . form ()"),
            "{result}"
        );

        // An `impl Trait` cannot be named: the value's type is probed.
        let opaque = expansion(quote!(impl Iterator<Item = (u64, bool)>));
        assert_eq!(opaque.matches("OUTPUT").count(), 1, "{opaque}");
        assert!(opaque.contains("FormProbe :: of (& __slingshot_returned)"), "{opaque}");
    }

    #[test]
    fn errors_keep_the_function_and_avoid_follow_up_errors() {
        // A bad `main` value: no stub `main` that would clash with the user's.
        let (output, errors) = expand_fn(
            quote!(name = "a", sys_map = "b", main = "no"),
            quote!(
                fn process(request: u64) -> Vec<(u64, bool)> {
                    vec![]
                }
            ),
        );
        assert_eq!(errors.len(), 1);
        assert!(!has_main(&output));

        // Any other mistake: a stub `main`, so rustc does not add "no main".
        let (output, errors) = expand_fn(
            quote!(name = "a b", sys_map = "b"),
            quote!(
                fn process(request: u64) -> Vec<(u64, bool)> {
                    vec![]
                }
            ),
        );
        assert_eq!(errors.len(), 1);
        assert!(has_main(&output));
        assert!(output.to_string().contains("fn process"));

        // A function called `main` is moved out of the crate root.
        let (output, errors) = expand_fn(
            quote!(name = "a", sys_map = "b"),
            quote!(
                fn main(request: u64) -> Vec<(u64, bool)> {
                    vec![]
                }
            ),
        );
        assert_eq!(errors.len(), 1);
        let file: syn::File = syn::parse2(output).unwrap();
        assert!(matches!(&file.items[0], syn::Item::Const(_)));
    }

    #[test]
    fn the_item_kind_is_named() {
        let (output, errors) = expand_fn(
            quote!(name = "a", sys_map = "b"),
            quote!(
                struct Process {
                    request: u64,
                }
            ),
        );
        assert_eq!(
            errors,
            ["#[slingshot::microservice] goes on a free function, not on a struct: `fn process(request: u64, ...) -> Vec<(u64, Case)>`"]
        );
        assert!(has_main(&output));
    }
}
