"""``slingshot.Client`` on the real RabbitMQ, PostgreSQL and S3 (Garage): calls and submissions to Python services, each in its own process as in production, and what the client raises when they cannot answer."""

from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
import time

import pytest

import slingshot
from conftest import SERVICES, output_of

#: The keys of the reply's JSON for a request done (a failed one adds "failure").
OUTCOME_KEYS = {"service", "queue", "id", "status", "attempt", "routes", "unrouted", "objects"}


@pytest.fixture(autouse=True)
def no_sys_map_override(monkeypatch):
    """The client's sys-map is the one each test gives (``SLINGSHOT_SYS_MAP`` would override it)."""
    monkeypatch.delenv("SLINGSHOT_SYS_MAP", raising=False)


def stop(service: subprocess.Popen) -> str:
    """Stops a service started by ``real.start`` (SIGTERM) and returns what it printed."""
    if service.poll() is None:
        service.send_signal(signal.SIGTERM)
    return output_of(service)


@contextlib.contextmanager
def explained(*services: subprocess.Popen):
    """Fails with the services' logs (stopping them) when the block raises."""
    try:
        yield
    except Exception as e:
        logs = "\n".join(f"--- {' '.join(s.args[1:])} printed:\n{stop(s)}" for s in services)
        raise AssertionError(f"{type(e).__name__}: {e}\n{logs}") from e


def keys(real, bucket: str) -> set[str]:
    return {item["Key"] for item in real.s3.list_objects_v2(Bucket=bucket).get("Contents", [])}


def pipeline_sys_map(real) -> tuple[str, dict]:
    """stamper (writes ``stamped``) → copier (reads it, writes ``copied``) → the ``done`` queue."""
    names = {
        "first": real.queue("stamp-in"),
        "second": real.queue("copy-in"),
        "last": real.queue("done"),
        "stamped": real.bucket("stamped"),
        "copied": real.bucket("copied"),
    }
    url = real.serve(
        {
            "stamper": {"in": names["first"], "out": [{"case": True, "queues": [names["second"]]}]},
            "stamper/out": names["stamped"],
            "copier": {"in": names["second"], "out": [{"case": "copied", "queues": [names["last"]]}]},
            "copier/in": names["stamped"],
            "copier/out": names["copied"],
        }
    )
    return url, names


def test_a_call_returns_what_the_service_did_as_the_json_it_sent(real):
    inbound, outbound = real.queue("stamp-in"), real.queue("stamp-out")
    bucket_out = real.bucket("out")
    url = real.serve(
        {
            "stamper": {"in": inbound, "out": [{"case": True, "queues": [outbound]}]},
            "stamper/out": bucket_out,
        }
    )
    service = real.start(SERVICES / "stamper.py", url)
    # services=None: follows the services registered in this process (none of these).
    with slingshot.Client(url) as client, explained(service):
        outcome = client.call("stamper", 7, timeout=60)
    arrived = [int(body) for body, _ in real.drain(outbound, 1)]
    log = stop(service)

    assert outcome == {
        "service": "stamper",
        "queue": inbound,
        "id": 7,
        "status": "done",
        "attempt": 1,
        "routes": [{"case": True, "queue": outbound, "id": 7}],
        "unrouted": [{"case": False, "id": 1007}],
        "objects": [{"bucket": bucket_out, "key": "7", "size": len(b"stamped 7")}],
    }, log
    assert real.get(bucket_out, 7) == b"stamped 7"
    assert arrived == [7], log
    assert service.returncode == 0, log


def test_a_call_to_a_service_that_fails_returns_the_failure(real):
    inbound, outbound = real.queue("fail-in"), real.queue("fail-out")
    url = real.serve(
        {
            "failing": {"in": inbound, "out": [{"case": True, "queues": [outbound]}]},
            "failing/in": real.bucket("in"),
        }
    )
    service = real.start(
        SERVICES / "failing.py",
        url,
        env={"SLINGSHOT_MAX_ATTEMPTS": "2", "SLINGSHOT_RETRY_BASE_MS": "10", "SLINGSHOT_RETRY_MAX_MS": "20"},
    )
    # failing.py raises ValueError for request 1, every time.
    with slingshot.Client(url) as client, explained(service):
        outcome = client.call("failing", 1, timeout=60)
    dead = real.drain(f"{inbound}.dead-letter", 1)
    log = stop(service)

    assert set(outcome) == OUTCOME_KEYS | {"failure"}, outcome
    assert (outcome["service"], outcome["queue"], outcome["id"]) == ("failing", inbound, 1)
    assert outcome["status"] == "failed", outcome
    assert outcome["attempt"] == 2, outcome
    assert (outcome["routes"], outcome["unrouted"], outcome["objects"]) == ([], [], [])
    failure = outcome["failure"]
    assert set(failure) == {"kind", "error", "attempts", "dead_letter_queue"}
    assert failure["kind"] == slingshot.FailureKind.PROCESS_ERROR == "process-error"
    assert failure["attempts"] == 2
    assert failure["dead_letter_queue"] == f"{inbound}.dead-letter"
    assert failure["error"].startswith("ValueError: bad request 1 (at "), failure
    assert [int(body) for body, _ in dead] == [1], log
    assert real.count(outbound) == 0


def test_a_call_nobody_takes_raises_never_picked_up_and_does_not_run_later(real):
    inbound, outbound = real.queue("stamp-in"), real.queue("stamp-out")
    bucket_out = real.bucket("out")
    url = real.serve(
        {
            "stamper": {"in": inbound, "out": [{"case": True, "queues": [outbound]}]},
            "stamper/out": bucket_out,
        }
    )
    with slingshot.Client(url) as client:
        began = time.monotonic()
        with pytest.raises(slingshot.NeverPickedUp) as expired:
            client.call("stamper", 7, timeout=1.0)
        waited = time.monotonic() - began
        # The same, but allowed to run late: it stays queued.
        with pytest.raises(slingshot.NeverPickedUp) as queued:
            client.call("stamper", 9, timeout=1.0, run_late=True)

        # One request at a time, in queue order: once the marker is done,
        # whatever was queued before it was handled.
        service = real.start(SERVICES / "stamper.py", url, env={"SLINGSHOT_CONCURRENCY": "1"})
        with explained(service):
            marker = client.call("stamper", 8, timeout=60)
    arrived = sorted(int(body) for body, _ in real.drain(outbound, 3, timeout=3))
    left = real.count(inbound)
    log = stop(service)

    assert 1.0 <= waited < 3.0, f"NeverPickedUp after {waited:.2f} s"
    e = expired.value
    assert isinstance(e, slingshot.CallError)
    assert (e.service, e.queue, e.id, e.timeout, e.expires) == ("stamper", inbound, 7, 1.0, True)
    assert str(e) == f'stamper: request 7 was never picked up from "{inbound}" within 1s; it expires and will not run'
    assert queued.value.expires is False and "runs when a service takes it" in str(queued.value)
    assert marker["status"] == "done", marker
    # 7 expired unprocessed; 9 ran late, before the marker 8.
    assert arrived == [8, 9], log
    assert keys(real, bucket_out) == {"8", "9"}, log
    assert left == 0, log


def test_a_call_that_outlasts_its_timeout_raises_still_running(real):
    inbound, outbound = real.queue("slow-in"), real.queue("slow-out")
    url = real.serve({"slow": {"in": inbound, "out": [{"case": "done", "queues": [outbound]}]}})
    service = real.start(SERVICES / "slow.py", url, env={"SLOW_SECONDS": "2"})
    with slingshot.Client(url) as client, explained(service):
        # Once the service answered, it takes the next request at once.
        client.call("slow", 1, timeout=60)
        with pytest.raises(slingshot.StillRunning) as running:
            client.call("slow", 2, timeout=1.0)
    log = stop(service)

    e = running.value
    assert (e.service, e.id, e.attempt, e.timeout) == ("slow", 2, 1, 1.0), log
    assert str(e) == "slow: request 2 is still running (attempt 1) after 1s"
    # It went on, and finished before the service stopped.
    assert sorted(int(body) for body, _ in real.drain(outbound, 2)) == [1, 2], log


def test_a_submission_returns_every_stage_s_outcome(real):
    url, names = pipeline_sys_map(real)
    stamper = real.start(SERVICES / "stamper.py", url)
    copier = real.start(SERVICES / "copier.py", url)
    with slingshot.Client(url, services=["stamper", "copier"]) as client:
        submission = client.submit("stamper", 5)
        assert (submission.service, submission.id) == ("stamper", 5)
        with explained(stamper, copier):
            pipeline = submission.wait_until_done(timeout=60)
        assert submission.wait_until_done(timeout=1) == pipeline, "waiting again returns the same outcome"
    arrived = [int(body) for body, _ in real.drain(names["last"], 1)]
    log = stop(stamper) + stop(copier)

    assert set(pipeline) == {"stages", "ended_at"}
    # The stages report in the order they answer, which need not be the pipeline's.
    stages = {stage["service"]: stage for stage in pipeline["stages"]}
    assert len(pipeline["stages"]) == 2 and set(stages) == {"stamper", "copier"}, pipeline
    assert stages["stamper"] == {
        "service": "stamper",
        "queue": names["first"],
        "id": 5,
        "status": "done",
        "attempt": 1,
        "routes": [{"case": True, "queue": names["second"], "id": 5}],
        "unrouted": [{"case": False, "id": 1005}],
        "objects": [{"bucket": names["stamped"], "key": "5", "size": len(b"stamped 5")}],
    }
    assert stages["copier"] == {
        "service": "copier",
        "queue": names["second"],
        "id": 5,
        "status": "done",
        "attempt": 1,
        "routes": [{"case": "copied", "queue": names["last"], "id": 5}],
        "unrouted": [],
        "objects": [{"bucket": names["copied"], "key": "5", "size": len(b"STAMPED 5")}],
    }
    assert pipeline["ended_at"] == [{"case": "copied", "queue": names["last"], "id": 5}]
    assert real.get(names["copied"], 5) == b"STAMPED 5"
    assert arrived == [5], log


def test_a_stage_that_is_not_running_leaves_the_submission_unfinished(real):
    url, names = pipeline_sys_map(real)
    stamper = real.start(SERVICES / "stamper.py", url)
    with slingshot.Client(url, services=["stamper", "copier"]) as client:
        with explained(stamper):
            client.call("stamper", 4, timeout=60)  # the first stage is up
            submission = client.submit("stamper", 5)
        with pytest.raises(slingshot.Unfinished) as unfinished:
            submission.wait_until_done(timeout=3.0)
    log = stop(stamper)

    e = unfinished.value
    assert isinstance(e, slingshot.CallError)
    assert e.timeout == 3.0
    assert [(s["service"], s["id"], s["status"]) for s in e.done["stages"]] == [("stamper", 5, "done")], log
    assert e.done["ended_at"] == []
    assert e.waiting == [{"service": "copier", "queue": names["second"], "id": 5, "started": False}]
    assert str(e) == f'not done after 3s: 1 stage(s) reported, waiting for copier ("{names["second"]}") ID 5: never picked up'
    # Submitted requests do not expire: both wait for the copier.
    assert real.count(names["second"]) == 2


def test_what_the_client_refuses(real):
    url = real.serve({})
    client = slingshot.Client(url, services=[])
    with pytest.raises(slingshot.CallError) as unknown:
        client.call("nobody", 1, timeout=1.0)
    assert type(unknown.value) is slingshot.CallError
    assert "nobody" in str(unknown.value), unknown.value
    with pytest.raises(TypeError, match="must be an int"):
        client.call("nobody", True)
    with pytest.raises(ValueError, match="0..2"):
        client.call("nobody", -1)
    with pytest.raises(ValueError, match="timeout"):
        client.call("nobody", 1, timeout=-1.0)
    with pytest.raises(TypeError, match="not a str"):
        slingshot.Client(url, services="stamper")
    assert not client.closed
    client.close()
    client.close()
    assert client.closed and "closed" in repr(client)
    with pytest.raises(slingshot.CallError, match="the client is closed"):
        client.call("nobody", 1)


def test_a_sys_map_without_rabbitmq_is_refused_and_slingshot_sys_map_overrides(tmp_path, monkeypatch):
    sysmap = tmp_path / "sysmap.json"
    sysmap.write_text(json.dumps({"endpoints": {}}))
    with pytest.raises(slingshot.CallError, match="names no RabbitMQ"):
        slingshot.Client(f"file:{sysmap}")
    # As for a service, SLINGSHOT_SYS_MAP wins over the sys-map given.
    monkeypatch.setenv("SLINGSHOT_SYS_MAP", f"file:{sysmap}")
    with pytest.raises(slingshot.CallError, match=f"{re.escape(str(sysmap))}.*names no RabbitMQ"):
        slingshot.Client("http://127.0.0.1:9/not-asked")


def answered(client: slingshot.Client, service: str, id: int) -> None:
    """Calls ``service`` until it answers: it is started and its queues are declared and bound."""
    deadline = time.monotonic() + 60
    while True:
        try:
            client.call(service, id, timeout=5)
            return
        except slingshot.CallError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_a_python_stage_emits_events_that_a_subscriber_receives(real):
    names = {
        "in": real.queue("announce-in"),
        "out": real.queue("announce-out"),
        "heard": real.queue("heard"),
        "listen": real.queue("listen-in"),
        "events": real.queue("events"),
    }
    url = real.serve(
        {
            "announcer": {"in": names["in"], "out": [{"case": True, "queues": [names["out"]]}], "events": names["events"]},
            "listener": {
                "in": names["listen"],
                "out": [{"case": True, "queues": [names["heard"]]}],
                "subscribe": [{"exchange": names["events"], "events": ["announcer.invalid-input"]}],
            },
        }
    )
    listener = real.start(SERVICES / "listener.py", url)
    announcer = real.start(SERVICES / "announcer.py", url)
    with slingshot.Client(url) as client, explained(listener, announcer):
        # Each answers once it started (the listener's queue is bound by
        # then); 2 and 4 cause no invalid-input event.
        answered(client, "listener", 2)
        answered(client, "announcer", 4)
        outcome = client.call("announcer", 7, timeout=60)
        assert outcome["status"] == "done"
        assert outcome["events"] == ["announcer.progress", "announcer.invalid-input"]
        assert client.call("announcer", 8, timeout=60)["events"] == ["announcer.progress"]
        heard = sorted(int(body) for body, _ in real.drain(names["heard"], 2))
    stop(listener)
    stop(announcer)
    # 2 was called directly; 7's invalid-input reached the listener; 4 and 8 have none.
    assert heard == [2, 7]
