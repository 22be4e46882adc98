//! Parse: the attribute's arguments and the annotated item, as written; no rule about their values.
//!
//! A mistake of syntax (not `key = value`, an unknown or repeated key, a
//! value of the wrong kind) stays in the argument it belongs to, so that
//! [`super::validate`] reports every mistake in the order it was written.

use proc_macro2::TokenStream;
use quote::{quote, ToTokens};
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::{Expr, Ident, ItemFn, Lit, Meta, Token};

use super::display;

/// The keys, for messages.
const KEYS: &str = "`name`, `sys_map`, `main` and `once`";

/// What the attribute and its item are made of.
pub(super) struct Input {
    pub(super) args: Args,
    pub(super) item: Item,
}

/// The attribute's arguments.
pub(super) enum Args {
    /// A list of arguments, in the order written.
    List(Vec<Arg>),
    /// Tokens that are no `key = value, ...` list at all.
    Unreadable(syn::Error),
}

/// One argument of the attribute.
pub(super) enum Arg {
    Name(syn::LitStr),
    SysMap(syn::LitStr),
    Main(syn::LitBool),
    Once(syn::LitBool),
    /// A known key with a value of the wrong kind: the key counts as given.
    BadValue {
        key: Key,
        error: syn::Error,
    },
    /// Not an argument: not `key = value`, an unknown key, or a key given twice.
    Invalid(syn::Error),
}

/// The attribute's keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Key {
    Name,
    SysMap,
    Main,
    Once,
}

/// The item under the attribute.
pub(super) enum Item {
    /// Boxed: much larger than the other variant.
    Function(Box<ItemFn>),
    /// Anything else: what it is (`a struct`), its head (`struct Process`,
    /// where the error points) and its tokens, to emit unchanged.
    Other {
        kind: &'static str,
        head: TokenStream,
        tokens: TokenStream,
    },
}

/// Reads the attribute's `args` and its `item`.
pub(super) fn parse(args: TokenStream, item: TokenStream) -> Input {
    Input {
        args: parse_args(args),
        item: parse_item(item),
    }
}

fn parse_args(tokens: TokenStream) -> Args {
    let metas = match Punctuated::<Meta, Token![,]>::parse_terminated.parse2(tokens) {
        Ok(metas) => metas,
        Err(e) => {
            return Args::Unreadable(syn::Error::new(
                e.span(),
                format!("expected `name = \"...\", sys_map = \"...\"`: {e}"),
            ))
        }
    };
    let mut args = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    for meta in &metas {
        let Meta::NameValue(pair) = meta else {
            args.push(Arg::Invalid(syn::Error::new_spanned(
                meta,
                format!("expected `key = value`; the keys are {KEYS}"),
            )));
            continue;
        };
        let key = pair.path.get_ident().map(Ident::to_string).unwrap_or_default();
        if seen.contains(&key) {
            args.push(Arg::Invalid(syn::Error::new_spanned(
                &pair.path,
                format!("`{key}` is given twice; give it once"),
            )));
            continue;
        }
        seen.push(key.clone());
        let bad_value = |key: Key, message: &str| Arg::BadValue {
            key,
            error: syn::Error::new_spanned(&pair.value, message),
        };
        args.push(match (key.as_str(), literal(&pair.value)) {
            ("name", Some(Lit::Str(s))) => Arg::Name(s.clone()),
            ("sys_map", Some(Lit::Str(s))) => Arg::SysMap(s.clone()),
            ("main", Some(Lit::Bool(b))) => Arg::Main(b.clone()),
            ("once", Some(Lit::Bool(b))) => Arg::Once(b.clone()),
            ("name", _) => bad_value(Key::Name, "`name` must be a string literal, e.g. `name = \"thumbnailer\"`"),
            ("sys_map", _) => bad_value(
                Key::SysMap,
                "`sys_map` must be a string literal, e.g. `sys_map = \"sys-map.example.com\"`; to choose it at run time, set `SLINGSHOT_SYS_MAP`",
            ),
            ("main", _) => bad_value(
                Key::Main,
                "`main` must be `true` or `false`: `main = false` when the crate defines its own `main`",
            ),
            ("once", _) => bad_value(
                Key::Once,
                "`once` must be `true` or `false`: `once = true` makes the service effectively once (an inbox and outbox in its database)",
            ),
            _ => Arg::Invalid(syn::Error::new_spanned(
                &pair.path,
                format!("unknown key `{}`; the keys are {KEYS}", display(&pair.path)),
            )),
        });
    }
    Args::List(args)
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

/// The item: a function, or what else it is, named by its kind and name
/// (not its whole body).
fn parse_item(item: TokenStream) -> Item {
    if let Ok(function) = syn::parse2::<ItemFn>(item.clone()) {
        return Item::Function(Box::new(function));
    }
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
    Item::Other {
        kind,
        head,
        tokens: item,
    }
}

/// Two tokens as one span, for errors.
fn pair(first: impl ToTokens, second: impl ToTokens) -> TokenStream {
    quote!(#first #second)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proc_macro2::{Delimiter, Group, TokenTree};

    /// Each argument as `key=value` or `key!message`, in order.
    fn args(tokens: TokenStream) -> Vec<String> {
        let Args::List(args) = parse_args(tokens) else {
            panic!("not a list")
        };
        args.iter()
            .map(|arg| match arg {
                Arg::Name(s) => format!("name={}", s.value()),
                Arg::SysMap(s) => format!("sys_map={}", s.value()),
                Arg::Main(b) => format!("main={}", b.value),
                Arg::Once(b) => format!("once={}", b.value),
                Arg::BadValue { key, error } => format!("{key:?}!{error}"),
                Arg::Invalid(error) => format!("!{error}"),
            })
            .collect()
    }

    #[test]
    fn arguments_keep_their_order_and_their_mistakes() {
        assert_eq!(
            args(quote!(name = "a b", retries = 3, main = "no", name = "c", sys_map = x, once = true)),
            [
                "name=a b",
                "!unknown key `retries`; the keys are `name`, `sys_map`, `main` and `once`",
                "Main!`main` must be `true` or `false`: `main = false` when the crate defines its own `main`",
                "!`name` is given twice; give it once",
                "SysMap!`sys_map` must be a string literal, e.g. `sys_map = \"sys-map.example.com\"`; to choose it at run time, set `SLINGSHOT_SYS_MAP`",
                "once=true",
            ]
        );
        assert_eq!(
            args(quote!(main, sys_map = "s")),
            [
                "!expected `key = value`; the keys are `name`, `sys_map`, `main` and `once`",
                "sys_map=s"
            ]
        );
        assert!(matches!(parse_args(quote!(name = )), Args::Unreadable(_)));
    }

    #[test]
    fn literals_from_macro_rules_are_accepted() {
        // `$name:literal` reaches the attribute wrapped in an invisible group.
        let grouped = |tokens: TokenStream| TokenTree::Group(Group::new(Delimiter::None, tokens));
        let name = grouped(quote!("echo"));
        let main = grouped(quote!(false));
        assert_eq!(
            args(quote!(name = #name, sys_map = "x", main = #main)),
            ["name=echo", "sys_map=x", "main=false"]
        );
    }

    #[test]
    fn an_item_that_is_no_function_is_named_by_its_head() {
        let Item::Other { kind, head, tokens } = parse_item(quote!(
            struct Process {
                request: u64,
            }
        )) else {
            panic!("a struct parsed as a function")
        };
        assert_eq!(kind, "a struct");
        assert_eq!(display(head), "struct Process");
        assert!(display(tokens).contains("request: u64"));
    }
}
