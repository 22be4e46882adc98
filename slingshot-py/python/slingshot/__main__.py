"""``python -m slingshot SCRIPT [ARGS...]``: runs the one service SCRIPT defines (with ``@slingshot.microservice``) with the command line ARGS (``run`` when empty, or ``invoke``, ``check``, ``topology``…)."""

from __future__ import annotations

import runpy
import sys

from .service import Service


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m slingshot SCRIPT [run|invoke|check|dead-letters|topology ...]", file=sys.stderr)
        return 0 if argv else 2
    script, args = argv[0], argv[1:]
    # Run as a module, not as __main__, so the script's own `if __name__ == "__main__"` stays out of the way.
    namespace = runpy.run_path(script, run_name="__slingshot_service__")
    services = [value for value in namespace.values() if isinstance(value, Service)]
    if len(services) != 1:
        names = ", ".join(s.name for s in services) or "none"
        print(f"error: {script} must define exactly one @slingshot.microservice (found: {names})", file=sys.stderr)
        return 2
    return services[0]._main(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
