#!/usr/bin/env bash
# Build the Python package (slingshot-py) into a virtual environment and run
# its pytest suite: the embedded default and the real RabbitMQ, PostgreSQL and
# S3 (which scripts/services.sh starts; their addresses come from its env file).
#
#   scripts/python-tests.sh [pytest args...]
#
# The virtual environment lives in $SLINGSHOT_PY_VENV (default
# /var/tmp/slingshot-services/pyvenv) and is created, with maturin, pytest,
# boto3, pika and pydantic (the typed-object tests), when missing. The
# extension is built with `maturin develop` (a debug build sharing the
# workspace's target/), and so is the sys-map
# server the tests run, slingshot-sysmap (its path in $SLINGSHOT_SYSMAP_BIN).
# Needs python3 >= 3.10 with venv and pip; fails, saying so, without one.
set -euo pipefail
exec </dev/null
cd "$(dirname "${BASH_SOURCE[0]}")/.."

STATE_DIR="${SLINGSHOT_SERVICES_DIR:-/var/tmp/slingshot-services}"
VENV="${SLINGSHOT_PY_VENV:-$STATE_DIR/pyvenv}"
REQUIREMENTS="maturin>=1.5,<2 pytest>=8 boto3 pika sqlalchemy>=2 psycopg2-binary>=2.9 pydantic>=2.6,<3"

die() { echo "python-tests.sh: ERROR: $*" >&2; exit 1; }

python=${PYTHON:-python3}
command -v "$python" >/dev/null || die "$python not found: the Python tests need CPython >= 3.10 with venv and pip"
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
    || die "$($python --version) is too old: slingshot's Python package needs CPython >= 3.10"

if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$VENV/.slingshot-requirements" 2>/dev/null)" != "$REQUIREMENTS" ]; then
    echo "python-tests.sh: creating $VENV ($REQUIREMENTS)" >&2
    "$python" -m venv "$VENV" || die "cannot create a virtual environment (is python3-venv installed?)"
    # shellcheck disable=SC2086
    "$VENV/bin/pip" install --quiet --upgrade $REQUIREMENTS || die "pip could not install: $REQUIREMENTS"
    echo "$REQUIREMENTS" > "$VENV/.slingshot-requirements"
fi

# shellcheck source=/dev/null
. "$STATE_DIR/env" || die "$STATE_DIR/env is missing: run scripts/services.sh first"

# The real-service tests serve their sys-maps with the project's own server
# (tests/conftest.py's SysMapServer runs $SLINGSHOT_SYSMAP_BIN).
echo "==> cargo build -p slingshot --bin slingshot-sysmap"
cargo build --quiet -p slingshot --bin slingshot-sysmap || die "cannot build slingshot-sysmap"
target_dir=$(cargo metadata --format-version 1 --no-deps \
    | "$python" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])') \
    || die "cargo metadata does not name the target directory"
export SLINGSHOT_SYSMAP_BIN="$target_dir/debug/slingshot-sysmap"
[ -x "$SLINGSHOT_SYSMAP_BIN" ] || die "the build left no $SLINGSHOT_SYSMAP_BIN"

echo "==> maturin develop (slingshot-py)"
(
    cd slingshot-py
    VIRTUAL_ENV="$VENV" PATH="$VENV/bin:$PATH" maturin develop --quiet
)

# What `pip install ./slingshot-py` gives, not the editable install above:
# a wheel in a fresh virtual environment must hold both import names.
echo "==> the wheel as pip installs it (maturin build, then a fresh virtual environment)"
wheels=$(mktemp -d "${TMPDIR:-/tmp}/slingshot-wheel.XXXXXX")
trap 'rm -rf "$wheels"' EXIT
VIRTUAL_ENV="$VENV" PATH="$VENV/bin:$PATH" maturin build --quiet --profile dev -m slingshot-py/Cargo.toml -o "$wheels"
"$python" -m venv "$wheels/venv"
"$wheels/venv/bin/pip" install --quiet "$wheels"/slingshot_runtime-*.whl || die "pip could not install the wheel"
(cd "$wheels" && venv/bin/python -c '
import slingshot, slingshot.testing, slingshot_microservice, slingshot_microservice.typing
assert callable(slingshot_microservice.Microservice) and callable(slingshot.microservice)
print("    the wheel holds slingshot and slingshot_microservice")
') || die "the wheel does not provide both import packages"

echo "==> pytest slingshot-py/tests"
cd slingshot-py
"$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"
