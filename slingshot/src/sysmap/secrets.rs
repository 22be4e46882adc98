//! Resolving secret references (GNU `pass` entry names) to secrets: environment, then a secrets directory, then `pass show`.
//!
//! For a reference such as `slingshot/rabbitmq`, in this order:
//! 1. the environment variable `SLINGSHOT_SECRET_SLINGSHOT_RABBITMQ` (the
//!    reference upper-cased, every character that is not a letter or digit
//!    replaced by `_`);
//! 2. the file `slingshot/rabbitmq` under the secrets directory
//!    (`SLINGSHOT_SECRETS_DIR`, default `/run/secrets`, where Docker and
//!    Kubernetes mount secrets), first line;
//! 3. `pass show slingshot/rabbitmq`, first line.
//!
//! Secrets are never logged; errors name the reference and the places tried.

use std::path::{Component, Path};

/// A secret reference that resolved nowhere.
#[derive(Debug, thiserror::Error)]
#[error("secret {reference:?} not found; tried {}", tried.join("; "))]
pub struct SecretError {
    /// The reference.
    pub reference: String,
    /// Each place tried and what happened there.
    pub tried: Vec<String>,
}

/// The environment variable that holds the secret behind `reference`.
pub fn env_var_name(reference: &str) -> String {
    let mut name = String::from("SLINGSHOT_SECRET_");
    name.extend(reference.chars().map(|c| {
        if c.is_ascii_alphanumeric() {
            c.to_ascii_uppercase()
        } else {
            '_'
        }
    }));
    name
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or("").to_string()
}

/// Resolves `reference`, looking for a file under `secrets_dir` second.
/// Blocking (it may read a file or run `pass`): call it from a blocking
/// thread or at start-up.
pub fn resolve(reference: &str, secrets_dir: &Path) -> Result<String, SecretError> {
    let mut tried = Vec::new();
    let var = env_var_name(reference);
    match std::env::var(&var) {
        Ok(value) => return Ok(first_line(&value)),
        Err(_) => tried.push(format!("${var} is not set")),
    }

    let dir = secrets_dir;
    let relative = Path::new(reference);
    let safe = relative.components().all(|c| matches!(c, Component::Normal(_)));
    if safe {
        let file = dir.join(relative);
        match std::fs::read_to_string(&file) {
            Ok(text) => return Ok(first_line(&text)),
            Err(e) => tried.push(format!("{}: {e}", file.display())),
        }
    } else {
        tried.push(format!("{}: reference is not a plain relative path", dir.display()));
    }

    match std::process::Command::new("pass").arg("show").arg(reference).output() {
        Ok(out) if out.status.success() => match String::from_utf8(out.stdout) {
            Ok(text) => return Ok(first_line(&text)),
            Err(_) => tried.push("`pass show` printed something that is not UTF-8".into()),
        },
        Ok(out) => tried.push(format!(
            "`pass show` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => tried.push(format!("`pass` could not run: {e}")),
    }
    Err(SecretError {
        reference: reference.to_string(),
        tried,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variable_names() {
        assert_eq!(
            env_var_name("slingshot/rabbit-mq"),
            "SLINGSHOT_SECRET_SLINGSHOT_RABBIT_MQ"
        );
    }

    #[test]
    fn environment_comes_first() {
        let reference = "unit-test/env-first";
        std::env::set_var(env_var_name(reference), "s3cret\nignored");
        assert_eq!(resolve(reference, Path::new("/run/secrets")).unwrap(), "s3cret");
        std::env::remove_var(env_var_name(reference));
    }

    #[test]
    fn an_unresolvable_reference_lists_every_place_tried() {
        let err = resolve("unit-test/../nowhere", Path::new("/run/secrets")).unwrap_err();
        assert_eq!(err.tried.len(), 3, "{err}");
        assert!(
            err.to_string().contains("SLINGSHOT_SECRET_UNIT_TEST____NOWHERE"),
            "{err}"
        );
    }
}
