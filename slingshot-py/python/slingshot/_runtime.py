"""How the slingshot runtime calls a Python ``process``: the call, its result checked, its exceptions classified, and the SQLAlchemy engine behind ``connection``.

The Rust side (``slingshot._native``) calls :func:`call` on one of the
runtime's blocking threads for each delivery; tokio's async threads never
enter Python. Everything here runs with the interpreter attached; the file
handles and the database driver release it while they wait.
"""

from __future__ import annotations

import enum
import inspect
import os
import sys
import threading
import traceback
import types
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:
    import asyncio

from . import _native, objects
from .files import ObjectReader, WriteHandle

_ID_MAX = 2**64 - 1
#: Frames in here are slingshot's, not the service's.
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


class _StrValued(str, enum.Enum):
    """An enum whose members are their values, as ``str()`` and f-strings show them."""

    __str__ = str.__str__
    __format__ = str.__format__


#: What failed, as the dead-letter headers name it (``x-slingshot-failure``):
#: ``FailureKind.PROCESS_ERROR == "process-error"``, ``FailureKind.STORAGE``,
#: ``FailureKind.DATABASE``… The members are the runtime's own list.
FailureKind = _StrValued(
    "FailureKind",
    {kind.upper().replace("-", "_"): kind for kind in _native.FAILURE_KINDS},
    module=__name__,
)


def call(process, request: int, files: "_native.Files", connection, context: "_native.Request") -> "list | _native.Failed":
    """Runs ``process`` for one request.

    ``context`` holds the request's facts and its ``emit``. Answers the
    outputs, ``[(id, _native.Case), ...]``, or a :class:`_native.Failed`
    saying why it failed; never raises.
    """
    def read_file(key: str, id: int) -> ObjectReader:
        _check_file_args("read_file", key, id)
        return ObjectReader(files.open_read(key, id), f"{key}/{id}")

    def write_file(key: str, id: int) -> WriteHandle:
        _check_file_args("write_file", key, id)
        return WriteHandle(files.open_write(key, id), f"{key}/{id}")

    # For slingshot.read_model and write_model, and typed parameters; an
    # async process's coroutine, scheduled from here, sees it too.
    token = _files_var.set(files)
    try:
        result = process(request, read_file, write_file, connection, context)
        # What plain functions and generators return needs no awaiting (and
        # the checks below are not free).
        if type(result) not in _PLAIN:
            if inspect.isasyncgen(result):
                result = _run_async(_collect(result))
            elif inspect.isawaitable(result):
                result = _run_async(result)
        return _outputs(result)
    except BaseException as exc:  # noqa: BLE001 - every failure is reported; stopping is the runtime's job
        return classify(exc)
    finally:
        _files_var.reset(token)


#: Results that are iterated as they are: neither awaited nor checked for being iterable.
_PLAIN = frozenset((list, tuple, types.GeneratorType))
_files_var = objects._files


def _check_file_args(what: str, key: Any, id: Any) -> None:
    if not isinstance(key, str):
        raise TypeError(f"{what}(key, id): key must be a str bucket reference such as 'in', not {type(key).__name__}")
    if isinstance(id, bool) or not isinstance(id, int) or not 0 <= id <= _ID_MAX:
        raise TypeError(f"{what}(key, id): id must be an int request ID in 0..2**64-1, not {id!r}")


def _outputs(result: Any) -> list:
    """Checks what ``process`` returned or yielded: ``(id, case)`` pairs,
    each case converted by the runtime (``_native.Case``)."""
    if result is None:
        return []
    if type(result) not in _PLAIN and (isinstance(result, (str, bytes)) or not isinstance(result, Iterable)):
        raise TypeError(
            f"process returned {type(result).__name__}: return or yield (id, case) pairs, "
            "e.g. `yield (request, True)` or `return [(request, 'ok')]`"
        )
    outputs = []
    for item in result:
        if not isinstance(item, tuple) or len(item) != 2:
            raise TypeError(f"process produced {item!r}: each output must be a tuple (id, case)")
        id, case = item
        if isinstance(id, bool) or not isinstance(id, int) or not 0 <= id <= _ID_MAX:
            raise TypeError(f"process produced {item!r}: the id must be an int in 0..2**64-1")
        try:
            outputs.append((id, _native.Case(case)))
        except TypeError as e:
            raise TypeError(f"process produced {item!r}: {e}") from None
    return outputs


async def _collect(agen) -> list:
    return [item async for item in agen]


_loop: "asyncio.AbstractEventLoop | None" = None
_loop_lock = threading.Lock()


def _run_async(awaitable) -> Any:
    """Runs a coroutine of ``async def process`` on the service's one event
    loop thread and waits for it (this thread releases the interpreter while
    it waits)."""
    import asyncio  # only services with async code pay for it (some 8 MiB)

    global _loop
    with _loop_lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="slingshot-asyncio", daemon=True).start()
            _loop = loop
        loop = _loop
    return asyncio.run_coroutine_threadsafe(_awaited(awaitable), loop).result()


async def _awaited(awaitable):
    return await awaitable


def classify(exc: BaseException) -> "_native.Failed":
    """What an exception of ``process`` means: its kind, its :func:`summary`,
    whether it is transient, and its traceback.

    Invalid input (:class:`slingshot.InvalidInput`: a typed object that is
    not valid, dead-lettered at once), storage and database failures keep
    their kind anywhere in the exception's chain (``raise ... from``, or raised while handling one). An outside
    system that failed (the store, when the ``StorageError`` says so; a
    database connection that was lost or could not be had) is transient:
    retried until it is back, without using an attempt. Anything a query
    itself did wrong (a syntax error, a missing table, a violated
    constraint, SQLite's ``OperationalError``s of that kind) fails the
    request: retried, then dead-lettered.
    """
    kind, transient = FailureKind.PROCESS_ERROR, False
    seen = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        found = _kind_of(e)
        if found is not None:
            kind, transient = found
            break
        e = e.__cause__ or (None if e.__suppress_context__ else e.__context__)
    return _native.Failed(kind, summary(exc), transient, "".join(traceback.format_exception(exc)))


#: SQLSTATEs (and classes, two characters) of PostgreSQL errors that mean
#: the server cannot serve the connection, rather than that the query is
#: wrong: connection exceptions, the server shutting down or restarting,
#: too many connections.
_PG_UNAVAILABLE = ("08", "57P01", "57P02", "57P03", "53300")


def _kind_of(e: BaseException) -> tuple[FailureKind, bool] | None:
    if isinstance(e, _native.InvalidInput):
        # Dead-lettered at once: the same input can never succeed.
        return FailureKind.INVALID_INPUT, False
    if isinstance(e, _native.ObjectNotFound):
        return FailureKind.STORAGE, False
    if isinstance(e, _native.StorageError):
        # Transient only when it says so: the runtime's own say; one raised
        # by ``process`` without it is a failure of the request.
        return FailureKind.STORAGE, getattr(e, "transient", False) is True
    sa_exc = sys.modules.get("sqlalchemy.exc")
    if sa_exc is not None:
        # The pool could not hand out a connection in time, or one was lost.
        if isinstance(e, (sa_exc.DisconnectionError, sa_exc.TimeoutError)):
            return FailureKind.DATABASE, True
        if isinstance(e, sa_exc.DBAPIError):
            # SQLAlchemy's dialect marks a DBAPI error that means the
            # connection is gone (its ``is_disconnect``) by invalidating it.
            return FailureKind.DATABASE, bool(e.connection_invalidated) or _server_unavailable(e.orig)
    return None


def _server_unavailable(orig: BaseException | None) -> bool:
    """Whether a driver's error says the server cannot be reached or serve
    the connection: by its SQLSTATE (psycopg2 and psycopg set ``pgcode`` and
    ``sqlstate``); SQLite is a local file and has no such errors."""
    code = getattr(orig, "pgcode", None) or getattr(orig, "sqlstate", None)
    return isinstance(code, str) and code.startswith(_PG_UNAVAILABLE)


def summary(exc: BaseException) -> str:
    """``module.Type: message (at file:line in function)``: what the
    dead-letter headers carry."""
    cls = type(exc)
    name = cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    text = f"{name}: {exc}" if str(exc) else name
    frames = traceback.extract_tb(exc.__traceback__)
    # Where the user's code raised (or called what raised): not slingshot's own frames.
    own = [f for f in frames if not f.filename.startswith(_PACKAGE_DIR)]
    if isinstance(exc, _native.InvalidInput) and not own:
        # A typed parameter, read before process ran: the message says where.
        frames = []
    if own or frames:
        last = (own or frames)[-1]
        text += f" (at {last.filename}:{last.lineno} in {last.name})"
    return text


# ---- the database -----------------------------------------------------------


def create_engine(kind: str, location: str, size: int, checkout_timeout: float = 10.0):
    """The service's SQLAlchemy engine, pooled to its concurrency; a request
    waits at most ``checkout_timeout`` seconds for a connection.

    ``kind`` is ``"postgres"`` (``location`` a libpq URL, which carries the
    connection's timeouts) or ``"sqlite"`` (``location`` a file path).
    """
    import sqlalchemy

    if kind == "sqlite":
        directory = os.path.dirname(location)
        if directory:
            os.makedirs(directory, exist_ok=True)
        engine = sqlalchemy.create_engine(
            sqlalchemy.engine.URL.create("sqlite", database=location),
            pool_size=max(size, 1),
            max_overflow=0,
            pool_pre_ping=True,
            pool_timeout=checkout_timeout,
            connect_args={"timeout": 10, "check_same_thread": False},
        )

        @sqlalchemy.event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection, _record):
            # The Rust services' SQLite pragmas (slingshot::db::SQLITE_PRAGMAS):
            # wait instead of "database is locked", WAL, foreign keys enforced.
            cursor = dbapi_connection.cursor()
            cursor.executescript(_native.SQLITE_PRAGMAS)
            cursor.close()

        return engine
    scheme, sep, rest = location.partition("://")
    if not sep or scheme not in ("postgres", "postgresql"):
        raise ValueError(f"not a PostgreSQL URL: {scheme}://…")
    return sqlalchemy.create_engine(
        "postgresql+psycopg2://" + rest,
        pool_size=max(size, 1),
        max_overflow=0,
        pool_pre_ping=True,
        pool_timeout=checkout_timeout,
    )


def connect(engine):
    """A connection checked out of the engine for one request."""
    return engine.connect()


def release(connection) -> None:
    """Rolls back what the request did not commit and returns the connection to the pool."""
    try:
        if connection.in_transaction():
            _as_owner(connection, connection.rollback)
    except Exception:  # noqa: BLE001 - a broken connection is discarded, not reused
        connection.invalidate()
    finally:
        connection.close()


# ---- once mode: the inbox and outbox statements, in process's transaction ----
#
# The runtime (slingshot::db::once) builds the statements; these run them on
# the request's SQLAlchemy connection. In once mode slingshot commits: the
# inbox row, what process wrote and the outbox rows go together, so a
# commit or rollback by process itself is refused (a savepoint,
# connection.begin_nested(), is fine).

_ONCE_OWNS = "slingshot_once_owns_transaction"


def _refuse(connection) -> None:
    if connection.info.get(_ONCE_OWNS):
        return
    raise RuntimeError(
        "in once mode slingshot commits process's transaction, with the inbox and outbox rows: "
        "do not call connection.commit() or connection.rollback() in process "
        "(a savepoint, connection.begin_nested(), is fine)"
    )


def _guard(connection) -> None:
    import sqlalchemy.event

    if not sqlalchemy.event.contains(connection, "commit", _refuse):
        sqlalchemy.event.listen(connection, "commit", _refuse)
        sqlalchemy.event.listen(connection, "rollback", _refuse)


def once_dialect(connection) -> str:
    return connection.dialect.name


def once_begin(connection) -> bool:
    _guard(connection)
    if connection.in_transaction():
        once_rollback(connection)
    connection.begin()
    return True


def _as_owner(connection, end) -> bool:
    connection.info[_ONCE_OWNS] = True
    try:
        end()
    finally:
        connection.info[_ONCE_OWNS] = False
    return True


def once_commit(connection) -> bool:
    return _as_owner(connection, connection.commit)


def once_rollback(connection) -> bool:
    return _as_owner(connection, connection.rollback)


def once_execute(connection, sql: str, params: tuple) -> int:
    # DB-API: -1 when the statement changes no rows it counts (DDL, SELECT).
    return max(connection.exec_driver_sql(sql, params).rowcount, 0)


def once_query(connection, sql: str, params: tuple) -> list:
    return [tuple(row) for row in connection.exec_driver_sql(sql, params)]
