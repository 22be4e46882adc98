//! Validate: the rules a service follows (its name, its sys-map, the shape of `process`).
//!
//! Every mistake is collected ([`Ctxt`]) and reported together, each at its
//! own token, in the order written. What passes is a [`Service`], the only
//! value [`super::expand::service`] accepts.

use proc_macro2::{Span, TokenStream};
use quote::ToTokens;
use syn::{FnArg, ItemFn, ReturnType, Type};

use super::display;
use super::parse::{Arg, Args, Input, Item, Key};
use crate::ctxt::Ctxt;

/// A valid service: what the expansion needs.
pub(super) struct Service {
    pub(super) name: syn::LitStr,
    pub(super) sys_map: syn::LitStr,
    /// Whether to generate `main`.
    pub(super) main: bool,
    /// Whether the service runs in once mode by default.
    pub(super) once: bool,
    pub(super) function: ItemFn,
    /// What `process` takes, parameter by parameter.
    pub(super) params: Vec<Param>,
    /// The type behind the `&mut` connection parameter, if any.
    pub(super) connection: Option<Type>,
    /// The return type as written.
    pub(super) output: Type,
    /// Whether the return type has an `impl Trait` in it (and cannot be named).
    pub(super) opaque_output: bool,
}

/// One parameter of `process`.
#[derive(Debug, PartialEq)]
pub(super) enum Param {
    /// The request ID, of this type.
    Request(Type),
    /// `&T`: a shared reference to a `T` slingshot lends.
    Shared(Type),
    /// The `&mut` database connection.
    Connection,
    /// `#[object("in")] name: T`: a typed object of a bucket reference,
    /// passed by value.
    Object { reference: syn::LitStr, ty: Type },
}

/// Input with mistakes: the errors, and what to emit beside them.
pub(super) struct Rejected {
    /// Every mistake, in the order written.
    pub(super) errors: syn::Error,
    /// The user's item, to emit so that rustc still checks its body.
    pub(super) item: Item,
    /// Whether the crate expects a generated `main`.
    pub(super) main: bool,
    /// Whether the function is called `main` while a `main` is generated.
    pub(super) named_main: bool,
}

/// The attribute's values once their rules are checked.
struct Attribute {
    name: Option<syn::LitStr>,
    sys_map: Option<syn::LitStr>,
    main: bool,
    /// `once = true`, where it was written.
    once: Option<syn::LitBool>,
}

/// What [`check_function`] learns from a valid signature.
struct Shape {
    params: Vec<Param>,
    connection: Option<Type>,
    output: Type,
    opaque_output: bool,
}

/// Checks every rule on `input`: the service, or every mistake.
pub(super) fn validate(input: Input) -> Result<Service, Rejected> {
    let mut cx = Ctxt::new();
    let attribute = check_args(&mut cx, input.args);
    let function = match input.item {
        Item::Function(function) => function,
        Item::Other { kind, head, tokens } => {
            cx.error_spanned(
                &head,
                format!(
                    "#[slingshot::microservice] goes on a free function, not on {kind}: `fn process(request: u64, ...) -> Vec<(u64, Case)>`"
                ),
            );
            let Err(errors) = cx.check() else {
                unreachable!("the item was reported as an error");
            };
            return Err(Rejected {
                errors,
                item: Item::Other { kind, head, tokens },
                main: attribute.main,
                named_main: false,
            });
        }
    };
    let shape = check_function(&mut cx, &function);
    // `#[object]` is this attribute's: rustc would not know it.
    let mut function = function;
    for input in &mut function.sig.inputs {
        if let FnArg::Typed(pat_type) = input {
            pat_type.attrs.retain(|attr| !attr.path().is_ident("object"));
        }
    }
    let named_main = attribute.main && function.sig.ident == "main";
    if named_main {
        cx.error_spanned(
            &function.sig.ident,
            "slingshot generates `main` for this service, so the function cannot be called `main`; rename it (e.g. `process`) or add `main = false`",
        );
    }
    if let (Some(once), Some(Shape { connection: None, .. })) = (&attribute.once, &shape) {
        cx.error_spanned(
            once,
            "`once = true` needs a database: the inbox, the outbox and `process`'s writes commit in one transaction; \
             add a connection parameter, e.g. `conn: &mut diesel::PgConnection`",
        );
    }
    if let Err(errors) = cx.check() {
        return Err(Rejected {
            errors,
            item: Item::Function(function),
            main: attribute.main,
            named_main,
        });
    }
    let (Some(name), Some(sys_map), Some(shape)) = (attribute.name, attribute.sys_map, shape) else {
        unreachable!("a missing argument or invalid function was reported as an error");
    };
    Ok(Service {
        name,
        sys_map,
        main: attribute.main,
        once: attribute.once.is_some(),
        function: *function,
        params: shape.params,
        connection: shape.connection,
        output: shape.output,
        opaque_output: shape.opaque_output,
    })
}

/// Reports the arguments' mistakes in the order written, then the missing
/// keys, and returns the values given.
fn check_args(cx: &mut Ctxt, args: Args) -> Attribute {
    let mut attribute = Attribute {
        name: None,
        sys_map: None,
        main: true,
        once: None,
    };
    let args = match args {
        Args::List(args) => args,
        Args::Unreadable(error) => {
            cx.push(error);
            return attribute;
        }
    };
    let (mut given_name, mut given_sys_map) = (false, false);
    for arg in args {
        match arg {
            Arg::Name(s) => {
                given_name = true;
                if let Err(why) = slingshot_names::check_service_name(&s.value()) {
                    cx.error_spanned(&s, slingshot_names::invalid(&s.value(), why));
                }
                attribute.name = Some(s);
            }
            Arg::SysMap(s) => {
                given_sys_map = true;
                let value = s.value();
                if value.trim().is_empty() || value.chars().any(char::is_whitespace) {
                    cx.error_spanned(
                        &s,
                        "invalid sys_map: give a host (`sys-map.example.com`), a URL (`https://...`) or a local file (`file:sysmap.json`), without spaces",
                    );
                }
                attribute.sys_map = Some(s);
            }
            Arg::Main(b) => attribute.main = b.value,
            Arg::Once(b) => attribute.once = b.value.then_some(b),
            Arg::BadValue { key, error } => {
                cx.push(error);
                match key {
                    Key::Name => given_name = true,
                    Key::SysMap => given_sys_map = true,
                    // Whoever writes `main = ...` most likely means `false`:
                    // no stub `main` that would clash with theirs.
                    Key::Main => attribute.main = false,
                    Key::Once => {}
                }
            }
            Arg::Invalid(error) => cx.push(error),
        }
    }
    let message = match (!given_name, !given_sys_map) {
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
    attribute
}

/// Checks the signature of `process`; its shape if it has no mistake.
fn check_function(cx: &mut Ctxt, function: &ItemFn) -> Option<Shape> {
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
    // `expand::service`): an alias such as `anyhow::Result<C>` or
    // `type Out = ...` hides it from the macro.
    Some(Shape {
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
    let mut objects: Vec<(String, String)> = Vec::new();
    for (index, pat_type) in typed.iter().enumerate() {
        let ty = &*pat_type.ty;
        let object = match object_attribute(cx, pat_type) {
            Ok(object) => object,
            Err(()) => {
                ok = false;
                continue;
            }
        };
        if let Some(reference) = object {
            match check_object(cx, pat_type, &reference, request == Some(index), &mut objects) {
                true => params.push(Param::Object {
                    reference,
                    ty: ty.clone(),
                }),
                false => ok = false,
            }
            continue;
        }
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
            if is_object_type(ty) {
                cx.error_spanned(
                    ty,
                    format!(
                        "bind `{ty}` to a bucket reference: `#[object(\"in\")] {pat}: {ty}` reads (or writes) object `request` of the bucket behind `in`",
                        ty = display(ty),
                        pat = display(&pat_type.pat),
                    ),
                );
            } else {
                cx.error_spanned(
                    ty,
                    format!(
                        "after the request ID, `process` takes its parameters by reference: `&mut {ty}` if this is the database connection, else `&ReadFileFn`, `&WriteFileFn` or `&RequestContext`; a typed object is `#[object(\"in\")] name: Json<T>`",
                        ty = display(ty)
                    ),
                );
            }
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

/// The bucket reference of a parameter's `#[object("...")]`, if it has one;
/// `Err` (reported) if it is written wrong or twice.
fn object_attribute(cx: &mut Ctxt, pat_type: &syn::PatType) -> Result<Option<syn::LitStr>, ()> {
    let mut found = None;
    for attr in pat_type.attrs.iter().filter(|a| a.path().is_ident("object")) {
        if found.is_some() {
            cx.error_spanned(attr, "a parameter is bound to one object: remove this `#[object]`");
            return Err(());
        }
        match attr.parse_args::<syn::LitStr>() {
            Ok(reference) => found = Some(reference),
            Err(_) => {
                cx.error_spanned(attr, "expected the bucket reference as a string: `#[object(\"in\")]`");
                return Err(());
            }
        }
    }
    Ok(found)
}

/// Checks an `#[object("...")]` parameter: by value, not the request ID, a
/// valid reference bound once. Reports what is wrong; `true` if nothing.
fn check_object(
    cx: &mut Ctxt,
    pat_type: &syn::PatType,
    reference: &syn::LitStr,
    is_request: bool,
    bound: &mut Vec<(String, String)>,
) -> bool {
    let ty = &*pat_type.ty;
    if is_request {
        cx.error_spanned(
            reference,
            "the request ID is not an object: remove `#[object]` from it, and bind a parameter after it (`#[object(\"in\")] input: Json<T>`)",
        );
        return false;
    }
    if let Type::Reference(r) = ty {
        cx.error_spanned(
            ty,
            format!(
                "an object parameter is taken by value: write `{}` without `&`",
                display(&r.elem)
            ),
        );
        return false;
    }
    let value = reference.value();
    if value.is_empty() || value.contains('/') || value.chars().any(char::is_whitespace) {
        cx.error_spanned(
            reference,
            "invalid bucket reference: give the key the sys-map knows the bucket by, e.g. `in` or `out`, without `/` or spaces",
        );
        return false;
    }
    let name = display(&pat_type.pat);
    if let Some((_, first)) = bound.iter().find(|(r, _)| *r == value) {
        cx.error_spanned(
            reference,
            format!("bucket reference `{value}` is already bound to `{first}`; bind each reference once"),
        );
        return false;
    }
    bound.push((value, name));
    true
}

/// Whether the type is written `Json<...>` or `JsonWriter<...>` (any path).
fn is_object_type(ty: &Type) -> bool {
    matches!(ty, Type::Path(path) if path.path.segments.last().is_some_and(|s| s.ident == "Json" || s.ident == "JsonWriter"))
}

/// Whether the type is written `u64`.
fn is_u64(ty: &Type) -> bool {
    matches!(ty, Type::Path(path) if path.qself.is_none() && path.path.is_ident("u64"))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::microservice::tests::{mistakes, validated};
    use quote::quote;

    #[test]
    fn a_valid_service_is_its_parameters_by_shape() {
        let Ok(service) = validated(
            quote!(name = "echo", sys_map = "x"),
            quote!(
                fn process(
                    request: u64,
                    context: &RequestContext,
                    db: &mut diesel::PgConnection,
                    read: &ReadFileFn,
                ) -> Vec<(u64, bool)> {
                    vec![]
                }
            ),
        ) else {
            panic!("rejected")
        };
        let ty = |tokens: TokenStream| syn::parse2::<Type>(tokens).unwrap();
        assert_eq!(
            service.params,
            [
                Param::Request(ty(quote!(u64))),
                Param::Shared(ty(quote!(RequestContext))),
                Param::Connection,
                Param::Shared(ty(quote!(ReadFileFn))),
            ]
        );
        assert_eq!(service.connection, Some(ty(quote!(diesel::PgConnection))));
        assert_eq!(
            (service.name.value(), service.sys_map.value(), service.main),
            ("echo".into(), "x".into(), true)
        );
        assert!(!service.opaque_output);

        let Ok(service) = validated(
            quote!(name = "echo", sys_map = "x", main = false),
            quote!(
                fn process(request: u64) -> impl Iterator<Item = (u64, bool)> {
                    None.into_iter()
                }
            ),
        ) else {
            panic!("rejected")
        };
        assert!(service.opaque_output && !service.main && service.connection.is_none());
    }

    #[test]
    fn a_key_with_a_bad_value_is_not_missing() {
        assert_eq!(
            mistakes(
                quote!(name = 5),
                quote!(
                    fn process(request: u64) -> Vec<(u64, bool)> {
                        vec![]
                    }
                )
            ),
            [
                "`name` must be a string literal, e.g. `name = \"thumbnailer\"`",
                "missing `sys_map = \"...\"`: the sys-map host, URL or `file:` path the service reads its wiring from",
            ]
        );
    }

    #[test]
    fn a_misplaced_request_is_one_mistake() {
        let errors = mistakes(
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

        let errors = mistakes(
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
        let check = |function: TokenStream| mistakes(quote!(name = "a", sys_map = "b"), function);
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
}
