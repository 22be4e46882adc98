//! `#[microservice(name = "...", sys_map = "...")]`: checks the shape of the attribute and of `process`, then generates the handler, the registration and `main`.
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
//! rejects exactly one of its items there (see `generate`).

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
    opaque_output: bool,
}

pub fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut cx = Ctxt::new();
    let args = parse_args(&mut cx, args);
    let function = match syn::parse2::<ItemFn>(item.clone()) {
        Ok(function) => function,
        Err(_) => {
            not_a_function(&mut cx, &item);
            // A stub `main` so that rustc does not add "`main` function not
            // found" to the one mistake.
            let stub = args.main.then(stub_main);
            let errors = cx.check().err().map(|e| e.to_compile_error());
            return quote! { #item #stub #errors };
        }
    };
    let service = check_function(&mut cx, &function);
    let named_main = args.main && function.sig.ident == "main";
    if named_main {
        cx.error_spanned(
            &function.sig.ident,
            "slingshot generates `main` for this service, so the function cannot be called `main`; rename it (e.g. `process`) or add `main = false`",
        );
    }
    if let Err(errors) = cx.check() {
        return with_errors(errors, &function, args.main, named_main);
    }
    let (Some(name), Some(sys_map), Some(service)) = (args.name, args.sys_map, service) else {
        unreachable!("a missing argument or invalid function was reported as an error");
    };
    generate(&function, &name, &sys_map, args.main, &service)
}

/// The output when the input has mistakes: the errors, and the user's
/// function so that its body's own errors are reported and the IDE keeps
/// working.
fn with_errors(errors: syn::Error, function: &ItemFn, main: bool, named_main: bool) -> TokenStream {
    let errors = errors.to_compile_error();
    let in_impl = matches!(function.sig.inputs.first(), Some(FnArg::Receiver(_)));
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
    let stub = (main && !in_impl).then(stub_main);
    quote! { #function #stub #errors }
}

/// Two tokens as one span, for errors.
fn pair(first: impl ToTokens, second: impl ToTokens) -> TokenStream {
    quote!(#first #second)
}

fn stub_main() -> TokenStream {
    quote! {
        #[allow(dead_code)]
        fn main() {}
    }
}

/// Reports the attribute on something other than a function, at the item's
/// kind and name (not its whole body).
fn not_a_function(cx: &mut Ctxt, item: &TokenStream) {
    let (kind, head) = match syn::parse2::<syn::Item>(item.clone()) {
        Ok(syn::Item::Struct(s)) => ("a struct", pair(s.struct_token, &s.ident)),
        Ok(syn::Item::Enum(e)) => ("an enum", pair(e.enum_token, &e.ident)),
        Ok(syn::Item::Union(u)) => ("a union", pair(u.union_token, &u.ident)),
        Ok(syn::Item::Impl(i)) => ("an `impl` block", i.impl_token.to_token_stream()),
        Ok(syn::Item::Trait(t)) => ("a trait", pair(t.trait_token, &t.ident)),
        Ok(syn::Item::Mod(m)) => ("a module", pair(m.mod_token, &m.ident)),
        Ok(syn::Item::Const(c)) => ("a const", pair(c.const_token, &c.ident)),
        Ok(syn::Item::Static(s)) => ("a static", pair(s.static_token, &s.ident)),
        _ => ("this item", item.clone()),
    };
    cx.error_spanned(
        head,
        format!(
            "#[slingshot::microservice] goes on a free function, not on {kind}: `fn process(request: u64, ...) -> Vec<(u64, Case)>`"
        ),
    );
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
        let key = pair.path.get_ident().map(Ident::to_string).unwrap_or_default();
        if seen.contains(&key) {
            cx.error_spanned(&pair.path, format!("`{key}` is given twice; give it once"));
            continue;
        }
        seen.push(key.clone());
        let literal = literal(&pair.value);
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
            ("name", _) => cx.error_spanned(
                &pair.value,
                "`name` must be a string literal, e.g. `name = \"thumbnailer\"`",
            ),
            ("sys_map", _) => cx.error_spanned(
                &pair.value,
                "`sys_map` must be a string literal, e.g. `sys_map = \"sys-map.example.com\"`; to choose it at run time, set `SLINGSHOT_SYS_MAP`",
            ),
            ("main", _) => {
                cx.error_spanned(
                    &pair.value,
                    "`main` must be `true` or `false`: `main = false` when the crate defines its own `main`",
                );
                // Whoever writes `main = ...` most likely means `false`:
                // no stub `main` that would clash with theirs.
                args.main = false;
            }
            _ => cx.error_spanned(
                &pair.path,
                format!("unknown key `{}`; the keys are {KEYS}", display(&pair.path)),
            ),
        }
    }
    let missing_name = !seen.iter().any(|k| k == "name");
    let missing_sys_map = !seen.iter().any(|k| k == "sys_map");
    let message = match (missing_name, missing_sys_map) {
        (true, true) => Some(
            "missing `name` and `sys_map`: write `#[slingshot::microservice(name = \"thumbnailer\", sys_map = \"sys-map.example.com\")]`",
        ),
        (true, false) => Some("missing `name = \"...\"`: the service's name, which is its endpoint in the sys-map"),
        (false, true) => Some(
            "missing `sys_map = \"...\"`: the sys-map host, URL or `file:` path the service reads its wiring from",
        ),
        (false, false) => None,
    };
    if let Some(message) = message {
        cx.error_at(Span::call_site(), message);
    }
    args
}

/// The literal an attribute value is, also when a `macro_rules!` macro
/// passed it as a `$value:literal` or `$value:expr` (an invisible group).
fn literal(value: &Expr) -> Option<&Lit> {
    match value {
        Expr::Lit(lit) => Some(&lit.lit),
        Expr::Group(group) => literal(&group.expr),
        _ => None,
    }
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
        return Err("use letters, digits, '-', '_' and '.' only (it is a path segment of the sys-map URL)");
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
        cx.error_spanned(token, "`process` cannot be a `const fn`: remove `const`");
        ok = false;
    }
    if let Some(token) = &sig.unsafety {
        cx.error_spanned(
            token,
            "`process` cannot be `unsafe`: slingshot calls it for every request; remove `unsafe` (and use an `unsafe` block inside if needed)",
        );
        ok = false;
    }
    if let Some(abi) = &sig.abi {
        cx.error_spanned(abi, "`process` cannot have an `extern` ABI: remove it");
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

    let params = check_params(cx, sig);

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
    let (Some((params, connection)), true) = (params, ok) else {
        return None;
    };
    // Whether the return type is a `Result` is left to rustc (see
    // `generate`): an alias such as `anyhow::Result<C>` or `type Out = ...`
    // hides it from the macro.
    Some(Service {
        params,
        connection,
        opaque_output: contains_impl_trait(&output),
        output,
    })
}

/// Checks the parameters' shape: the request ID first, then references,
/// each once, and at most one `&mut` connection. Returns them with the
/// connection's type.
fn check_params(cx: &mut Ctxt, sig: &syn::Signature) -> Option<(Vec<Param>, Option<Type>)> {
    let mut ok = true;
    let mut typed = Vec::new();
    for input in &sig.inputs {
        match input {
            FnArg::Receiver(receiver) => {
                cx.error_spanned(
                    receiver,
                    "`process` cannot take `self`: slingshot calls a free function; move it out of the `impl` block",
                );
                ok = false;
            }
            FnArg::Typed(pat_type) => typed.push(pat_type),
        }
    }
    if sig.inputs.is_empty() {
        cx.error_at(
            sig.paren_token.span.join(),
            "`process` needs the request ID as its first parameter: `request: u64`",
        );
        return None;
    }
    // Only `self`: that mistake is reported; the request comes up once it is fixed.
    let first = typed.first()?;

    // Which parameter is the request ID: the first, or, when the first is a
    // reference, a `u64` written later (one mistake: the order).
    let request = match &*first.ty {
        Type::Reference(reference) if is_u64(&reference.elem) => {
            cx.error_spanned(&first.ty, "the request ID is passed by value: write `u64`, without `&`");
            ok = false;
            Some(0)
        }
        Type::Reference(_) => {
            let by_value = typed.iter().position(|p| is_u64(&p.ty));
            match by_value {
                Some(index) => cx.error_spanned(
                    typed[index],
                    format!(
                        "the request ID is the first parameter of `process`: move `{}` before the others",
                        display(typed[index])
                    ),
                ),
                None => cx.error_spanned(
                    &first.ty,
                    "the first parameter of `process` is the request ID: add `request: u64` before this one",
                ),
            }
            ok = false;
            by_value
        }
        _ => Some(0),
    };

    let mut params = Vec::new();
    let mut connection: Option<Type> = None;
    let mut shared: Vec<String> = Vec::new();
    for (index, pat_type) in typed.iter().enumerate() {
        let ty = &*pat_type.ty;
        if contains_impl_trait(ty) {
            cx.error_spanned(
                ty,
                "`process` cannot take `impl Trait`: slingshot calls it with concrete types; name the type (e.g. `&ReadFileFn`)",
            );
            ok = false;
            continue;
        }
        if request == Some(index) {
            params.push(Param::Request(ty.clone()));
            continue;
        }
        let Type::Reference(reference) = ty else {
            cx.error_spanned(
                ty,
                format!(
                    "after the request ID, `process` takes its parameters by reference: `&mut {ty}` if this is the database connection, else `&ReadFileFn`, `&WriteFileFn` or `&RequestContext`",
                    ty = display(ty)
                ),
            );
            ok = false;
            continue;
        };
        if let Some(lifetime) = reference.lifetime.as_ref().filter(|l| l.ident == "static") {
            cx.error_spanned(
                lifetime,
                "remove `'static`: slingshot lends this parameter to `process` for one call only",
            );
            ok = false;
            continue;
        }
        let elem = &*reference.elem;
        if reference.mutability.is_some() {
            match &connection {
                Some(first) => {
                    cx.error_spanned(
                        ty,
                        format!(
                            "`process` takes one database connection and already takes `&mut {}`; remove this parameter",
                            display(first)
                        ),
                    );
                    ok = false;
                }
                None => {
                    connection = Some(elem.clone());
                    params.push(Param::Connection);
                }
            }
        } else {
            let key = display(elem);
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
    }
    ok.then_some((params, connection))
}

/// Whether the type is written `u64`.
fn is_u64(ty: &Type) -> bool {
    matches!(ty, Type::Path(path) if path.qself.is_none() && path.path.is_ident("u64"))
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

fn generate(
    function: &ItemFn,
    name: &syn::LitStr,
    sys_map: &syn::LitStr,
    main: bool,
    service: &Service,
) -> TokenStream {
    let fn_name = &function.sig.ident;
    let container = format_ident!("__slingshot_service_{}", fn_name);
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
                };

                #private::inventory::submit! { #def }
            };
        }

        #generated_main
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proc_macro2::{Delimiter, Group, TokenTree};

    /// The messages of the `compile_error!`s in an expansion.
    pub(crate) fn errors(output: &TokenStream) -> Vec<String> {
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

    fn expand_fn(args: TokenStream, function: TokenStream) -> (TokenStream, Vec<String>) {
        let output = expand(args, function);
        let errors = errors(&output);
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
        let (output, errors) = expand_fn(
            quote!(name = "echo", sys_map = "sys-map.example.com"),
            quote!(
                fn process(request: u64) -> Vec<(u64, bool)> {
                    vec![(request, true)]
                }
            ),
        );
        assert!(errors.is_empty(), "{errors:?}");
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
    fn the_return_type_is_classified_by_rustc_not_by_its_name() {
        let expansion = |output: TokenStream| {
            let output_text = output.to_string();
            let (tokens, errors) = expand_fn(
                quote!(name = "echo", sys_map = "x", main = false),
                quote!(fn process(request: u64) -> #output { todo() }),
            );
            assert!(errors.is_empty(), "{errors:?}");
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
    fn literals_from_macro_rules_are_accepted() {
        // `$name:literal` reaches the attribute wrapped in an invisible group.
        let grouped = |tokens: TokenStream| TokenTree::Group(Group::new(Delimiter::None, tokens));
        let name = grouped(quote!("echo"));
        let main = grouped(quote!(false));
        let (output, errors) = expand_fn(
            quote!(name = #name, sys_map = "x", main = #main),
            quote!(
                fn process(request: u64) -> Vec<(u64, bool)> {
                    vec![(request, true)]
                }
            ),
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert!(!has_main(&output));
    }

    #[test]
    fn a_misplaced_request_is_one_mistake() {
        let (_, errors) = expand_fn(
            quote!(name = "a", sys_map = "b"),
            quote!(
                fn process(read_file: &ReadFileFn, request: u64) -> Vec<(u64, bool)> {
                    vec![]
                }
            ),
        );
        assert_eq!(
            errors,
            ["the request ID is the first parameter of `process`: move `request: u64` before the others"]
        );

        let (_, errors) = expand_fn(
            quote!(name = "a", sys_map = "b"),
            quote!(
                fn process(read_file: &ReadFileFn, connection: PgConnection) -> Vec<(u64, bool)> {
                    vec![]
                }
            ),
        );
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].contains("add `request: u64` before this one"));
        assert!(errors[1].contains("`&mut PgConnection` if this is the database connection"));
    }

    #[test]
    fn parameters_are_checked_by_shape() {
        let check = |function: TokenStream| expand_fn(quote!(name = "a", sys_map = "b"), function).1;
        assert_eq!(
            check(quote!(
                fn process(request: &u64) -> Vec<(u64, bool)> {
                    vec![]
                }
            )),
            ["the request ID is passed by value: write `u64`, without `&`"]
        );
        assert!(check(quote!(
            fn process(request: u64, r: &impl Fn()) -> Vec<(u64, bool)> {
                vec![]
            }
        ))[0]
            .contains("cannot take `impl Trait`"));
        assert!(check(quote!(
            fn process(request: u64, r: &'static ReadFileFn) -> Vec<(u64, bool)> {
                vec![]
            }
        ))[0]
            .starts_with("remove `'static`"));
        assert!(check(quote!(
            fn process(request: u64, r: &'_ ReadFileFn) -> Vec<(u64, bool)> {
                vec![]
            }
        ))
        .is_empty());
        assert_eq!(
            check(quote!(fn process(request: u64, a: &mut diesel::PgConnection, b: &mut Db) -> Vec<(u64, bool)> { vec![] })),
            ["`process` takes one database connection and already takes `&mut diesel::PgConnection`; remove this parameter"]
        );
        assert_eq!(
            check(quote!(
                fn process(request: u64, a: &ReadFileFn, b: &ReadFileFn) -> Vec<(u64, bool)> {
                    vec![]
                }
            )),
            ["`process` already takes `&ReadFileFn`; each parameter may appear once, remove this one"]
        );
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

    #[test]
    fn types_are_displayed_as_written() {
        let ty: Type = syn::parse_quote!(&mut diesel::pg::PgConnection);
        assert_eq!(display(&ty), "&mut diesel::pg::PgConnection");
        let ty: Type = syn::parse_quote!(Vec<(u64, &'static str)>);
        assert_eq!(display(&ty), "Vec<(u64, &'static str)>");
        let ty: Type = syn::parse_quote!(HashMap<u64, Vec<u8>>);
        assert_eq!(display(&ty), "HashMap<u64, Vec<u8>>");
    }

    #[test]
    fn service_names_are_url_segments() {
        assert!(check_name("thumbnailer").is_ok());
        assert!(check_name("Image_Resizer-2.v1").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("thumb nailer").is_err());
        assert!(check_name("images/thumbnailer").is_err());
        assert!(check_name(".hidden").is_err());
        assert!(check_name(&"x".repeat(201)).is_err());
    }
}
