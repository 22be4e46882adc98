"""Object-storage faults of Python services: large downloads left partly read (on the real RabbitMQ and Garage, ``/healthz`` polled throughout), and reads of any size."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request

from conftest import SERVICES, free_port, output_of

#: How long one ``/healthz`` answer may take.
HEALTH_DEADLINE = 1.0
#: The service's prefetch window: the most duplicates a fault may cause.
PREFETCH = 8


def report(line: str) -> None:
    """Prints a ``fault=`` line and appends it to ``$SLINGSHOT_FAULT_REPORT``, as the Rust fault tests do."""
    print(line)
    path = os.environ.get("SLINGSHOT_FAULT_REPORT")
    if path:
        with open(path, "a", encoding="utf-8") as report_file:
            report_file.write(line + "\n")


class HealthWatch:
    """Polls ``GET /healthz`` every 200 ms in a thread, each answer due within :data:`HEALTH_DEADLINE`."""

    def __init__(self, port: int, ready_within: float) -> None:
        self.url = f"http://127.0.0.1:{port}/healthz"
        self.failures: list[str] = []
        self.polls = 0
        deadline = time.monotonic() + ready_within
        while not self._ok()[0]:
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.url} did not answer 200 within {ready_within} s")
            time.sleep(0.1)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()

    def _ok(self) -> tuple[bool, str]:
        asked = time.monotonic()
        try:
            with urllib.request.urlopen(self.url, timeout=HEALTH_DEADLINE) as answer:
                took = time.monotonic() - asked
                return answer.status == 200 and took <= HEALTH_DEADLINE, f"{answer.status} after {took:.2f} s"
        except OSError as e:
            return False, f"{e} after {time.monotonic() - asked:.2f} s"

    def _poll(self) -> None:
        while not self.stopping.is_set():
            ok, what = self._ok()
            self.polls += 1
            if not ok:
                self.failures.append(what)
            self.stopping.wait(0.2)

    def assert_healthy(self, when: str) -> None:
        assert not self.failures, (
            f"/healthz did not answer within {HEALTH_DEADLINE} s {when}: "
            f"{len(self.failures)} of {self.polls} polls failed, first: {self.failures[0]}"
        )

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join()


def test_partial_read_reopen(real):
    """A Python ``process`` leaves 64 MiB downloads partly read and re-opens
    them (``seek(0)`` after reading past the buffer) at twice the service
    runtime's worker threads: every request completes and ``/healthz``
    keeps answering within a second."""
    n = 100
    inbound, outbound = real.queue("reread-in"), real.queue("reread-out")
    bucket = real.bucket("reread")
    url = real.serve(
        {
            "rereader-py": {"in": inbound, "out": [{"case": True, "queues": [outbound]}]},
            "rereader-py/in": bucket,
        }
    )
    size = 64 << 20
    for key in (0, 1):
        real.put(bucket, key, bytes([key + 1]) * 16 + os.urandom(1 << 20) * (size >> 20))
    port = free_port()
    service = real.start(
        SERVICES / "rereader.py",
        url,
        env={
            "SLINGSHOT_CONCURRENCY": "4",
            "TOKIO_WORKER_THREADS": "2",
            "SLINGSHOT_HTTP_ADDR": f"127.0.0.1:{port}",
            "SLINGSHOT_MAX_ATTEMPTS": "3",
        },
    )
    health = HealthWatch(port, ready_within=60)
    real.publish(inbound, range(n))
    arrived = []
    deadline = time.monotonic() + 300
    try:
        while len({int(body) for body, _ in arrived}) < n:
            assert service.poll() is None, f"the service exited with {service.returncode}"
            health.assert_healthy(f"with {len(arrived)} of {n} requests done")
            assert time.monotonic() < deadline, f"only {len(arrived)} of {n} requests came out within 300 s"
            arrived += real.drain(outbound, n, timeout=0.5)
        time.sleep(1)
        arrived += real.drain(outbound, n, timeout=0.5)
        health.assert_healthy("after the stream")
    finally:
        health.stop()
    ids = [int(body) for body, _ in arrived]
    dead = real.count(f"{inbound}.dead-letter")
    lost = n - len(set(ids))
    duplicates = len(ids) - len(set(ids))
    report(
        f"fault=partial-read-reopen-python broker={real.broker_version} sent={n} delivered={len(set(ids))} lost={lost} "
        f"duplicates={duplicates} dead_lettered={dead}"
    )
    service.send_signal(signal.SIGTERM)
    log = output_of(service)
    assert service.returncode == 0, log
    assert lost == 0 and dead == 0, log
    assert duplicates <= PREFETCH, log
    assert health.polls > 0


HUGE_READ = """
import slingshot
from slingshot.testing import Harness

seen = {}

@slingshot.microservice(name="huge-read", sys_map="file:unused.json")
def process(request: int, read_file: slingshot.ReadFileFn):
    reader = read_file("in", request)
    native = reader.raw._native
    seen["first"] = native.read(1 << 40)
    seen["after"] = native.read(1 << 40)
    return []

Harness(process).object("in", 1, b"a small object").invoke(1)
assert seen == {"first": b"a small object", "after": b""}, seen
print("read", len(seen["first"]), "bytes")
"""


def test_a_read_of_any_size_returns_what_there_is():
    """``read(n)`` with an ``n`` far beyond memory reads the object without
    setting ``n`` bytes aside first (in a child process: an allocation that
    fails aborts it)."""
    done = subprocess.run([sys.executable, "-c", HUGE_READ], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"exit {done.returncode}:\n{done.stdout}{done.stderr}"
    assert "read 14 bytes" in done.stdout
