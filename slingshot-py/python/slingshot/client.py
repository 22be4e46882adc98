"""Calling services like functions: ``slingshot.Client`` sends a request ID to a service with a reply address and returns what became of it, or follows the ID through every stage of the pipeline.

A call returns the service's outcome as a dict, exactly the JSON the service
sent::

    with slingshot.Client("sys-map.example.com") as client:
        outcome = client.call("shout", 7, timeout=10)
        if outcome["status"] == "done":
            print(outcome["routes"], outcome["objects"])
        else:
            print(outcome["failure"]["kind"], outcome["failure"]["error"])

        submission = client.submit("shout", 8)
        pipeline = submission.wait_until_done(timeout=60)
        print([stage["service"] for stage in pipeline["stages"]], pipeline["ended_at"])

A call that gets no outcome raises :class:`CallError` or one of its
subclasses, whose message is the Rust client's (``slingshot::CallError``).

The client runs on the Rust client, ``slingshot::Client``: it talks to
RabbitMQ itself, not through the services of this process, so the sys-map
must name a RabbitMQ. Each client owns a small tokio runtime (one worker
thread, ``slingshot-client``) that keeps its connection and its reply queue
served between calls; a call waits without holding the interpreter, so other
Python threads run meanwhile and may call through the same client at once.
Ctrl-C abandons a call in progress. :meth:`Client.close` (or leaving its
``with`` block, or the client being garbage-collected) stops that runtime
and the connection with it.
"""

from __future__ import annotations

from typing import Literal, Sequence, TypedDict, Union

from . import _native

__all__ = [
    "Client",
    "Submission",
    "CallError",
    "NeverPickedUp",
    "StillRunning",
    "Unfinished",
    "RepliesLost",
    "Outcome",
    "PipelineOutcome",
    "Route",
    "Unrouted",
    "ObjectWritten",
    "FailureReport",
    "Waiting",
]

_ID_MAX = 2**64 - 1

#: A case as the reply's JSON writes it: what ``process`` gave the output.
_Case = Union[bool, int, str]


# ---- what a service answers (the reply's JSON) ------------------------------


class Route(TypedDict):
    """One output sent to one queue."""

    #: The case ``process`` gave the output, as the sys-map writes it.
    case: _Case
    #: The queue it was sent to.
    queue: str
    #: The output ID.
    id: int


class Unrouted(TypedDict):
    """An output whose case has no route: dropped, as routing does."""

    case: _Case
    id: int


class ObjectWritten(TypedDict):
    """An object the request wrote."""

    #: The real bucket name (not the reference ``process`` used).
    bucket: str
    key: str
    #: Its size in bytes.
    size: int


class FailureReport(TypedDict):
    """Why a request was dead-lettered."""

    #: Its :class:`slingshot.FailureKind` (``process-error``, ``storage``, ``database``...).
    kind: str
    #: The error, as the dead-letter headers carry it.
    error: str
    #: Attempts made.
    attempts: int
    #: The dead-letter queue it went to.
    dead_letter_queue: str


class _OutcomeAlways(TypedDict):
    service: str
    queue: str
    #: ``None`` only for a message whose body is not an ID.
    id: Union[int, None]
    status: Literal["done", "failed"]
    #: The attempt this outcome is about (1 for the first).
    attempt: int
    routes: list[Route]
    unrouted: list[Unrouted]
    objects: list[ObjectWritten]


class Outcome(_OutcomeAlways, total=False):
    """What a service did with one request: ``status`` ``"done"`` (its
    objects uploaded, its outputs confirmed, the request acknowledged) or
    ``"failed"`` (dead-lettered; ``failure`` says why). The keys are those of
    the reply's JSON: ``failure`` only when it failed, ``duplicate`` only
    when true (once mode: done before, ``process`` did not run again, and
    its routes are not repeated)."""

    failure: FailureReport
    duplicate: bool


class PipelineOutcome(TypedDict):
    """What became of a submitted request through the whole pipeline."""

    #: Each stage's final outcome, in the order they came (not necessarily
    #: the pipeline's: a stage may answer before the one that fed it).
    stages: list[Outcome]
    #: Outputs sent to queues none of the followed services consumes: where
    #: the branches left the pipeline.
    ended_at: list[Route]


class Waiting(TypedDict):
    """A stage a submitted request was sent to that has not reported."""

    service: str
    queue: str
    id: int
    #: Whether it said it started (else it was never picked up).
    started: bool


# ---- errors -----------------------------------------------------------------


class CallError(Exception):
    """A call or submission got no outcome. Raised as it is when the
    sys-map does not know the service, the broker refused or failed, or the
    client is closed; the subclasses say what else happened. The message is
    the Rust client's."""


class NeverPickedUp(CallError):
    """No service took the request within the timeout. Unless the call
    asked to ``run_late``, the request expires: RabbitMQ drops it from the
    queue, and a service that takes it anyway acknowledges it without
    running it."""

    #: The service called.
    service: str
    #: Its inbound queue.
    queue: str
    #: The request ID.
    id: int
    #: How long the call waited, in seconds.
    timeout: float
    #: Whether the request expires (``False``: it stays queued and runs late).
    expires: bool


class StillRunning(CallError):
    """A service took the request but did not finish it within the timeout.
    It goes on; its outcome, when it comes, is dropped."""

    service: str
    id: int
    #: The attempt that started.
    attempt: int
    #: How long the call waited, in seconds.
    timeout: float


class Unfinished(CallError):
    """A submitted request did not get through the pipeline within the
    timeout of :meth:`Submission.wait_until_done`."""

    #: What the stages that reported did, as :meth:`Submission.wait_until_done` returns it.
    done: PipelineOutcome
    #: The stages not done yet.
    waiting: list[Waiting]
    #: How long it waited, in seconds.
    timeout: float


class RepliesLost(CallError):
    """The client's connection to the broker dropped, and its reply queue
    with it: the outcome will not arrive (the request may still run)."""

    #: The request ID.
    id: int


# ---- the client -------------------------------------------------------------


def _check_id(id: object) -> int:
    if isinstance(id, bool) or not isinstance(id, int):
        raise TypeError(f"the request ID must be an int, not {type(id).__name__}")
    if not 0 <= id <= _ID_MAX:
        raise ValueError(f"the request ID must be in 0..2**64-1, not {id}")
    return id


class Submission:
    """A request sent with :meth:`Client.submit`, on its way through the
    pipeline. Wait for it with :meth:`wait_until_done`; after a timeout,
    waiting again goes on from where the last wait stopped."""

    def __init__(self, native: "_native.Submission") -> None:
        self._native = native

    @property
    def service(self) -> str:
        """The service the request was sent to."""
        return self._native.service

    @property
    def id(self) -> int:
        """The request ID."""
        return self._native.id

    def wait_until_done(self, timeout: float = 60.0) -> PipelineOutcome:
        """Waits until every stage the request reached has reported and none
        has work left for it, and returns ``{"stages": [...], "ended_at":
        [...]}``. A stage the request reaches is expected to report when its
        inbound queue is that of a service the client follows; an output
        sent to any other queue ends its branch (``ended_at``).

        Raises :class:`Unfinished` after ``timeout`` seconds (its ``done``
        and ``waiting`` say how far it got), :class:`RepliesLost` if the
        connection dropped, and :class:`CallError` if the submission was
        waited for before.
        """
        return self._native.wait_until_done(timeout)

    def __repr__(self) -> str:
        return repr(self._native)


class Client:
    """Calls slingshot services through the RabbitMQ of the sys-map at
    ``sys_map`` (``SLINGSHOT_SYS_MAP`` overrides it, as it does a
    service's), with the settings of the ``SLINGSHOT_*`` environment
    variables and the secrets of ``SLINGSHOT_SECRET_*``, as services have
    them.

    ``services`` are the services a submitted request is followed through
    (:meth:`submit`); ``None`` means every service registered in this
    process (with ``@slingshot.microservice``) before the client was made.
    Each must be in the sys-map when :meth:`submit` is used.

    Connects when made: raises :class:`CallError` if the sys-map cannot be
    read, names no RabbitMQ, or its RabbitMQ cannot be reached, and
    ``ValueError`` if a ``SLINGSHOT_*`` variable is malformed. Use it as a
    context manager, or :meth:`close` it, to end its connection.
    """

    def __init__(self, sys_map: str, services: Union[Sequence[str], None] = None) -> None:
        if not isinstance(sys_map, str) or not sys_map.strip():
            raise TypeError(
                "slingshot.Client(sys_map) must be a non-empty str: the sys-map's host "
                "(or file:PATH / http://... ; SLINGSHOT_SYS_MAP overrides it)"
            )
        if isinstance(services, str):
            raise TypeError("slingshot.Client(services=...) is a list of service names, not a str")
        self._native = _native.Client(sys_map, None if services is None else list(services))

    def call(self, service: str, id: int, timeout: float = 30.0, run_late: bool = False) -> Outcome:
        """Sends request ``id`` to ``service`` and returns its outcome, the
        JSON the service answered (see :class:`Outcome`): ``status`` is
        ``"done"`` or ``"failed"`` (dead-lettered, after its retries).

        Waits at most ``timeout`` seconds, then raises
        :class:`NeverPickedUp` (no service took it; it expires and will not
        run, unless ``run_late``) or :class:`StillRunning` (a service is
        processing it). Raises :class:`RepliesLost` if the connection
        dropped, and :class:`CallError` if the sys-map does not know the
        service or the broker failed.
        """
        return self._native.call(service, _check_id(id), timeout, run_late)

    def submit(self, service: str, id: int) -> Submission:
        """Sends request ``id`` to ``service``, asking every stage it
        reaches to report to this client; wait for them with
        :meth:`Submission.wait_until_done`. The request does not expire."""
        return Submission(self._native.submit(service, _check_id(id)))

    def close(self) -> None:
        """Makes no more calls. Calls and submissions in progress end first
        (submissions made earlier can still be waited for); then the
        connection closes. Closing again does nothing."""
        self._native.close()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._native.closed

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return repr(self._native)
