"""Encrypted bucket references for a Python service, with no Python code of their own: the runtime encrypts what ``write_file`` writes and decrypts what ``read_file`` reads, and ``objects reencrypt`` works from a Python service's command line (embedded default)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import SERVICES, unique

KEY = "5a" * 32
KEY_VAR = "SLINGSHOT_SECRET_PYTEST_OBJECTS"


def encrypt(plain: str) -> dict:
    return {"keys": {"py1": "pytest/objects"}, "write": "py1", "plain": plain}


def write_sysmap(tmp_path, objects, inp: str, out: str, encrypted: dict) -> str:
    """A file sys-map wiring ``copier`` from bucket ``inp`` to ``out``; ``encrypted`` maps references to ``encrypt`` entries."""
    sysmap = tmp_path / f"{unique('sysmap')}.json"
    sysmap.write_text(
        json.dumps(
            {
                "backends": {
                    "broker": "memory",
                    "objects": {"dir": str(objects)},
                    "database": {"sqlite": str(tmp_path / "db.sqlite")},
                },
                "endpoints": {
                    "copier": {"in": "copier-q", "out": [{"case": "copied", "queues": ["done"]}], "encrypt": encrypted},
                    "copier/in": inp,
                    "copier/out": out,
                },
            }
        )
    )
    return f"file:{sysmap}"


def copier(sysmap: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SERVICES / "copier.py"), *args],
        env={**os.environ, "SLINGSHOT_SYS_MAP": sysmap, KEY_VAR: KEY, "SLINGSHOT_HTTP_ADDR": "off"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_python_service_reads_and_writes_encrypted_objects(tmp_path):
    objects = tmp_path / "objects"
    (objects / "py-plain").mkdir(parents=True)
    (objects / "py-plain" / "7").write_bytes(b"hello python")

    # A plain input read through the migration flag; the output is encrypted.
    first = write_sysmap(tmp_path, objects, "py-plain", "py-sealed", {"in": encrypt("read"), "out": encrypt("reject")})
    result = copier(first, "invoke", "7")
    assert result.returncode == 0, result.stdout + result.stderr
    stored = (objects / "py-sealed" / "7").read_bytes()
    assert stored.startswith(b"SLSE") and b"HELLO PYTHON" not in stored

    # `objects reencrypt` moves the plain input under the key.
    result = copier(first, "objects", "reencrypt", "in")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "moved 1 (1 from plain)" in result.stdout, result.stdout
    assert (objects / "py-plain" / "7").read_bytes().startswith(b"SLSE")

    # The encrypted output decrypts as the next stage's input.
    second = write_sysmap(tmp_path, objects, "py-sealed", "py-clear", {"in": encrypt("reject")})
    result = copier(second, "invoke", "7")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (objects / "py-clear" / "7").read_bytes() == b"HELLO PYTHON"

    # A flipped bit fails the request with a storage error naming the object.
    tampered = bytearray(stored)
    tampered[-3] ^= 1
    (objects / "py-sealed" / "7").write_bytes(bytes(tampered))
    result = copier(second, "invoke", "7")
    assert result.returncode != 0
    assert "py-sealed/7" in result.stdout + result.stderr
    assert "does not authenticate" in result.stdout + result.stderr
