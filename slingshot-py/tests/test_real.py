"""Python services on the real RabbitMQ, PostgreSQL and S3 (Garage), each in its own process as in production."""

from __future__ import annotations

import signal
import time

import pytest

from conftest import SERVICES, output_of


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def test_the_original_example_runs_unchanged(real):
    inbound, outbound = real.queue("simple-in"), real.queue("simple-out")
    bucket_in, bucket_out = real.bucket("in"), real.bucket("out")
    url = real.serve(
        {
            "simple-py-microservice": {"in": inbound, "out": [{"case": True, "queues": [outbound]}]},
            "simple-py-microservice/in": bucket_in,
            "simple-py-microservice/out": bucket_out,
        }
    )
    ids = list(range(1, 21))
    for id in ids:
        real.put(bucket_in, id, f"world {id}".encode())
    service = real.start(SERVICES / "legacy_simple.py", url)
    real.publish(inbound, ids)

    arrived = real.drain(outbound, len(ids))
    service.send_signal(signal.SIGTERM)
    log = output_of(service)

    assert sorted(int(body) for body, _ in arrived) == ids, log
    for id in ids:
        assert real.get(bucket_out, id) == f"Hello world {id}".encode()
    assert service.returncode == 0, log


def test_sigterm_finishes_requests_in_flight_and_loses_none(real):
    inbound, outbound = real.queue("slow-in"), real.queue("slow-out")
    url = real.serve({"slow": {"in": inbound, "out": [{"case": "done", "queues": [outbound]}]}})
    ids = list(range(100, 124))
    real.publish(inbound, ids)
    service = real.start(
        SERVICES / "slow.py", url, env={"SLOW_SECONDS": "0.4", "SLINGSHOT_CONCURRENCY": "4"}
    )
    wait_until(lambda: real.count(outbound) >= 4, 60, "the first outputs")
    service.send_signal(signal.SIGTERM)
    log = output_of(service, timeout=30)

    done = [int(body) for body, _ in real.drain(outbound, len(ids), timeout=2)]
    left = real.count(inbound)
    assert service.returncode == 0, log
    assert 4 <= len(done) < len(ids), f"stopped after {len(done)} of {len(ids)}:\n{log}"
    # Every request either went through exactly once or is still queued for the next instance.
    assert len(set(done)) == len(done), f"duplicates: {done}"
    assert len(done) + left == len(ids), f"{len(done)} done + {left} queued != {len(ids)}\n{log}"


def test_a_killed_database_connection_loses_nothing(real):
    real.sql("CREATE TABLE seen (id BIGINT PRIMARY KEY)")
    inbound, outbound = real.queue("rec-in"), real.queue("rec-out")
    url = real.serve({"recorder": {"in": inbound, "out": [{"case": True, "queues": [outbound]}]}})
    ids = list(range(1, 151))
    service = real.start(SERVICES / "recorder.py", url, env={"SLINGSHOT_CONCURRENCY": "4"})
    real.publish(inbound, ids)
    wait_until(lambda: real.count(outbound) >= 20, 60, "the first outputs")
    killed = real.sql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
        (real.database,),
    )
    arrived = real.drain(outbound, len(ids), timeout=90)
    service.send_signal(signal.SIGTERM)
    log = output_of(service)

    assert killed, "no connection of the service was found to kill"
    assert sorted({int(body) for body, _ in arrived}) == ids, log
    assert real.sql("SELECT count(*) FROM seen")[0][0] == len(ids)
    assert real.count(f"{inbound}.dead-letter") == 0, log


def test_once_mode_does_each_message_once_in_the_python_service_s_transaction(real):
    ids = list(range(1, 41))
    real.sql("CREATE TABLE py_counters (id BIGINT PRIMARY KEY, n INTEGER NOT NULL)")
    for id in ids:
        real.sql("INSERT INTO py_counters (id, n) VALUES (%s, 0)", (id,))
    inbound, outbound = real.queue("once-in"), real.queue("once-out")
    url = real.serve({"once-counter": {"in": inbound, "out": [{"case": True, "queues": [outbound]}]}})
    service = real.start(
        SERVICES / "once_counter.py",
        url,
        env={"SLINGSHOT_CONCURRENCY": "4", "SLINGSHOT_RETRY_BASE_MS": "10", "SLINGSHOT_RETRY_MAX_MS": "20"},
    )
    # Every message twice, identical: one identity, so done once.
    real.publish(inbound, ids + ids)
    arrived = real.drain(outbound, len(ids), timeout=60)
    deadline = time.monotonic() + 30
    while real.count(inbound) > 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    left = real.count(inbound)
    service.send_signal(signal.SIGTERM)
    log = output_of(service)

    assert left == 0, f"{left} duplicates not taken:\n{log}"
    assert sorted(int(body) for body, _ in arrived) == ids, log
    assert real.count(outbound) == 0, f"an output was published twice:\n{log}"
    assert real.sql("SELECT id, n FROM py_counters WHERE n <> 1") == [], log
    tables = real.sql("SELECT tablename FROM pg_tables WHERE tablename LIKE 'slingshot_once_counter_%%'")
    inbox = next(t for (t,) in tables if t.endswith("_inbox"))
    outbox = next(t for (t,) in tables if t.endswith("_outbox"))
    assert real.sql(f"SELECT count(*) FROM {inbox}")[0][0] == len(ids)
    assert real.sql(f"SELECT count(*) FROM {outbox}")[0][0] == 0
    assert "already done (once mode)" in log, log
    assert service.returncode == 0, log


def test_once_mode_refuses_a_commit_by_process(real):
    real.sql("CREATE TABLE py_counters (id BIGINT PRIMARY KEY, n INTEGER NOT NULL)")
    real.sql("INSERT INTO py_counters (id, n) VALUES (5, 0)")
    inbound, outbound = real.queue("once-commit-in"), real.queue("once-commit-out")
    # Declared before the service does, so that the test can wait on it.
    real.channel.queue_declare(f"{inbound}.dead-letter", durable=True)
    real.queues.append(f"{inbound}.dead-letter")
    url = real.serve({"once-counter": {"in": inbound, "out": [{"case": True, "queues": [outbound]}]}})
    service = real.start(
        SERVICES / "once_counter.py",
        url,
        env={"ONCE_COMMITS": "1", "SLINGSHOT_MAX_ATTEMPTS": "2", "SLINGSHOT_RETRY_BASE_MS": "10"},
    )
    real.publish(inbound, [5])
    dead = real.drain(f"{inbound}.dead-letter", 1, timeout=60)
    service.send_signal(signal.SIGTERM)
    log = output_of(service)

    assert len(dead) == 1, log
    error = dead[0][1]["x-slingshot-error"]
    error = error.decode() if isinstance(error, bytes) else error
    assert "in once mode slingshot commits" in error, error
    assert real.sql("SELECT n FROM py_counters WHERE id = 5") == [(0,)], "a refused commit wrote nothing"
    assert real.count(outbound) == 0


def test_exceptions_are_dead_lettered_with_their_kind_type_and_location(real):
    inbound, outbound = real.queue("fail-in"), real.queue("fail-out")
    bucket_in = real.bucket("in")
    url = real.serve(
        {
            "failing": {"in": inbound, "out": [{"case": True, "queues": [outbound]}]},
            "failing/in": bucket_in,
        }
    )
    service = real.start(
        SERVICES / "failing.py",
        url,
        env={"SLINGSHOT_MAX_ATTEMPTS": "2", "SLINGSHOT_RETRY_BASE_MS": "10", "SLINGSHOT_RETRY_MAX_MS": "20"},
    )
    real.publish(inbound, [1, 2, 3])
    ok = real.drain(outbound, 1)
    dead = real.drain(f"{inbound}.dead-letter", 2, timeout=60)
    service.send_signal(signal.SIGTERM)
    log = output_of(service)

    assert [int(body) for body, _ in ok] == [3], log
    by_id = {int(body): headers for body, headers in dead}
    assert sorted(by_id) == [1, 2], log
    raised = by_id[1]
    assert raised["x-slingshot-error-kind"] == "process-error"
    error = raised["x-slingshot-error"]
    error = error.decode() if isinstance(error, bytes) else error
    assert error.startswith("ValueError: bad request 1 (at "), error
    assert "failing.py:" in error and error.endswith(" in process)"), error
    assert raised["x-slingshot-attempt"] == 2
    missing = by_id[2]
    assert missing["x-slingshot-error-kind"] == "storage"
    assert "ObjectNotFound" in str(missing["x-slingshot-error"])
    # The traceback is in the log, with the request's trace ID.
    assert "Traceback (most recent call last)" in log and "bad request 1" in log
    assert "trace_id" in log, log



@pytest.mark.parametrize("mode", ["threads", "async"])
def test_concurrency_requests_are_in_process_at_once(real, mode):
    # A barrier of 4 parties only opens if 4 calls are in `process` together:
    # calls that ran one at a time (a held GIL, a serialised loop) would time
    # out and be dead-lettered instead.
    inbound, outbound = real.queue("bar-in"), real.queue("bar-out")
    url = real.serve({"barrier": {"in": inbound, "out": [{"case": True, "queues": [outbound]}]}})
    ids = list(range(1, 9))
    real.publish(inbound, ids)
    service = real.start(
        SERVICES / "barrier.py",
        url,
        env={
            "SLINGSHOT_CONCURRENCY": "4",
            "SLINGSHOT_MAX_ATTEMPTS": "1",
            "BARRIER": "4",
            "ASYNC": "1" if mode == "async" else "0",
        },
    )
    arrived = real.drain(outbound, len(ids), timeout=90)
    service.send_signal(signal.SIGTERM)
    log = output_of(service)
    assert sorted(int(body) for body, _ in arrived) == ids, log
    assert real.count(f"{inbound}.dead-letter") == 0, log
