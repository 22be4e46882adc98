//! `#[microservice(name = "...", sys_map = "...")]`: checks the shape of the attribute and of `process`, then generates the handler, the registration and `main`.
//!
//! Shape is checked here (what a parameter *is*: the request, a shared
//! reference, the `&mut` connection); types are checked by rustc through
//! the runtime's traits, each assertion spanned on the user's own type.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Expr, FnArg, Ident, ItemFn, Lit, Meta, ReturnType, Token, Type};

use crate::ctxt::Ctxt;

const KEYS: &str = "`name`, `sys_map` and `main`";

/// The attribute's arguments.
struct Args {
    name: Option<syn::LitStr>,
    sys_map: Option<syn::LitStr>,
    main: bool,
}

/// What `process` takes, parameter by parameter.
enum Param {
    Request(Type),
    Shared(Type),
    Connection,
}

/// The validated function.
struct Service {
    params: Vec<Param>,
    connection: Option<Type>,
    output: Type,
    returns_result: bool,
    opaque_output: bool,
}

pub fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut cx = Ctxt::default();
    let args = parse_args(&mut cx, args);
    let function = match syn::parse2::<ItemFn>(item.clone()) {
        Ok(function) => function,
        Err(_) => {
            cx.error_spanned(
                &item,
                "#[slingshot::microservice] goes on a free function: `fn process(request: u64, ...) -> Vec<(u64, Case)>`",
            );
            return quote! { #item #[allow(dead_code)] fn main() {} }
                .into_iter()
                .chain(cx.into_compile_errors())
                .collect();
        }
    };
    let service = check_function(&mut cx, &function);
    if args.main && function.sig.ident == "main" {
        cx.error_spanned(
            &function.sig.ident,
            "slingshot generates `main` for this service, so the function cannot be called `main`; rename it (e.g. `process`) or add `main = false`",
        );
    }
    if cx.has_errors() {
        // Keep the user's function so its own errors are reported and the
        // IDE keeps working, and a stub `main` so rustc does not add a
        // "main function not found" error on top.
        let stub = (args.main && function.sig.ident != "main")
            .then(|| quote! { #[allow(dead_code)] fn main() {} });
        let errors = cx.into_compile_errors();
        return quote! { #function #stub #errors };
    }
    let (Some(name), Some(sys_map), Some(service)) = (args.name, args.sys_map, service) else {
        unreachable!("a missing argument or invalid function was reported as an error");
    };
    generate(&function, &name, &sys_map, args.main, &service)
}

fn parse_args(cx: &mut Ctxt, tokens: TokenStream) -> Args {
    let mut args = Args {
        name: None,
        sys_map: None,
        main: true,
    };
    let metas = match Punctuated::<Meta, Token![,]>::parse_terminated.parse2(tokens) {
        Ok(metas) => metas,
        Err(e) => {
            cx.push(syn::Error::new(
                e.span(),
                format!("expected `name = \"...\", sys_map = \"...\"`: {e}"),
            ));
            return args;
        }
    };
    let mut seen: Vec<String> = Vec::new();
    for meta in &metas {
        let Meta::NameValue(pair) = meta else {
            cx.error_spanned(meta, format!("expected `key = value`; the keys are {KEYS}"));
            continue;
        };
        let key = pair
            .path
            .get_ident()
            .map(Ident::to_string)
            .unwrap_or_default();
        if seen.contains(&key) {
            cx.error_spanned(&pair.path, format!("`{key}` is given twice; give it once"));
            continue;
        }
        seen.push(key.clone());
        let literal = match &pair.value {
            Expr::Lit(lit) => Some(&lit.lit),
            _ => None,
        };
        match (key.as_str(), literal) {
            ("name", Some(Lit::Str(s))) => {
                if let Err(why) = check_name(&s.value()) {
                    cx.error_spanned(s, format!("invalid service name {:?}: {why}", s.value()));
                }
                args.name = Some(s.clone());
            }
            ("sys_map", Some(Lit::Str(s))) => {
                let value = s.value();
                if value.trim().is_empty() || value.chars().any(char::is_whitespace) {
                    cx.error_spanned(
                        s,
                        "invalid sys_map: give a host (`sys-map.example.com`), a URL (`https://...`) or a local file (`file:sysmap.json`), without spaces",
                    );
                }
                args.sys_map = Some(s.clone());
            }
            ("main", Some(Lit::Bool(b))) => args.main = b.value,
            ("name" | "sys_map", _) => cx.error_spanned(
                &pair.value,
                format!("`{key}` must be a string literal, e.g. `{key} = \"thumbnailer\"`"),
            ),
            ("main", _) => cx.error_spanned(&pair.value, "`main` must be `true` or `false`"),
            _ => cx.error_spanned(
                &pair.path,
                format!(
                    "unknown key `{}`; the keys are {KEYS}",
                    pair.path.to_token_stream()
                ),
            ),
        }
    }
    if args.name.is_none() && !seen.iter().any(|k| k == "name") {
        cx.error_at(
            Span::call_site(),
            "missing `name = \"...\"`: the service's name, which is its endpoint in the sys-map",
        );
    }
    if args.sys_map.is_none() && !seen.iter().any(|k| k == "sys_map") {
        cx.error_at(
            Span::call_site(),
            "missing `sys_map = \"...\"`: the sys-map host, URL or `file:` path the service reads its wiring from",
        );
    }
    args
}

/// A service name is a path segment of the sys-map URL and prefixes queue names.
fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("it cannot be empty");
    }
    if name.len() > 200 {
        return Err("it is longer than 200 characters");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(
            "use letters, digits, '-', '_' and '.' only (it is a path segment of the sys-map URL)",
        );
    }
    if name.starts_with('.') {
        return Err("it cannot start with '.'");
    }
    Ok(())
}

fn check_function(cx: &mut Ctxt, function: &ItemFn) -> Option<Service> {
    let sig = &function.sig;
    let mut ok = true;
    if let Some(token) = &sig.constness {
        cx.error_spanned(token, "`process` cannot be a `const fn`");
        ok = false;
    }
    if let Some(token) = &sig.unsafety {
        cx.error_spanned(
            token,
            "`process` cannot be `unsafe`: slingshot calls it for every request",
        );
        ok = false;
    }
    if let Some(abi) = &sig.abi {
        cx.error_spanned(abi, "`process` cannot have an `extern` ABI");
        ok = false;
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        let span = if sig.generics.params.is_empty() {
            sig.generics.where_clause.to_token_stream()
        } else {
            sig.generics.to_token_stream()
        };
        cx.error_spanned(
            span,
            "`process` cannot be generic: slingshot calls it with concrete types; remove the type parameters and lifetimes",
        );
        ok = false;
    }
    if let Some(variadic) = &sig.variadic {
        cx.error_spanned(variadic, "`process` cannot be variadic");
        ok = false;
    }

    let mut params = Vec::new();
    let mut connection: Option<Type> = None;
    let mut shared: Vec<String> = Vec::new();
    for (index, input) in sig.inputs.iter().enumerate() {
        let typed = match input {
            FnArg::Receiver(receiver) => {
                cx.error_spanned(
                    receiver,
                    "`process` cannot take `self`: slingshot calls a free function; move it out of the `impl` block",
                );
                ok = false;
                continue;
            }
            FnArg::Typed(typed) => typed,
        };
        let ty = &*typed.ty;
        if index == 0 {
            if let Type::Reference(_) = ty {
                cx.error_spanned(
                    ty,
                    "the first parameter of `process` is the request ID: put `request: u64` first",
                );
                ok = false;
            } else {
                params.push(Param::Request(ty.clone()));
            }
            continue;
        }
        match ty {
            Type::Reference(reference) if reference.mutability.is_some() => {
                if let Some(first) = &connection {
                    cx.error_spanned(
                        ty,
                        format!(
                            "`process` takes one database connection, and already takes `&mut {}`; remove this parameter",
                            first.to_token_stream()
                        ),
                    );
                    ok = false;
                } else {
                    connection = Some((*reference.elem).clone());
                    params.push(Param::Connection);
                }
            }
            Type::Reference(reference) => {
                let elem = &*reference.elem;
                let key = elem.to_token_stream().to_string();
                if shared.contains(&key) {
                    cx.error_spanned(
                        ty,
                        format!("`process` already takes `&{key}`; each parameter may appear once, remove this one"),
                    );
                    ok = false;
                } else {
                    shared.push(key);
                    params.push(Param::Shared(elem.clone()));
                }
            }
            _ => {
                cx.error_spanned(
                    ty,
                    "this parameter is taken by value; after the request ID, `process` takes `&ReadFileFn`, `&WriteFileFn`, `&RequestContext` by reference and the database connection as `&mut` (e.g. `&mut PgConnection`)",
                );
                ok = false;
            }
        }
    }
    if sig.inputs.is_empty() {
        cx.error_at(
            sig.paren_token.span.join(),
            "`process` needs the request ID as its first parameter: `request: u64`",
        );
        ok = false;
    }

    let output = match &sig.output {
        ReturnType::Type(_, ty) => (**ty).clone(),
        ReturnType::Default => {
            cx.error_spanned(
                &sig.ident,
                "`process` must return its outputs: add `-> Vec<(u64, Case)>` or `-> Result<Vec<(u64, Case)>, AnyError>`",
            );
            return None;
        }
    };
    if !ok {
        return None;
    }
    let returns_result = match &output {
        Type::Path(path) => path
            .path
            .segments
            .last()
            .is_some_and(|s| s.ident == "Result"),
        _ => false,
    };
    Some(Service {
        params,
        connection,
        opaque_output: contains_impl_trait(&output),
        output,
        returns_result,
    })
}

/// Whether `impl Trait` appears anywhere in the type (its case type then has no name).
fn contains_impl_trait(ty: &Type) -> bool {
    fn walk(tokens: TokenStream) -> bool {
        tokens.into_iter().any(|t| match t {
            proc_macro2::TokenTree::Ident(i) => i == "impl",
            proc_macro2::TokenTree::Group(g) => walk(g.stream()),
            _ => false,
        })
    }
    walk(ty.to_token_stream())
}

fn generate(
    function: &ItemFn,
    name: &syn::LitStr,
    sys_map: &syn::LitStr,
    main: bool,
    service: &Service,
) -> TokenStream {
    let fn_name = &function.sig.ident;
    let handler = format_ident!("__slingshot_handler_{}", fn_name);
    let def = format_ident!("__SLINGSHOT_SERVICE_{}", fn_name);
    let private = quote!(::slingshot::__private);

    let connection = match &service.connection {
        Some(ty) => quote_spanned!(ty.span()=> #ty),
        None => quote!(#private::NoConnection),
    };
    let args = service.params.iter().map(|param| match param {
        Param::Request(ty) => {
            quote_spanned!(ty.span()=> <#ty as #private::RequestId>::from_id(__slingshot_request))
        }
        Param::Shared(ty) => {
            quote_spanned!(ty.span()=> <#ty as #private::RefParam>::from_parts(__slingshot_parts))
        }
        Param::Connection => quote!(__slingshot_connection),
    });
    let call = if function.sig.asyncness.is_some() {
        quote!(#private::block_on_local(async { #fn_name(#(#args),*).await }))
    } else {
        quote!(#fn_name(#(#args),*))
    };
    let output = &service.output;
    // Named with a turbofish where possible, so the check happens at the
    // user's return type; an `impl Trait` type is left to inference.
    let constructor = if service.returns_result {
        quote!(returns_result)
    } else {
        quote!(returns_outputs)
    };
    let returns = if service.opaque_output {
        quote_spanned!(output.span()=> #private::#constructor())
    } else {
        quote_spanned!(output.span()=> #private::#constructor::<#output>())
    };
    // An `impl Trait` return type cannot be named outside the function, so
    // its case type is unknown at start-up and the route check is skipped.
    let domain = if service.opaque_output {
        quote!(::core::option::Option::None)
    } else {
        quote!(::core::option::Option::Some(#returns.domain()))
    };
    let generated_main = main.then(|| {
        quote! {
            #[allow(dead_code)]
            fn main() -> ::std::process::ExitCode {
                #private::main(&#def)
            }
        }
    });

    quote! {
        #function

        #[doc(hidden)]
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
                let __slingshot_returned = #call;
                #returns.convert(__slingshot_returned)
            }

            fn case_domain() -> ::core::option::Option<#private::CaseDomain> {
                #domain
            }
        }

        #[doc(hidden)]
        #[allow(non_upper_case_globals)]
        const #def: #private::ServiceDef = #private::ServiceDef {
            name: #name,
            sys_map: #sys_map,
            function: ::core::stringify!(#fn_name),
            connection: <#connection as #private::DbConnection>::KIND,
            prepare: #private::prepare::<#handler>,
            case_domain: <#handler as #private::Handler>::case_domain,
        };

        #private::inventory::submit! { #def }

        #generated_main
    }
}
