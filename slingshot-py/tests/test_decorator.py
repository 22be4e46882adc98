"""``@slingshot.microservice`` catches misuse when it runs, with a ``TypeError`` that says how to fix it: the Python counterpart of the Rust macro's compile-fail cases."""

from __future__ import annotations

from typing import Iterator

import pytest
from sqlalchemy.engine import Connection

import slingshot
import slingshot_microservice
from slingshot.testing import Harness

from conftest import unique


def decorate(function, **kwargs):
    options = {"name": unique("deco"), "sys_map": "sys-map.example.com", **kwargs}
    return slingshot.microservice(**options)(function)


def test_every_parameter_is_matched_by_annotation_or_name():
    def process(
        ctx: slingshot.RequestContext,
        db: Connection,
        write: slingshot.WriteFileFn,
        read_file,
        request,
    ) -> Iterator[tuple[int, bool]]:
        yield request, True

    service = decorate(process)
    assert service._plan == {
        "ctx": "context",
        "db": "connection",
        "write": "write_file",
        "read_file": "read_file",
        "request": "request",
    }
    assert service(5, None, None, None, 5) is not None  # still callable as the plain function
    assert service.__name__ == "process"


def test_a_parameter_with_a_default_is_left_to_it():
    def process(request: int, retries: int = 3):
        return []

    with pytest.raises(TypeError, match="parameters 'request' and 'retries' both ask for the request"):
        decorate(process)

    def process2(request: int, label="x"):
        return []

    assert decorate(process2)._plan == {"request": "request"}


@pytest.mark.parametrize(
    "source, message",
    [
        ("def process(read_file): return []", "process must take the request ID: add a parameter `request: int`"),
        ("def process(request, payload): return []", "slingshot cannot fill parameter 'payload': name it request"),
        ("def process(request, *args): return []", "`*args` cannot be filled"),
        ("def process(request, **kw): return []", "`**kw` cannot be filled"),
        ("def process(request, /): return []", "positional-only"),
        ("def process(self, request): return []", "process is a method"),
        ("def process(request, read_file, reader: ReadFileFn): return []", "both ask for the read_file"),
        ("def process(request, connection: ReadFileFn): return []", "named like the connection but annotated as the read_file"),
        ("def process(request) -> int: return 1", "annotated to return int, but it must return or yield (id, case) pairs"),
        ("def process(request) -> dict[int, bool]: return {}", "must return or yield (id, case) pairs"),
    ],
)
def test_a_signature_slingshot_cannot_call_is_refused_with_the_fix(source, message):
    namespace = {"ReadFileFn": slingshot.ReadFileFn}
    exec(source, namespace)
    with pytest.raises(TypeError) as refused:
        decorate(namespace["process"])
    assert message in str(refused.value)
    assert "@slingshot.microservice on process" in str(refused.value)


def test_the_decorator_without_arguments_says_how_to_call_it():
    with pytest.raises(TypeError, match=r'@slingshot.microservice\(name="my-service", sys_map='):

        @slingshot.microservice
        def process(request: int):
            return []


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"name": 3}, "name=...) must be a str"),
        ({"sys_map": None}, "sys_map=...) must be a non-empty str"),
    ],
)
def test_bad_arguments_are_refused(kwargs, message):
    with pytest.raises(TypeError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        decorate(lambda request: [], **kwargs)


def test_what_is_not_a_function_is_refused():
    with pytest.raises(TypeError, match="decorates a function, not int"):
        decorate(3)
    with pytest.raises(TypeError, match="decorates a function, not type"):
        decorate(type("NotAFunction", (), {}))
    with pytest.raises(TypeError, match="not a static or class method"):
        decorate(staticmethod(lambda request: []))


def test_decorating_twice_is_refused():
    service = decorate(lambda request: [])
    with pytest.raises(TypeError, match="already a service"):
        decorate(service)


def test_the_original_constructor_refuses_what_it_refused():
    with pytest.raises(TypeError, match="process must be callable"):
        slingshot_microservice.Microservice("svc", "sys-map.example.com", "not callable")
    with pytest.raises(TypeError, match="name must be a str"):
        slingshot_microservice.Microservice(None, "sys-map.example.com", lambda *a: [])


#: Names `#[slingshot::microservice]` refuses at compile time, and its words (crate slingshot-names).
REFUSED_NAMES = [
    (
        "thumb nailer",
        "invalid service name \"thumb nailer\": use letters, digits, '-', '_' and '.' only "
        "(it is a path segment of the sys-map URL)",
    ),
    (
        "images/thumbnailer",
        "invalid service name \"images/thumbnailer\": use letters, digits, '-', '_' and '.' only "
        "(it is a path segment of the sys-map URL)",
    ),
    ("", 'invalid service name "": it cannot be empty'),
]


@pytest.mark.parametrize("name, message", REFUSED_NAMES)
def test_the_decorator_refuses_a_name_the_macro_refuses_in_its_words(name, message):
    with pytest.raises(ValueError) as refused:

        @slingshot.microservice(name=name, sys_map="sys-map.example.com")
        def process(request: int):
            return []

    assert str(refused.value) == message
    # Nothing was registered under it, to fail later at start().
    with pytest.raises(RuntimeError):
        Harness(name)


@pytest.mark.parametrize("name, message", REFUSED_NAMES)
def test_the_original_constructor_refuses_a_name_the_macro_refuses_in_its_words(name, message):
    with pytest.raises(ValueError) as refused:
        slingshot_microservice.Microservice(name, "sys-map.example.com", lambda *a: [])
    assert str(refused.value) == message
    with pytest.raises(RuntimeError):
        Harness(name)


def test_the_original_typing_module_has_its_names():
    from slingshot_microservice import typing as legacy

    for name in ("CaseVariable", "ReadFileFn", "WriteFileFn", "WriteHandle", "ProcessFn"):
        assert hasattr(legacy, name), name


def test_once_needs_a_connection_and_a_bool():
    import slingshot

    with pytest.raises(TypeError, match="once=True needs a database"):

        @slingshot.microservice(name="once-no-db", sys_map="file:unused.json", once=True)
        def process(request: int):
            return []

    with pytest.raises(TypeError, match="must be True or False"):
        slingshot.microservice(name="once-yes", sys_map="file:unused.json", once="yes")
