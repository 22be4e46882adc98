"""How a Python service's failures are classified: a wrong query or a ``StorageError`` that does not say it is transient fails the request (retried, then dead-lettered), on SQLite and on PostgreSQL; a lost connection is an outage."""

from __future__ import annotations

import json
import signal
import sqlite3
import urllib.parse

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Connection

import slingshot
from slingshot.testing import Harness, ProcessFailed

from conftest import SERVICES, output_of, unique


def service(**kwargs):
    return slingshot.microservice(name=unique("py-fail"), sys_map="file:unused.json", **kwargs)


# ---- the embedded default: the harness on SQLite ---------------------------


@pytest.mark.parametrize(
    "sql, says",
    [
        ("SELECT * FROM no_such_table", "no such table"),
        ("SELEC 1", "syntax error"),
        ("INSERT INTO taken (id) VALUES (0)", "UNIQUE constraint failed"),
    ],
)
def test_a_wrong_query_on_sqlite_fails_the_request(sql, says):
    @service()
    def process(request: int, connection: Connection):
        connection.execute(text(sql))
        return [(request, True)]

    harness = Harness(process)
    db = sqlite3.connect(harness.database_path)
    db.execute("CREATE TABLE taken (id INTEGER PRIMARY KEY)")
    db.execute("INSERT INTO taken (id) VALUES (0)")
    db.commit()
    db.close()
    with pytest.raises(ProcessFailed) as failed:
        harness.invoke(1)
    # SQLite's "no such table" and syntax errors are OperationalErrors to
    # SQLAlchemy, but nothing about them will change by waiting.
    assert failed.value.kind == "database", failed.value
    assert failed.value.transient is False, failed.value
    assert says in failed.value.message, failed.value.message


def test_a_storage_error_is_transient_only_when_it_says_so():
    @service()
    def plain(request: int):
        raise slingshot.StorageError("the archive refused this object")

    @service()
    def marked(request: int):
        error = slingshot.StorageError("the archive is down")
        error.transient = True
        raise error

    with pytest.raises(ProcessFailed) as failed:
        Harness(plain).invoke(1)
    assert (failed.value.kind, failed.value.transient) == ("storage", False)
    with pytest.raises(ProcessFailed) as failed:
        Harness(marked).invoke(1)
    assert (failed.value.kind, failed.value.transient) == ("storage", True)


def test_a_lost_postgres_connection_is_an_outage_and_its_wrong_query_is_not():
    """The classification itself, on psycopg2's real exceptions."""
    import sqlalchemy

    from slingshot._runtime import classify
    from conftest import required

    url = required("SLINGSHOT_TEST_PG_URL")
    engine = sqlalchemy.create_engine("postgresql+psycopg2://" + url.split("://", 1)[1], poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as connection:
            for sql in ("SELEC 1", "SELECT * FROM nowhere", "EXECUTE never_prepared"):
                with pytest.raises(sqlalchemy.exc.DBAPIError) as failed:
                    connection.execute(text(sql))
                classified = classify(failed.value)
                assert (classified.kind, classified.transient) == ("database", False), (sql, failed.value)
                connection.rollback()
            pid = connection.execute(text("SELECT pg_backend_pid()")).scalar()
            with engine.connect() as admin:
                admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            with pytest.raises(sqlalchemy.exc.DBAPIError) as failed:
                connection.execute(text("SELECT 1"))
            classified = classify(failed.value)
            assert (classified.kind, classified.transient) == ("database", True), failed.value
    finally:
        engine.dispose()


# ---- a service process: dead-lettered, and still running --------------------


def header_text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def run_bad_query(real, sys_map: str, inbound: str, outbound: str, sleep_says: str) -> None:
    """Runs ``bad_query.py``: requests 1 to 5 must be dead-lettered as
    database failures after two attempts (5's error saying ``sleep_says``),
    and the service must keep processing the good ones sent after them."""
    service = real.start(
        SERVICES / "bad_query.py",
        sys_map,
        env={
            "SLINGSHOT_MAX_ATTEMPTS": "2",
            "SLINGSHOT_RETRY_BASE_MS": "10",
            "SLINGSHOT_RETRY_MAX_MS": "20",
            "SLINGSHOT_DB_STATEMENT_TIMEOUT_SECS": "1",
        },
    )
    # One good request first: once it is through, the service has declared
    # its queues, the dead-letter queue among them.
    real.publish(inbound, [10])
    ok = real.drain(outbound, 1, timeout=60)
    real.publish(inbound, [1, 2, 3, 4, 5])
    dead = real.drain(f"{inbound}.dead-letter", 5, timeout=60)
    # Were any of them an outage, it would be retried for ever instead.
    assert sorted(int(body) for body, _ in dead) == [1, 2, 3, 4, 5], f"dead-lettered: {dead}"
    real.publish(inbound, range(11, 20))
    ok += real.drain(outbound, 9, timeout=60)
    running = service.poll() is None
    service.send_signal(signal.SIGTERM)
    log = output_of(service)

    assert running, log
    assert sorted(int(body) for body, _ in ok) == list(range(10, 20)), log
    for body, headers in dead:
        assert headers["x-slingshot-error-kind"] == "database", (body, headers)
        assert headers["x-slingshot-attempt"] == 2, (body, headers)
        assert headers["x-slingshot-outages"] == 0, (body, headers)
    by_id = {int(body): header_text(headers["x-slingshot-error"]) for body, headers in dead}
    assert "no_such_table" in by_id[2], by_id[2]
    assert "never_prepared" in by_id[4], by_id[4]
    assert sleep_says in by_id[5], by_id[5]
    assert service.returncode == 0, log


def test_a_wrong_query_on_postgres_is_dead_lettered_and_the_service_keeps_running(real):
    real.sql("CREATE TABLE taken (id BIGINT PRIMARY KEY)")
    real.sql("INSERT INTO taken (id) VALUES (0)")
    inbound, outbound = real.queue("badq-in"), real.queue("badq-out")
    url = real.serve({"bad-query": {"in": inbound, "out": [{"case": True, "queues": [outbound]}]}})
    run_bad_query(real, url, inbound, outbound, "canceling statement due to statement timeout")
    assert real.sql("SELECT count(*) FROM taken")[0][0] == 11


def test_a_wrong_query_on_sqlite_is_dead_lettered_and_the_service_keeps_running(real, tmp_path):
    # RabbitMQ, so the test can read the dead letters; SQLite, the embedded
    # default's database.
    database = tmp_path / "db.sqlite"
    db = sqlite3.connect(database)
    db.execute("CREATE TABLE taken (id INTEGER PRIMARY KEY)")
    db.execute("INSERT INTO taken (id) VALUES (0)")
    db.commit()
    inbound, outbound = real.queue("badq-in"), real.queue("badq-out")
    amqp = urllib.parse.urlparse(real.amqp_url)
    sysmap = tmp_path / "sysmap.json"
    sysmap.write_text(
        json.dumps(
            {
                "backends": {
                    "broker": "rabbitmq",
                    "objects": {"dir": str(tmp_path / "objects")},
                    "database": {"sqlite": str(database)},
                },
                "endpoints": {
                    "rabbitmq": {
                        "host": [amqp.hostname],
                        "port": [amqp.port or 5672],
                        "username": [amqp.username],
                        "pass": ["test/rabbitmq"],
                    },
                    "bad-query": {"in": inbound, "out": [{"case": True, "queues": [outbound]}]},
                },
            }
        )
    )
    run_bad_query(real, f"file:{sysmap}", inbound, outbound, "no such function: pg_sleep")
    assert db.execute("SELECT count(*) FROM taken").fetchone()[0] == 11
    db.close()
