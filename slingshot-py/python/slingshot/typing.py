"""Type names for ``process`` functions, as the original ``slingshot_microservice.typing`` has them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, BinaryIO, Callable, Iterable, Protocol, TypeAlias, Union

if TYPE_CHECKING:
    from sqlalchemy.engine.base import Connection

__all__ = ["CaseVariable", "ReadFileFn", "WriteFileFn", "WriteHandle", "ProcessFn"]

#: What routes an output: a bool, an int or a str, compared with the sys-map's ``out[].case``.
CaseVariable: TypeAlias = Union[bool, int, str]


class WriteHandle(Protocol):
    """What ``write_file`` returns."""

    def write(self, data: bytes | str, /) -> int: ...

    def flush(self) -> None: ...


#: ``read_file(key, id)``: a reader of object ``id`` in the bucket behind reference ``key``.
ReadFileFn: TypeAlias = Callable[[str, int], BinaryIO]
#: ``write_file(key, id)``: a staged file for object ``id`` in the bucket behind ``key``.
WriteFileFn: TypeAlias = Callable[[str, int], WriteHandle]
if TYPE_CHECKING:
    #: The original's ``process``: called positionally, returns or yields ``(id, case)`` pairs.
    ProcessFn: TypeAlias = Callable[[int, ReadFileFn, WriteFileFn, Connection], Iterable[tuple[int, CaseVariable]]]


def __getattr__(name: str) -> Any:
    # ``ProcessFn`` names SQLAlchemy's ``Connection``: SQLAlchemy (some 20 MiB
    # of a service's memory) is imported when the alias is first asked for,
    # not by every service that imports slingshot.
    if name == "ProcessFn":
        from sqlalchemy.engine.base import Connection

        alias = Callable[[int, ReadFileFn, WriteFileFn, Connection], Iterable[tuple[int, CaseVariable]]]
        globals()["ProcessFn"] = alias
        return alias
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
