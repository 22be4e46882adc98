"""Fixtures for the Python services' tests: the embedded default (a directory object store, SQLite, the in-process broker) and the real RabbitMQ, PostgreSQL and S3 that ``scripts/test.sh`` starts.

A test that needs a real service fails, saying how to get it, when the
service is missing; nothing is skipped. Every test owns its queues, buckets
and PostgreSQL database (unique names), created before its service starts.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

HERE = Path(__file__).parent
SERVICES = HERE / "services"
_counter = itertools.count()


def required(var: str) -> str:
    value = os.environ.get(var)
    if not value:
        pytest.fail(
            f"{var} is not set: the real-service tests need RabbitMQ, PostgreSQL and Garage. "
            "Run them with scripts/test.sh, which starts the services and exports their addresses.",
            pytrace=False,
        )
    return value


def unique(prefix: str) -> str:
    return f"{prefix}-{os.getpid()}-{next(_counter)}-{time.time_ns() % 10**9}"


def free_port() -> int:
    """A loopback TCP port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SysMapServer:
    """The project's sys-map server, ``slingshot-sysmap FILE --listen ADDR``, serving ``endpoints`` on loopback.

    ``GET /{endpoint}`` answers the endpoint's JSON, or a bucket endpoint's
    name as plain text. The endpoints are written to a sys-map file in a
    temporary directory, which the server reads once, at start-up. Its binary
    is ``$SLINGSHOT_SYSMAP_BIN``, which ``scripts/python-tests.sh`` builds
    (``cargo build -p slingshot --bin slingshot-sysmap``) and sets.
    """

    #: How long the server may take to answer after it was started.
    START_TIMEOUT = 30
    #: Asks loopback directly, whatever proxy the environment names.
    _direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def __init__(self, endpoints: dict) -> None:
        binary = os.environ.get("SLINGSHOT_SYSMAP_BIN")
        if not binary:
            pytest.fail(
                "SLINGSHOT_SYSMAP_BIN is not set: the real-service tests serve their sys-map with slingshot-sysmap. "
                "Run them with scripts/python-tests.sh, which builds it and sets the variable "
                "(or build it with `cargo build -p slingshot --bin slingshot-sysmap` and point the variable at it).",
                pytrace=False,
            )
        self.dir = tempfile.TemporaryDirectory(prefix="slingshot-sysmap-")
        self.file = Path(self.dir.name) / "sysmap.json"
        self.file.write_text(json.dumps({"endpoints": endpoints}))
        self.log = Path(self.dir.name) / "slingshot-sysmap.log"
        address = f"127.0.0.1:{free_port()}"
        self.url = f"http://{address}"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [binary, str(self.file), "--listen", address],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            self._wait_until_it_answers()
        except BaseException:
            self.close()
            raise

    def _wait_until_it_answers(self) -> None:
        """Returns once the server answers HTTP (any status: it read its file before it listened)."""
        deadline = time.monotonic() + self.START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                pytest.fail(
                    f"slingshot-sysmap exited with {self.process.returncode} at start-up:\n{self.log.read_text()}",
                    pytrace=False,
                )
            try:
                with self._direct.open(f"{self.url}/", timeout=1):
                    return
            except urllib.error.HTTPError:
                return
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"slingshot-sysmap did not answer on {self.url} within {self.START_TIMEOUT} s:\n"
                    f"{self.log.read_text()}",
                    pytrace=False,
                )
            time.sleep(0.05)

    def close(self) -> None:
        """Stops the server (SIGTERM, then SIGKILL if it lingers) and removes its file."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.dir.cleanup()


def announced_version(connection) -> str:
    """The ``version`` a broker sent in its ``connection.start``, or ``unknown``.

    pika keeps the server's properties on the connection it wraps; it has no
    public accessor for them.
    """
    properties = getattr(getattr(connection, "_impl", None), "server_properties", None) or {}
    version = properties.get("version", properties.get(b"version"))
    if isinstance(version, bytes):
        version = version.decode("utf-8", "replace")
    return version or "unknown"


class Real:
    """One test's slice of the real services: unique queues, buckets and database."""

    def __init__(self) -> None:
        import boto3
        import pika
        import psycopg2

        self.amqp_url = required("SLINGSHOT_TEST_AMQP_URL")
        self.pg_url = required("SLINGSHOT_TEST_PG_URL")
        self.s3_endpoint = required("SLINGSHOT_TEST_S3_ENDPOINT")
        for ref in ("TEST_RABBITMQ", "TEST_POSTGRES", "TEST_S3_ACCESS_KEY", "TEST_S3_SECRET_KEY"):
            required(f"SLINGSHOT_SECRET_{ref}")
        self.s3 = boto3.client(
            "s3",
            endpoint_url=self.s3_endpoint,
            region_name=required("SLINGSHOT_TEST_S3_REGION"),
            aws_access_key_id=required("SLINGSHOT_TEST_S3_ACCESS_KEY"),
            aws_secret_access_key=required("SLINGSHOT_TEST_S3_SECRET_KEY"),
        )
        self.amqp = pika.BlockingConnection(pika.URLParameters(self.amqp_url))
        self.channel = self.amqp.channel()
        self.channel.confirm_delivery()
        #: The RabbitMQ version the broker announced when we connected
        #: (``broker=`` of the fault lines, as the Rust tests print it).
        self.broker_version = announced_version(self.amqp)
        pg = urllib.parse.urlparse(self.pg_url)
        self.pg = pg
        self.database = unique("slingshot_test_py").replace("-", "_")
        admin = psycopg2.connect(self.pg_url)
        admin.autocommit = True
        with admin.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{self.database}"')
        admin.close()
        self.queues: list[str] = []
        self.buckets: list[str] = []
        self.sysmaps: list[SysMapServer] = []
        self.processes: list[subprocess.Popen] = []

    # --- wiring ---------------------------------------------------------

    def queue(self, name: str) -> str:
        """A unique durable queue, declared now (before any service starts)."""
        queue = unique(f"py-{name}")
        self.channel.queue_declare(queue, durable=True)
        self.queues.append(queue)
        return queue

    def bucket(self, name: str) -> str:
        bucket = unique(f"py-{name}").lower()
        self.s3.create_bucket(Bucket=bucket)
        self.buckets.append(bucket)
        return bucket

    def serve(self, endpoints: dict) -> str:
        pg = self.pg
        everything = {
            "rabbitmq": {
                "host": [urllib.parse.urlparse(self.amqp_url).hostname],
                "port": [urllib.parse.urlparse(self.amqp_url).port or 5672],
                "username": [urllib.parse.urlparse(self.amqp_url).username],
                "pass": ["test/rabbitmq"],
            },
            "db": {
                "host": [pg.hostname],
                "port": [pg.port or 5432],
                "username": [pg.username],
                "database": [self.database],
                "pass": ["test/postgres"],
            },
            "object-storage": {
                "host": [self.s3_endpoint],
                "pass:access-key": ["test/s3-access-key"],
                "pass:secret-key": ["test/s3-secret-key"],
            },
            **endpoints,
        }
        sysmap = SysMapServer(everything)
        self.sysmaps.append(sysmap)
        return sysmap.url

    def sql(self, statement: str, params=()) -> list:
        import psycopg2

        connection = psycopg2.connect(self.pg_url.rsplit("/", 1)[0] + "/" + self.database)
        connection.autocommit = True
        try:
            with connection.cursor() as cursor:
                cursor.execute(statement, params)
                return cursor.fetchall() if cursor.description else []
        finally:
            connection.close()

    # --- traffic --------------------------------------------------------

    def publish(self, queue: str, ids) -> None:
        import pika

        for id in ids:
            self.channel.basic_publish(
                "", queue, str(id).encode(), pika.BasicProperties(delivery_mode=2), mandatory=True
            )

    def drain(self, queue: str, want: int, timeout: float = 60) -> list:
        """Messages of ``queue`` (body, headers) until ``want`` arrived or ``timeout``."""
        got = []
        deadline = time.monotonic() + timeout
        while len(got) < want and time.monotonic() < deadline:
            method, properties, body = self.channel.basic_get(queue, auto_ack=True)
            if method is None:
                self.amqp.sleep(0.05)
                continue
            got.append((body, properties.headers or {}))
        return got

    def count(self, queue: str) -> int:
        return self.channel.queue_declare(queue, passive=True).method.message_count

    def put(self, bucket: str, key, body: bytes) -> None:
        self.s3.put_object(Bucket=bucket, Key=str(key), Body=body)

    def get(self, bucket: str, key) -> bytes:
        return self.s3.get_object(Bucket=bucket, Key=str(key))["Body"].read()

    # --- services -------------------------------------------------------

    def start(self, script: Path, sys_map: str, *args: str, env: dict | None = None) -> subprocess.Popen:
        """Starts ``python script [args]`` with ``SLINGSHOT_SYS_MAP`` pointing at this test's sys-map."""
        environment = {
            **os.environ,
            "SLINGSHOT_SYS_MAP": sys_map,
            "SLINGSHOT_S3_SCHEME": "http",
            "SLINGSHOT_HTTP_ADDR": "127.0.0.1:0",
            **(env or {}),
        }
        process = subprocess.Popen(
            [sys.executable, str(script), *args],
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        # Read as it is written: a service whose log fills the pipe (64 KiB)
        # would block on its next log line, heartbeats and all.
        process.slingshot_lines = []
        process.slingshot_reader = threading.Thread(
            target=lambda: process.slingshot_lines.extend(process.stdout), daemon=True
        )
        process.slingshot_reader.start()
        self.processes.append(process)
        return process

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                process.wait()
        for sysmap in self.sysmaps:
            sysmap.close()
        for queue in self.queues:
            for name in (queue, f"{queue}.dead-letter"):
                try:
                    self.channel.queue_delete(name)
                except Exception:  # noqa: BLE001 - best-effort clean-up of a unique name
                    self.channel = self.amqp.channel()
        self.amqp.close()
        for bucket in self.buckets:
            listed = self.s3.list_objects_v2(Bucket=bucket).get("Contents", [])
            for item in listed:
                self.s3.delete_object(Bucket=bucket, Key=item["Key"])
            self.s3.delete_bucket(Bucket=bucket)
        import psycopg2

        admin = psycopg2.connect(self.pg_url)
        admin.autocommit = True
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def real():
    world = Real()
    try:
        yield world
    finally:
        world.close()


def output_of(process: subprocess.Popen, timeout: float = 30) -> str:
    """Waits for ``process`` (started by :meth:`Real.start`) and returns what it printed."""
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        process.slingshot_reader.join(timeout=10)
        out = "".join(process.slingshot_lines)
        raise AssertionError(f"the service did not stop within {timeout} s; it printed:\n{out}")
    process.slingshot_reader.join(timeout=10)
    return "".join(process.slingshot_lines)
