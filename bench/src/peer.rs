//! The peer of the Python services: the same no-op stage written with FastStream, at pinned versions.
//!
//! `bench/python/faststream_noop.py` is the stage (its docstring says how
//! it is configured and why); `bench/python/requirements-peer.txt` pins
//! FastStream and the AMQP client under it. The python section refuses an
//! interpreter without exactly those versions, saying how to install them:
//! figures of another version would not be the ones the README names.

use std::path::Path;

use anyhow::ensure;

/// The FastStream stage.
pub(crate) const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/python/faststream_noop.py");

/// The requirements file that pins it, as pip reads it.
pub(crate) const REQUIREMENTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/python/requirements-peer.txt");

/// The pins, compiled in: `name[extras]==version` lines.
const PINS: &str = include_str!("../python/requirements-peer.txt");

/// The distributions and versions `requirements` pins (extras dropped).
fn pins(requirements: &str) -> Vec<(&str, &str)> {
    requirements
        .lines()
        .map(|line| line.split('#').next().unwrap_or("").trim())
        .filter_map(|line| line.split_once("=="))
        .map(|(name, version)| (name.split('[').next().unwrap_or(name).trim(), version.trim()))
        .collect()
}

/// Checks that `python` has exactly the pinned versions; returns them, as
/// `faststream 0.7.8, aio-pika 10.2.1, ...`.
pub(crate) fn check(python: &Path) -> anyhow::Result<String> {
    let pins = pins(PINS);
    let how = format!(
        "the python section measures FastStream beside the Python service: install the pinned versions with \
         `{} -m pip install -r {REQUIREMENTS}`",
        python.display()
    );
    // One `name version` line per pin, `-` for a distribution not installed.
    let script = "import sys\nfrom importlib import metadata\nfor name in sys.argv[1:]:\n    try:\n        \
                  print(name, metadata.version(name))\n    except metadata.PackageNotFoundError:\n        \
                  print(name, '-')\n";
    let names: Vec<&str> = pins.iter().map(|(name, _)| *name).collect();
    let installed = crate::harness::python_c(python, script, &names, "cannot list its packages", &how)?;
    let mut wrong = Vec::new();
    for ((name, pinned), line) in pins.iter().zip(installed.lines()) {
        let have = line.split_whitespace().nth(1).unwrap_or("-");
        if have != *pinned {
            wrong.push(match have {
                "-" => format!("{name} is missing (pinned: {pinned})"),
                _ => format!("{name} is {have} (pinned: {pinned})"),
            });
        }
    }
    ensure!(
        wrong.is_empty() && installed.lines().count() == pins.len(),
        "{}: {}; {how}",
        python.display(),
        wrong.join(", ")
    );
    Ok(pins
        .iter()
        .map(|(name, version)| format!("{name} {version}"))
        .collect::<Vec<_>>()
        .join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_are_read_without_extras_and_comments() {
        let text = "# comment\nfaststream[rabbit]==0.7.8\naio-pika==10.2.1  # the client\n\nloose>=1\n";
        assert_eq!(pins(text), vec![("faststream", "0.7.8"), ("aio-pika", "10.2.1")]);
    }

    #[test]
    fn the_requirements_file_pins_faststream_and_aio_pika() {
        let names: Vec<&str> = pins(PINS).into_iter().map(|(name, _)| name).collect();
        assert!(
            names.contains(&"faststream") && names.contains(&"aio-pika"),
            "{names:?}"
        );
    }
}
