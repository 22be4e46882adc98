//! The one rule for service names, shared by `#[slingshot::microservice]` (at
//! compile time), `ServiceDef::register` and the Python decorator (at run
//! time), so that all three accept the same names and say the same thing about
//! the others.
//!
//! A service name is a path segment of the sys-map URL (`{sys_map}/{name}`)
//! and names the service's connections and consumer tags.
//!
//! ```
//! assert!(slingshot_names::check_service_name("image_resizer-2.v1").is_ok());
//! let why = slingshot_names::check_service_name("thumb nailer").unwrap_err();
//! assert_eq!(
//!     slingshot_names::invalid("thumb nailer", why),
//!     "invalid service name \"thumb nailer\": use letters, digits, '-', '_' and '.' only \
//!      (it is a path segment of the sys-map URL)"
//! );
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

/// The longest service name, in bytes.
pub const MAX_LEN: usize = 200;

/// `Ok` if `name` may name a service, else why not (a sentence fragment that
/// follows "invalid service name ...: ").
pub fn check_service_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("it cannot be empty");
    }
    if name.len() > MAX_LEN {
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

/// The message for `name`, refused for `why`: what every place that checks
/// a name says.
pub fn invalid(name: &str, why: &str) -> String {
    format!("invalid service name {name:?}: {why}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in ["thumbnailer", "Image_Resizer-2.v1", "a", &"x".repeat(MAX_LEN)] {
            assert_eq!(check_service_name(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "thumb nailer",
            "images/thumbnailer",
            ".hidden",
            "é",
            &"x".repeat(MAX_LEN + 1),
        ] {
            assert!(check_service_name(bad).is_err(), "{bad:?}");
        }
    }
}
