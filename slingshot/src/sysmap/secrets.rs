//! Resolving secret references (GNU `pass` entry names) to secrets:
//! environment, then a secrets directory, then `pass show`.
//!
//! For a reference such as `slingshot/rabbitmq`, in this order:
//! 1. the environment variable `SLINGSHOT_SECRET_SLINGSHOT_RABBITMQ` (the
//!    reference upper-cased, every character that is not a letter or digit
//!    replaced by `_`);
//! 2. the file `slingshot/rabbitmq` under the secrets directory
//!    (`SLINGSHOT_SECRETS_DIR`, default `/run/secrets`, where Docker and
//!    Kubernetes mount secrets), first line;
//! 3. `pass show slingshot/rabbitmq`, first line, killed if it has not
//!    answered within a timeout (`SLINGSHOT_SECRET_TIMEOUT_SECS`): `pass`
//!    runs GnuPG, which may wait for a passphrase nobody will type.
//!
//! Secrets are never logged; errors name the reference and the places tried.

use std::ffi::OsStr;
use std::io::Read;
use std::path::{Component, Path};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

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

/// Resolves `reference`, looking for a file under `secrets_dir` second and
/// giving `pass show` at most `pass_timeout`. Blocking (it may read a file or
/// run `pass`): call it from a blocking thread or at start-up.
pub fn resolve(reference: &str, secrets_dir: &Path, pass_timeout: Duration) -> Result<String, SecretError> {
    resolve_with(reference, secrets_dir, OsStr::new("pass"), pass_timeout)
}

/// [`resolve`] with `pass` being `program`.
fn resolve_with(
    reference: &str,
    secrets_dir: &Path,
    program: &OsStr,
    pass_timeout: Duration,
) -> Result<String, SecretError> {
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

    match pass_show(program, reference, pass_timeout) {
        Ok(text) => return Ok(first_line(&text)),
        Err(why) => tried.push(why),
    }
    Err(SecretError {
        reference: reference.to_string(),
        tried,
    })
}

/// `program show reference`'s output, or why there is none. The program is
/// killed once `timeout` has passed without it exiting.
fn pass_show(program: &OsStr, reference: &str, timeout: Duration) -> Result<String, String> {
    let deadline = Instant::now() + timeout;
    let mut child = Command::new(program)
        .arg("show")
        .arg(reference)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("`pass` could not run: {e}"))?;
    // Read on threads of their own, so a full pipe cannot stall the child
    // and a child that never exits cannot stall this thread.
    let stdout = read_to_end_in_background(child.stdout.take());
    let stderr = read_to_end_in_background(child.stderr.take());
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                // Killing an exited child fails harmlessly; wait reaps it.
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "`pass show` did not finish within {} (SLINGSHOT_SECRET_TIMEOUT_SECS) and was killed",
                    seconds(timeout)
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(format!("waiting for `pass show`: {e}")),
        }
    };
    // Its output ends when it exits, unless something it started holds the
    // pipe open: that gets what is left of the timeout.
    let output = |pipe: mpsc::Receiver<Vec<u8>>| {
        let left = deadline.saturating_duration_since(Instant::now());
        pipe.recv_timeout(left.max(Duration::from_millis(100)))
    };
    if !status.success() {
        let text = output(stderr).unwrap_or_default();
        return Err(format!(
            "`pass show` failed ({status}): {}",
            String::from_utf8_lossy(&text).trim()
        ));
    }
    let text = output(stdout).map_err(|_| {
        "`pass show` exited but its output did not end (a process it started holds it open)".to_string()
    })?;
    String::from_utf8(text).map_err(|_| "`pass show` printed something that is not UTF-8".to_string())
}

/// Everything `pipe` yields, sent once it ends (nothing if there is no pipe
/// or it fails).
fn read_to_end_in_background(pipe: Option<impl Read + Send + 'static>) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::sync_channel(1);
    if let Some(mut pipe) = pipe {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            // A read error ends the output where it is.
            let _ = pipe.read_to_end(&mut bytes);
            let _ = tx.send(bytes);
        });
    }
    rx
}

/// `10 s`, or `0.5 s` below a second.
fn seconds(duration: Duration) -> String {
    match duration.subsec_millis() {
        0 => format!("{} s", duration.as_secs()),
        _ => format!("{:.1} s", duration.as_secs_f64()),
    }
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
        assert_eq!(
            resolve(reference, Path::new("/run/secrets"), Duration::from_secs(1)).unwrap(),
            "s3cret"
        );
        std::env::remove_var(env_var_name(reference));
    }

    #[test]
    fn an_unresolvable_reference_lists_every_place_tried() {
        let err = resolve(
            "unit-test/../nowhere",
            Path::new("/run/secrets"),
            Duration::from_secs(10),
        )
        .unwrap_err();
        assert_eq!(err.tried.len(), 3, "{err}");
        assert!(
            err.to_string().contains("SLINGSHOT_SECRET_UNIT_TEST____NOWHERE"),
            "{err}"
        );
    }

    /// Resolves `reference` with a `pass` stand-in, a shell script with
    /// `body`, given `timeout`; also says how long that took.
    fn with_fake_pass(body: &str, reference: &str, timeout: Duration) -> (Result<String, SecretError>, Duration) {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let pass = dir.path().join("pass");
        std::fs::write(&pass, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o755)).unwrap();
        let started = Instant::now();
        let got = resolve_with(reference, dir.path(), pass.as_os_str(), timeout);
        (got, started.elapsed())
    }

    #[test]
    fn pass_show_gives_its_first_line() {
        let body = r#"[ "$1" = show ] && printf 'from-pass %s\nsecond line\n' "$2""#;
        let (got, _) = with_fake_pass(body, "unit-test/pass", Duration::from_secs(10));
        assert_eq!(got.unwrap(), "from-pass unit-test/pass");
    }

    #[test]
    fn a_pass_that_hangs_is_killed_at_the_timeout() {
        // `exec`: the shell becomes the sleep, so killing it ends the output too.
        let (got, took) = with_fake_pass("exec sleep 60", "unit-test/hangs", Duration::from_millis(300));
        let err = got.unwrap_err();
        assert!(took < Duration::from_secs(5), "took {took:?}");
        assert!(err.to_string().contains("did not finish within 0.3 s"), "{err}");
    }

    #[test]
    fn a_pass_whose_child_keeps_the_output_open_is_not_waited_for() {
        // The script exits at once, but a process it started keeps stdout.
        let (got, took) = with_fake_pass("sleep 5 &\nexit 0", "unit-test/orphan", Duration::from_millis(300));
        let err = got.unwrap_err();
        assert!(took < Duration::from_secs(4), "took {took:?}");
        assert!(err.to_string().contains("output did not end"), "{err}");
    }

    #[test]
    fn a_failing_pass_says_why() {
        let body = "echo 'Error: unit-test/none is not in the password store.' >&2; exit 1";
        let (got, _) = with_fake_pass(body, "unit-test/none", Duration::from_secs(10));
        let err = got.unwrap_err();
        assert!(err.to_string().contains("is not in the password store"), "{err}");
    }
}
