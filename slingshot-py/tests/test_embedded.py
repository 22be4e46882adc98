"""Python services on the embedded default: the harness (a directory object store, SQLite) and the generated command line on a file sys-map with the in-process broker."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Connection

import slingshot
from slingshot.testing import Harness, ProcessFailed

from conftest import SERVICES, unique


def service(**kwargs):
    return slingshot.microservice(name=unique("py"), sys_map="file:unused.json", **kwargs)


def test_outputs_of_every_case_kind_are_routed():
    @service()
    def process(request: int):
        yield request, True
        yield request + 1, 7
        yield request + 2, "big"
        yield request + 3, -1

    harness = Harness(process).route(True, ["yes"]).route(7, ["seven"]).route("big", ["big-1", "big-2"])
    run = harness.invoke(10)
    assert run.outputs == [(10, True), (11, 7), (12, "big"), (13, -1)]
    assert sorted(run.routes) == [("big-1", 12), ("big-2", 12), ("seven", 11), ("yes", 10)]
    assert run.unrouted == [(13, -1)]


def test_true_and_one_are_different_cases():
    @service()
    def process(request: int):
        return [(request, 1)]

    run = Harness(process).route(True, ["bool"]).invoke(3)
    assert run.routes == [] and run.unrouted == [(3, 1)]


def test_the_reader_streams_yet_works_like_bytesio():
    content = b"".join(f"line {i}\n".encode() for i in range(100_000))
    seen = {}

    @service()
    def process(request: int, read_file: slingshot.ReadFileFn):
        reader = read_file("in", request)
        seen["first"] = reader.readline()
        seen["five"] = reader.read(5)
        reader.seek(0)
        seen["again"] = reader.read(7)
        seen["tell"] = reader.tell()
        seen["value"] = reader.getvalue()
        seen["tell_after_getvalue"] = reader.tell()
        reader.seek(-8, io.SEEK_END)
        seen["tail"] = reader.read()
        reader.seek(0)
        seen["lines"] = sum(1 for _ in reader)
        seen["bytesio"] = io.BytesIO(reader.getvalue()).read(4)
        return []

    Harness(process).object("in", 1, content).invoke(1)
    assert seen["first"] == b"line 0\n"
    assert seen["five"] == b"line "
    assert seen["again"] == b"line 0\n" and seen["tell"] == 7
    assert seen["value"] == content and seen["tell_after_getvalue"] == 7
    assert seen["tail"] == b"e 99999\n"
    assert seen["lines"] == 100_000
    assert seen["bytesio"] == b"line"


def test_the_writer_takes_bytes_buffers_and_str_and_works_with_with():
    @service()
    def process(request: int, write_file: slingshot.WriteFileFn):
        with write_file("out", request) as out:
            assert out.write(b"bytes,") == 6
            out.write(bytearray(b"bytearray,"))
            out.write(memoryview(b"memoryview,"))
            assert out.write("str é") == len("str é".encode())
        assert out.closed
        second = write_file("other", request)
        second.write("left open")  # closed and uploaded when the request ends
        return [(request, True)]

    harness = Harness(process).bucket("other", "test-other")
    run = harness.invoke(4)
    assert harness.read("out", 4) == "bytes,bytearray,memoryview,str é".encode()
    assert harness.read("other", 4) == b"left open"
    assert sorted(w[0] for w in run.written) == ["test-other", "test-out"]


def test_nothing_is_uploaded_when_process_fails():
    @service()
    def process(request: int, write_file: slingshot.WriteFileFn):
        write_file("out", request).write(b"half done")
        raise RuntimeError("broke after writing")

    harness = Harness(process)
    with pytest.raises(ProcessFailed) as failed:
        harness.invoke(5)
    assert failed.value.kind == "process-error" and not failed.value.transient
    assert failed.value.message.startswith("RuntimeError: broke after writing (at ")
    assert harness.read("out", 5) is None


def test_file_handles_stop_working_when_the_request_ends():
    kept = {}

    @service()
    def process(request: int, write_file: slingshot.WriteFileFn):
        kept["writer"] = write_file("out", request)
        kept["write_file"] = write_file
        return []

    Harness(process).invoke(6)
    with pytest.raises(ValueError, match="closed"):
        kept["writer"].write(b"too late")
    with pytest.raises(ValueError, match="valid only inside `process`"):
        kept["write_file"]("out", 6)


def test_a_missing_object_is_a_storage_failure_that_is_not_retried_as_an_outage():
    @service()
    def process(request: int, read_file: slingshot.ReadFileFn):
        try:
            read_file("in", request)
        except slingshot.ObjectNotFound as e:
            assert isinstance(e, slingshot.StorageError) and isinstance(e, OSError)
            assert e.transient is False
            raise
        return []

    with pytest.raises(ProcessFailed) as failed:
        Harness(process).invoke(404)
    assert failed.value.kind == "storage" and not failed.value.transient
    assert "ObjectNotFound" in failed.value.message


def test_a_storage_error_raised_from_another_keeps_its_kind():
    @service()
    def process(request: int, read_file: slingshot.ReadFileFn):
        try:
            read_file("in", request)
        except slingshot.StorageError as e:
            raise KeyError("wrapped") from e

    with pytest.raises(ProcessFailed) as failed:
        Harness(process).invoke(9)
    assert failed.value.kind == "storage"
    assert failed.value.message.startswith("KeyError: 'wrapped'")


#: The one message for a value that is not a case, wherever one is taken.
NOT_A_CASE = "{} is not a case: a case is a bool, an int that fits in i64 or u64, or a str, as the sys-map's routes are"


@pytest.mark.parametrize(
    "bad, message",
    [
        ((1, 1.5), NOT_A_CASE.format("1.5 (float)")),
        ((-1, True), "the id must be an int"),
        ((True, True), "the id must be an int"),
        ("not a pair", "each output must be a tuple"),
        ((1, 2**64), NOT_A_CASE.format("18446744073709551616 (int)")),
        ((1, None), NOT_A_CASE.format("None (NoneType)")),
    ],
)
def test_bad_outputs_fail_the_request_saying_what_is_wrong(bad, message):
    @service()
    def process(request: int):
        return [bad]

    with pytest.raises(ProcessFailed) as failed:
        Harness(process).invoke(1)
    assert failed.value.kind == "process-error"
    assert message in failed.value.message


def test_the_harness_takes_cases_as_the_runtime_does():
    @service()
    def process(request: int):
        return [(request, 2**63 - 1), (request, -(2**63)), (request, "x")]

    harness = Harness(process).route(2**63 - 1, ["max"]).route(-(2**63), ["min"]).route("x", ["x"])
    assert sorted(harness.invoke(1).routes) == [("max", 1), ("min", 1), ("x", 1)]
    for bad, shown in ((1.5, "1.5 (float)"), (2**64, "18446744073709551616 (int)"), (None, "None (NoneType)")):
        with pytest.raises(TypeError) as refused:
            harness.route(bad, ["q"])
        assert str(refused.value) == NOT_A_CASE.format(shown)


def test_failure_kinds_are_the_runtime_s_own():
    from slingshot import _native

    assert [kind.value for kind in slingshot.FailureKind] == list(_native.FAILURE_KINDS)
    assert slingshot.FailureKind.PROCESS_ERROR == "process-error" and f"{slingshot.FailureKind.STORAGE}" == "storage"

    @service()
    def process(request: int):
        raise ValueError("no")

    with pytest.raises(ProcessFailed) as failed:
        Harness(process).invoke(1)
    assert failed.value.kind is slingshot.FailureKind.PROCESS_ERROR
    assert str(failed.value).startswith("process-error: ValueError: no")
    with pytest.raises(ValueError, match='unknown failure kind "nope"'):
        _native.Failed("nope", "message", False)


def test_returning_a_non_iterable_is_a_process_error():
    @service()
    def process(request: int):
        return 42

    with pytest.raises(ProcessFailed, match="return or yield"):
        Harness(process).invoke(1)


def test_the_connection_commits_and_what_is_not_committed_is_rolled_back():
    @service()
    def process(request: int, connection: Connection):
        connection.execute(text("INSERT INTO kept (id) VALUES (:id)"), {"id": request})
        connection.commit()
        connection.execute(text("INSERT INTO kept (id) VALUES (:id)"), {"id": request + 1000})
        return [(request, True)]

    harness = Harness(process)
    import sqlite3

    db = sqlite3.connect(harness.database_path)
    db.execute("CREATE TABLE kept (id INTEGER PRIMARY KEY)")
    db.commit()
    harness.invoke(1)
    harness.invoke(2)
    assert [row[0] for row in db.execute("SELECT id FROM kept ORDER BY id")] == [1, 2]
    db.close()


def test_the_sqlite_connection_has_the_rust_services_pragmas():
    seen = {}

    @service()
    def process(request: int, connection: Connection):
        for pragma in ("journal_mode", "foreign_keys", "busy_timeout"):
            seen[pragma] = connection.execute(text(f"PRAGMA {pragma}")).scalar()
        return []

    Harness(process).invoke(1)
    assert seen == {"journal_mode": "wal", "foreign_keys": 1, "busy_timeout": 10000}


def test_async_process_and_async_generators_run():
    @service()
    async def coroutine(request: int, context: slingshot.RequestContext):
        await asyncio.sleep(0.01)
        return [(request, context.attempt)]

    @service()
    async def agen(request: int):
        for i in range(3):
            await asyncio.sleep(0)
            yield request + i, "n"

    assert Harness(coroutine).invoke(3).outputs == [(3, 1)]
    assert Harness(agen).invoke(3).outputs == [(3, "n"), (4, "n"), (5, "n")]


def test_the_context_names_the_request():
    seen = {}

    @service()
    def process(ctx: slingshot.RequestContext, request_id: int):
        seen["ctx"] = ctx
        return []

    Harness(process).invoke(77)
    ctx = seen["ctx"]
    assert ctx.request == 77 and ctx.attempt == 1 and ctx.redelivered is False
    assert ctx.service == process.name and ctx.trace_id


def test_the_original_example_runs_unchanged_on_the_embedded_default(tmp_path):
    objects = tmp_path / "objects"
    (objects / "simple-in").mkdir(parents=True)
    (objects / "simple-in" / "7").write_bytes(b"embedded")
    sysmap = tmp_path / "sysmap.json"
    sysmap.write_text(
        json.dumps(
            {
                "backends": {
                    "broker": "memory",
                    "objects": {"dir": str(objects)},
                    "database": {"sqlite": str(tmp_path / "db.sqlite")},
                },
                "endpoints": {
                    "simple-py-microservice": {"in": "simple-in-q", "out": [{"case": True, "queues": ["done"]}]},
                    "simple-py-microservice/in": "simple-in",
                    "simple-py-microservice/out": "simple-out",
                },
            }
        )
    )
    result = subprocess.run(
        [sys.executable, str(SERVICES / "legacy_simple.py"), "invoke", "7"],
        env={**os.environ, "SLINGSHOT_SYS_MAP": f"file:{sysmap}"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (objects / "simple-out" / "7").read_bytes() == b"Hello embedded"
    assert "done" in result.stdout + result.stderr


@pytest.mark.parametrize("how", ["script", "python -m slingshot"])
def test_the_command_line_answers_help_for_a_python_service(how):
    script = str(SERVICES / "slow.py")
    command = [sys.executable, script] if how == "script" else [sys.executable, "-m", "slingshot", script]
    result = subprocess.run([*command, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    for word in ("run", "invoke", "check", "dead-letters", "topology", "SLINGSHOT_CONCURRENCY"):
        assert word in result.stdout, result.stdout


def test_start_raises_runtime_error_when_the_service_fails(tmp_path):
    @service()
    def process(request: int):
        return []

    missing = tmp_path / "no-such-sysmap.json"
    os.environ["SLINGSHOT_SYS_MAP"] = f"file:{missing}"
    try:
        with pytest.raises(RuntimeError, match="failed"):
            process.start(["invoke", "1"])
    finally:
        del os.environ["SLINGSHOT_SYS_MAP"]
