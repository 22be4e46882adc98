"""The original ``slingshot_microservice`` API on the slingshot runtime: ``Microservice(name, sys_map, process).start()``.

Services written for the original run unchanged: ``process`` is called
positionally as ``process(request, read_file, write_file, connection)`` and
its result (a generator or any iterable of ``(id, case)`` pairs) is routed by
the sys-map. Underneath is the same runtime as Rust services: prefetch and
concurrency, publisher confirms, retries and dead letters, reconnection,
graceful shutdown, the ops endpoint and the command line (``run``,
``invoke``, ``check``, ``dead-letters``, ``topology``; see ``--help``).
"""

from __future__ import annotations

import sys
from typing import Sequence

from slingshot import _native, _runtime

__all__ = ["Microservice"]


class Microservice:
    """A service: ``name`` is its sys-map endpoint, ``config_host`` the
    sys-map's host (``SLINGSHOT_SYS_MAP`` overrides it), ``process`` the
    function that handles one request. A name the sys-map URL cannot carry
    raises ``ValueError`` (letters, digits, ``-``, ``_`` and ``.`` only).
    ``once=True`` (not in the original crate) runs it in once mode: see
    ``slingshot.microservice``."""

    def __init__(self, name: str, config_host: str, process, *, once: bool = False) -> None:
        if not callable(process):
            raise TypeError(f"process must be callable, not {type(process).__name__}")
        if not isinstance(name, str):
            raise TypeError("name must be a str: the service's endpoint in the sys-map")
        if not isinstance(config_host, str) or not config_host:
            raise TypeError("config_host must be a non-empty str: the sys-map's host")
        self.name = name
        self.config_host = config_host
        self.process = process

        def positional(request, read_file, write_file, connection, _context):
            return process(request, read_file, write_file, connection)

        # Refuses a name as `#[slingshot::microservice]` does (ValueError, the macro's words): here, not at start().
        _native.register(name, config_host, positional, _runtime.call, True, once)

    def start(self, argv: Sequence[str] | None = None) -> None:
        """Runs the service until SIGTERM or Ctrl-C (it finishes the requests
        in flight first). The command line is ``sys.argv`` unless ``argv`` is
        given, so ``python service.py check`` checks the wiring. Raises
        ``RuntimeError`` if the service fails."""
        args = list(sys.argv[1:] if argv is None else argv)
        code = _native.main(self.name, args)
        if code != 0:
            raise RuntimeError(f"service {self.name} failed (exit status {code}); its log says why")
