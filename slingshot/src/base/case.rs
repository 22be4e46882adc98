//! Case variables: the values `process` attaches to each output ID, and how
//! they are compared with the sys-map's routes.
//!
//! A case is a `bool`, an integer, a string, or a user enum with
//! `#[derive(slingshot::Case)]`. Cases compare by kind *and* value, exactly as
//! the JSON in the sys-map is written: `true`, `"true"` and `1` are three
//! different cases.

use std::borrow::Cow;
use std::fmt;

/// A case value after conversion: the form routes are matched on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CaseValue {
    /// A JSON `true`/`false`.
    Bool(bool),
    /// A JSON integer. Every Rust integer type fits except `u128` values above
    /// `i128::MAX`, which JSON cannot express either; see [`CaseValue::Huge`].
    Int(i128),
    /// A `u128` above `i128::MAX`. No sys-map route can name it, so it is
    /// always unrouted, but it is kept exact rather than clamped.
    Huge(u128),
    /// A JSON string.
    Str(Cow<'static, str>),
}

impl CaseValue {
    /// Reads a case from the sys-map's JSON: a bool, an integer or a string.
    pub fn from_json(value: &serde_json::Value) -> Option<CaseValue> {
        match value {
            serde_json::Value::Bool(b) => Some(CaseValue::Bool(*b)),
            serde_json::Value::Number(n) => n
                .as_i64()
                .map(i128::from)
                .or_else(|| n.as_u64().map(i128::from))
                .map(CaseValue::Int),
            serde_json::Value::String(s) => Some(CaseValue::Str(Cow::Owned(s.clone()))),
            _ => None,
        }
    }

    /// The case as the sys-map's JSON writes it: a bool, a number or a
    /// string. An integer JSON numbers cannot hold exactly (beyond 64 bits)
    /// is written as its decimal text.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            CaseValue::Bool(b) => serde_json::Value::Bool(*b),
            CaseValue::Int(i) => i64::try_from(*i)
                .map(serde_json::Value::from)
                .or_else(|_| u64::try_from(*i).map(serde_json::Value::from))
                .unwrap_or_else(|_| serde_json::Value::String(i.to_string())),
            CaseValue::Huge(u) => serde_json::Value::String(u.to_string()),
            CaseValue::Str(s) => serde_json::Value::String(s.to_string()),
        }
    }

    /// The kind of the case, for messages: `bool`, `integer` or `string`.
    pub fn kind(&self) -> &'static str {
        match self {
            CaseValue::Bool(_) => "bool",
            CaseValue::Int(_) | CaseValue::Huge(_) => "integer",
            CaseValue::Str(_) => "string",
        }
    }
}

impl fmt::Display for CaseValue {
    /// Shows the case as the sys-map's JSON would write it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CaseValue::Bool(b) => write!(f, "{b}"),
            CaseValue::Int(i) => write!(f, "{i}"),
            CaseValue::Huge(u) => write!(f, "{u}"),
            CaseValue::Str(s) => write!(f, "{:?}", s.as_ref()),
        }
    }
}

/// The set of values a case type can produce, used at start-up to report
/// sys-map routes that can never match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaseDomain {
    /// `true` and `false`.
    Bool,
    /// Integers from `min` to `max` inclusive.
    Int {
        /// Smallest value of the integer type.
        min: i128,
        /// Largest value of the integer type, clamped to `i128::MAX`.
        max: i128,
    },
    /// Any string.
    AnyString,
    /// Exactly these values (a derived enum).
    OneOf(Vec<CaseValue>),
}

impl CaseDomain {
    /// Whether a value of this domain can equal `value`.
    pub fn contains(&self, value: &CaseValue) -> bool {
        match (self, value) {
            (CaseDomain::Bool, CaseValue::Bool(_)) => true,
            (CaseDomain::Int { min, max }, CaseValue::Int(i)) => min <= i && i <= max,
            (CaseDomain::AnyString, CaseValue::Str(_)) => true,
            (CaseDomain::OneOf(values), v) => values.contains(v),
            _ => false,
        }
    }
}

impl fmt::Display for CaseDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CaseDomain::Bool => f.write_str("bool"),
            CaseDomain::Int { min, max } => write!(f, "integers {min}..={max}"),
            CaseDomain::AnyString => f.write_str("strings"),
            CaseDomain::OneOf(values) => {
                f.write_str("one of ")?;
                for (i, v) in values.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{v}")?;
                }
                Ok(())
            }
        }
    }
}

/// A type `process` can use as a case variable.
///
/// Implemented for `bool`, every integer type, `String`, `&str`, `Cow<str>`,
/// and user enums through `#[derive(slingshot::Case)]`:
///
/// ```
/// #[derive(slingshot::Case)]
/// enum Verdict {
///     Accepted,                 // routes on "Accepted"
///     #[case(rename = "spam")]
///     Junk,                     // routes on "spam"
/// }
/// # use slingshot::{Case, CaseValue};
/// assert_eq!(Verdict::Junk.to_case(), CaseValue::Str("spam".into()));
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a slingshot case variable",
    label = "not a case variable",
    note = "a case variable is a `bool`, an integer, a `String` or `&'static str`, or an enum with `#[derive(slingshot::Case)]`",
    note = "the sys-map routes outputs by a JSON bool, integer or string, so floats, options and structs have no route to match"
)]
pub trait Case {
    /// The value routes are matched on.
    fn to_case(&self) -> CaseValue;
    /// Every value this type can produce.
    fn domain() -> CaseDomain;
}

impl Case for bool {
    fn to_case(&self) -> CaseValue {
        CaseValue::Bool(*self)
    }
    fn domain() -> CaseDomain {
        CaseDomain::Bool
    }
}

macro_rules! int_cases {
    ($($t:ty),*) => {$(
        impl Case for $t {
            fn to_case(&self) -> CaseValue {
                match i128::try_from(*self) {
                    Ok(i) => CaseValue::Int(i),
                    // Only u128 above i128::MAX lands here.
                    Err(_) => CaseValue::Huge(*self as u128),
                }
            }
            fn domain() -> CaseDomain {
                CaseDomain::Int {
                    min: i128::try_from(<$t>::MIN).unwrap_or(i128::MIN),
                    max: i128::try_from(<$t>::MAX).unwrap_or(i128::MAX),
                }
            }
        }
    )*};
}
int_cases!(u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize);

impl Case for String {
    fn to_case(&self) -> CaseValue {
        CaseValue::Str(Cow::Owned(self.clone()))
    }
    fn domain() -> CaseDomain {
        CaseDomain::AnyString
    }
}

impl Case for &str {
    fn to_case(&self) -> CaseValue {
        CaseValue::Str(Cow::Owned((*self).to_owned()))
    }
    fn domain() -> CaseDomain {
        CaseDomain::AnyString
    }
}

impl Case for Cow<'_, str> {
    fn to_case(&self) -> CaseValue {
        CaseValue::Str(Cow::Owned(self.as_ref().to_owned()))
    }
    fn domain() -> CaseDomain {
        CaseDomain::AnyString
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_never_match_each_other() {
        let json: Vec<serde_json::Value> = serde_json::from_str(r#"[true, "true", 1]"#).unwrap();
        let cases: Vec<CaseValue> = json.iter().filter_map(CaseValue::from_json).collect();
        assert_eq!(cases.len(), 3);
        assert_ne!(cases[0], cases[1]);
        assert_ne!(cases[0], cases[2]);
        assert_ne!(cases[1], cases[2]);
        assert_eq!(true.to_case(), cases[0]);
        assert_eq!("true".to_case(), cases[1]);
        assert_eq!(1u8.to_case(), cases[2]);
        assert_eq!(1i64.to_case(), cases[2]);
    }

    #[test]
    fn integer_domains_follow_the_type() {
        assert!(u8::domain().contains(&CaseValue::Int(255)));
        assert!(!u8::domain().contains(&CaseValue::Int(256)));
        assert!(!u8::domain().contains(&CaseValue::Int(-1)));
        assert!(!u8::domain().contains(&CaseValue::Bool(true)));
        assert_eq!(u128::MAX.to_case(), CaseValue::Huge(u128::MAX));
        assert!(!bool::domain().contains(&CaseValue::Str("true".into())));
    }

    #[test]
    fn non_scalar_json_is_not_a_case() {
        for text in ["null", "1.5", "[1]", "{}"] {
            let value: serde_json::Value = serde_json::from_str(text).unwrap();
            assert_eq!(CaseValue::from_json(&value), None, "{text}");
        }
    }
}
