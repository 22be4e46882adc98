"""Typed objects with Pydantic v2: a ``process`` parameter ``Annotated[Model, slingshot.Object("in")]`` is read and validated before ``process`` runs, ``Annotated[slingshot.ModelWriter[Model], slingshot.Object("out")]`` writes models, ``read_model``/``write_model`` do it inside, an invalid document is dead-lettered at once (kind ``invalid-input``) naming the field's path, and the models' JSON Schemas are registered with the service. On the embedded default (the harness, the command line on a file sys-map) and on the real RabbitMQ and S3."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from typing import Annotated

import pydantic
import pytest

import slingshot
from slingshot.testing import Harness, ProcessFailed

from conftest import SERVICES, output_of, unique


class Line(pydantic.BaseModel):
    sku: str
    amount: float


class Invoice(pydantic.BaseModel):
    customer: str
    lines: list[Line]


class Total(pydantic.BaseModel):
    customer: str
    total: float


GOOD = {"customer": "ACME", "lines": [{"sku": "a", "amount": 1.5}, {"sku": "b", "amount": 2}, {"sku": "c", "amount": 4}]}
#: A wrong type in a nested field: ``lines[2].amount``.
BAD_FIELD = {**GOOD, "lines": [*GOOD["lines"][:2], {"sku": "c", "amount": "lots"}]}
NOT_JSON = b'{"customer": "ACME", "lines": [}'


def service(**kwargs):
    return slingshot.microservice(name=unique("py-typed"), sys_map="file:unused.json", **kwargs)


def totaller(calls: list):
    @service()
    def process(request: int, invoice: Annotated[Invoice, slingshot.Object("in")]):
        calls.append(request)
        slingshot.write_model("out", request, Total(customer=invoice.customer, total=sum(l.amount for l in invoice.lines)))
        yield request, True

    return process


# ---- the embedded default: the harness ---------------------------------------


def test_a_valid_object_is_passed_as_its_model_and_the_output_written():
    calls = []
    process = totaller(calls)
    harness = Harness(process).route(True, ["totals"]).object("in", 7, json.dumps(GOOD))
    run = harness.invoke(7)
    assert calls == [7]
    assert run.routes == [("totals", 7)]
    assert json.loads(harness.read("out", 7)) == {"customer": "ACME", "total": 7.5}
    assert process._plan == {"request": "request", "invoice": "object"}


def test_a_wrong_type_in_a_nested_field_is_invalid_input_naming_its_path_and_process_never_runs():
    calls = []
    harness = Harness(totaller(calls)).object("in", 8, json.dumps(BAD_FIELD))
    with pytest.raises(ProcessFailed) as failed:
        harness.invoke(8)
    assert calls == []
    assert failed.value.kind is slingshot.FailureKind.INVALID_INPUT and failed.value.transient is False
    message = failed.value.message
    assert message.startswith("slingshot.InvalidInput: test-in/8 is not a valid Invoice: "), message
    assert "Input should be a valid number" in message, message
    assert message.endswith("(at lines[2].amount)"), message
    assert harness.read("out", 8) is None


def test_an_object_that_is_not_json_is_invalid_input_and_process_never_runs():
    calls = []
    harness = Harness(totaller(calls)).object("in", 9, NOT_JSON)
    with pytest.raises(ProcessFailed) as failed:
        harness.invoke(9)
    assert calls == []
    assert failed.value.kind == "invalid-input" and failed.value.transient is False
    assert "test-in/9 is not a valid Invoice: Invalid JSON" in failed.value.message
    assert failed.value.message.endswith("(at .)"), failed.value.message


def test_every_error_is_counted_and_the_first_named():
    bad = {"customer": 5, "lines": [{"sku": "a"}, {"amount": "x"}]}
    harness = Harness(totaller([])).object("in", 1, json.dumps(bad))
    with pytest.raises(ProcessFailed) as failed:
        harness.invoke(1)
    message = failed.value.message
    assert "Input should be a valid string; 3 more errors at lines[0].amount, lines[1].sku, lines[1].amount" in message
    assert message.endswith("(at customer)"), message


def test_a_missing_typed_object_is_a_storage_failure_as_with_read_file():
    with pytest.raises(ProcessFailed) as failed:
        Harness(totaller([])).invoke(404)
    assert failed.value.kind == "storage" and not failed.value.transient
    assert "ObjectNotFound" in failed.value.message


def test_read_model_and_write_model_in_the_body():
    seen = {}

    @service()
    def process(request: int):
        invoice = slingshot.read_model(Invoice, "in", request)
        seen["customer"] = invoice.customer
        seen["written"] = slingshot.write_model("out", request + 1, Total(customer=invoice.customer, total=1))
        try:
            slingshot.read_model(Invoice, "in", request + 1)
        except slingshot.InvalidInput as e:
            seen["error"] = e
        raise seen["error"]

    harness = Harness(process).object("in", 3, json.dumps(GOOD)).object("in", 4, json.dumps(BAD_FIELD))
    with pytest.raises(ProcessFailed) as failed:
        harness.invoke(3)
    error = seen["error"]
    assert isinstance(error, ValueError)
    assert (error.bucket, error.key, error.type_name, error.path) == ("test-in", "4", "Invoice", "lines[2].amount")
    assert isinstance(error.__cause__, pydantic.ValidationError)
    assert seen["customer"] == "ACME" and seen["written"] == len(b'{"customer":"ACME","total":1.0}')
    # Raised in process's body: the failure says where, after the path.
    assert failed.value.kind == "invalid-input"
    assert "test-in/4 is not a valid Invoice" in failed.value.message
    assert "(at lines[2].amount) (at " in failed.value.message and "test_typed.py" in failed.value.message
    # Nothing is uploaded when process fails.
    assert harness.read("out", 4) is None


def test_read_model_writes_what_write_model_wrote_when_process_succeeds():
    @service()
    def process(request: int):
        invoice = slingshot.read_model(Invoice, "in", request)
        slingshot.write_model("out", request, Total(customer=invoice.customer, total=len(invoice.lines)))
        return [(request, "ok")]

    harness = Harness(process).object("in", 5, json.dumps(GOOD))
    harness.invoke(5)
    assert Total.model_validate_json(harness.read("out", 5)) == Total(customer="ACME", total=3)


def test_a_typed_parameter_and_read_model_work_in_async_process():
    @service()
    async def process(request: int, invoice: Annotated[Invoice, slingshot.Object("in")]):
        await asyncio.sleep(0)
        again = slingshot.read_model(Invoice, "in", request)
        return [(request, again == invoice)]

    assert Harness(process).object("in", 2, json.dumps(GOOD)).invoke(2).outputs == [(2, True)]


def test_process_may_raise_invalid_input_itself_to_dead_letter_at_once():
    @service()
    def process(request: int):
        raise slingshot.InvalidInput("request 6 names no customer")

    with pytest.raises(ProcessFailed) as failed:
        Harness(process).invoke(6)
    assert failed.value.kind == "invalid-input"
    assert failed.value.message.startswith("slingshot.InvalidInput: request 6 names no customer (at ")


def test_a_model_writer_parameter_writes_its_model_and_only_its_model():
    kept = {}

    @service()
    def process(request: int, out: Annotated[slingshot.ModelWriter[Total], slingshot.Object("out")]):
        kept["out"] = out
        out.write(Total(customer="ACME", total=1))
        out.write(Total(customer="other", total=2), id=request + 1)
        with pytest.raises(TypeError, match="ModelWriter\\[Total\\] for 'out' writes Total, not Invoice"):
            out.write(Invoice(customer="x", lines=[]))
        return [(request, True)]

    harness = Harness(process)
    run = harness.invoke(5)
    assert json.loads(harness.read("out", 5)) == {"customer": "ACME", "total": 1.0}
    assert json.loads(harness.read("out", 6)) == {"customer": "other", "total": 2.0}
    assert sorted(key for _, key, _ in run.written) == ["5", "6"]
    with pytest.raises(ValueError, match="valid only inside `process`"):
        kept["out"].write(Total(customer="late", total=0))
    assert process.object_schemas() == [
        {
            "reference": "out",
            "direction": "write",
            "type": "Total",
            "schema": Total.model_json_schema(mode="serialization"),
        }
    ]


def test_read_model_and_write_model_work_only_inside_process():
    with pytest.raises(RuntimeError, match="only while process runs"):
        slingshot.read_model(Invoice, "in", 1)
    with pytest.raises(RuntimeError, match="only while process runs"):
        slingshot.write_model("out", 1, Total(customer="x", total=1))
    with pytest.raises(TypeError, match="not a Pydantic v2 model"):
        slingshot.read_model(dict, "in", 1)


def test_the_models_json_schema_is_registered_with_the_service():
    process = totaller([])
    assert process.object_schemas() == [
        {"reference": "in", "direction": "read", "type": "Invoice", "schema": Invoice.model_json_schema()}
    ]


@pytest.mark.parametrize(
    "annotation, message",
    [
        (Annotated[dict, slingshot.Object("in")], "annotates dict, which is not a Pydantic v2 model"),
        (Annotated[Invoice, slingshot.Object("in"), slingshot.Object("x")], "has 2 slingshot.Object marks"),
        (Annotated[slingshot.ModelWriter, slingshot.Object("out")], "ModelWriter without its model"),
        (Annotated[slingshot.ModelWriter[dict], slingshot.Object("out")], "annotates dict, which is not a Pydantic"),
    ],
)
def test_a_wrong_typed_parameter_is_refused_when_the_decorator_runs(annotation, message):
    def process(request: int, invoice: annotation):  # type: ignore[valid-type]
        return []

    process.__annotations__["invoice"] = annotation
    with pytest.raises(TypeError, match=message):
        service()(process)


def test_two_parameters_may_not_read_the_same_object():
    def process(
        request: int,
        a: Annotated[Invoice, slingshot.Object("in")],
        b: Annotated[Total, slingshot.Object("in")],
    ):
        return []

    with pytest.raises(TypeError, match="parameters 'a' and 'b' both read object 'in'"):
        service()(process)

    def reads_and_writes(
        request: int,
        a: Annotated[Invoice, slingshot.Object("in")],
        b: Annotated[slingshot.ModelWriter[Invoice], slingshot.Object("in")],
    ):
        return []

    assert [o["direction"] for o in service()(reads_and_writes).object_schemas()] == ["read", "write"]
    with pytest.raises(TypeError, match="non-empty str bucket reference"):
        slingshot.Object("")


def test_slingshot_imports_without_pydantic_and_says_what_to_install():
    script = """
import sys
sys.modules["pydantic"] = None  # as if it were not installed
from typing import Annotated
import slingshot
try:
    @slingshot.microservice(name="no-pydantic", sys_map="file:unused.json")
    def process(request: int, invoice: Annotated[dict, slingshot.Object("in")]):
        return []
except ImportError as e:
    print(e)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "pip install 'pydantic>=2'" in result.stdout, result.stdout


# ---- the command line on a file sys-map (the embedded default) ---------------


def embedded_sysmap(tmp_path, objects) -> str:
    sysmap = tmp_path / "sysmap.json"
    sysmap.write_text(
        json.dumps(
            {
                "backends": {"broker": "memory", "objects": {"dir": str(objects)}},
                "endpoints": {
                    "invoice-total": {"in": "invoice-in-q", "out": [{"case": True, "queues": ["done"]}]},
                    "invoice-total/in": "invoices",
                    "invoice-total/out": "totals",
                },
            }
        )
    )
    return f"file:{sysmap}"


def test_invoke_on_the_embedded_default_processes_a_valid_object_and_refuses_an_invalid_one(tmp_path):
    objects = tmp_path / "objects"
    (objects / "invoices").mkdir(parents=True)
    (objects / "invoices" / "7").write_text(json.dumps(GOOD))
    (objects / "invoices" / "8").write_text(json.dumps(BAD_FIELD))
    env = {**os.environ, "SLINGSHOT_SYS_MAP": embedded_sysmap(tmp_path, objects)}

    def invoke(id: int) -> subprocess.CompletedProcess:
        command = [sys.executable, str(SERVICES / "invoice_total.py"), "invoke", str(id)]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)

    good = invoke(7)
    assert good.returncode == 0, good.stdout + good.stderr
    assert json.loads((objects / "totals" / "7").read_text()) == {"customer": "ACME", "total": 7.5}
    bad = invoke(8)
    said = bad.stdout + bad.stderr
    assert bad.returncode != 0, said
    assert "process called" not in said, said
    assert "invalid-input" in said and "invoices/8 is not a valid Invoice" in said and "lines[2].amount" in said, said
    assert not (objects / "totals" / "8").exists()


def test_the_schema_command_prints_the_models_json_schema(tmp_path):
    """``NAME schema`` (and ``NAME schema in``): the registered schemas, as the runtime prints them."""
    sys.path.insert(0, str(SERVICES))
    try:
        import invoice_total
    finally:
        sys.path.remove(str(SERVICES))
    env = {**os.environ, "SLINGSHOT_SYS_MAP": embedded_sysmap(tmp_path, tmp_path / "objects")}
    command = [sys.executable, str(SERVICES / "invoice_total.py"), "schema"]
    every = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert every.returncode == 0, every.stdout + every.stderr
    assert json.loads(every.stdout) == invoice_total.process.object_schemas() == [
        {"reference": "in", "direction": "read", "type": "Invoice", "schema": invoice_total.Invoice.model_json_schema()},
        {
            "reference": "out",
            "direction": "write",
            "type": "Total",
            "schema": invoice_total.Total.model_json_schema(mode="serialization"),
        },
    ]
    one = subprocess.run([*command, "in"], env=env, capture_output=True, text=True, timeout=60)
    assert one.returncode == 0, one.stdout + one.stderr
    assert json.loads(one.stdout) == invoice_total.Invoice.model_json_schema()

    # The AsyncAPI document carries the same schemas as components.
    command = [sys.executable, str(SERVICES / "invoice_total.py"), "asyncapi"]
    asyncapi = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert asyncapi.returncode == 0, asyncapi.stdout + asyncapi.stderr
    document = json.loads(asyncapi.stdout)
    objects = document["operations"]["invoice-total.receive"]["x-slingshot-objects"]
    assert [(o["reference"], o["direction"], o["type"]) for o in objects] == [
        ("in", "read", "Invoice"),
        ("out", "write", "Total"),
    ]
    schemas = document["components"]["schemas"]
    assert objects[0]["schema"] == {"$ref": "#/components/schemas/object.Invoice"}
    assert set(schemas["object.Invoice"]["properties"]) == set(invoice_total.Invoice.model_fields)


# ---- the real RabbitMQ and S3 ------------------------------------------------


def test_on_real_services_an_invalid_object_is_dead_lettered_at_once_and_the_valid_ones_go_through(real):
    inbound, outbound = real.queue("typed-in"), real.queue("typed-out")
    bucket_in, bucket_out = real.bucket("invoices"), real.bucket("totals")
    url = real.serve(
        {
            "invoice-total": {"in": inbound, "out": [{"case": True, "queues": [outbound]}]},
            "invoice-total/in": bucket_in,
            "invoice-total/out": bucket_out,
        }
    )
    for id in (1, 2, 3):
        real.put(bucket_in, id, json.dumps(GOOD).encode())
    real.put(bucket_in, 4, json.dumps(BAD_FIELD).encode())
    real.put(bucket_in, 5, NOT_JSON)
    service = real.start(
        SERVICES / "invoice_total.py",
        url,
        env={"SLINGSHOT_MAX_ATTEMPTS": "3", "SLINGSHOT_RETRY_BASE_MS": "10", "SLINGSHOT_RETRY_MAX_MS": "20"},
    )
    real.publish(inbound, [1])
    ok = real.drain(outbound, 1, timeout=60)  # the service has declared its queues
    real.publish(inbound, [4, 5, 2, 3])
    dead = real.drain(f"{inbound}.dead-letter", 2, timeout=60)
    ok += real.drain(outbound, 2, timeout=60)
    running = service.poll() is None
    service.send_signal(signal.SIGTERM)
    log = output_of(service)

    assert running, log
    assert sorted(int(body) for body, _ in ok) == [1, 2, 3], log
    assert sorted(int(body) for body, _ in dead) == [4, 5], log
    for body, headers in dead:
        # At once: the first attempt, no retry.
        assert headers["x-slingshot-error-kind"] == "invalid-input", (body, headers)
        assert headers["x-slingshot-attempt"] == 1, (body, headers)
    errors = {int(body): headers["x-slingshot-error"] for body, headers in dead}
    errors = {id: e.decode() if isinstance(e, bytes) else str(e) for id, e in errors.items()}
    assert f"{bucket_in}/4 is not a valid Invoice: Input should be a valid number" in errors[4], errors[4]
    assert errors[4].endswith("(at lines[2].amount)"), errors[4]
    assert f"{bucket_in}/5 is not a valid Invoice: Invalid JSON" in errors[5], errors[5]
    for id in (4, 5):
        assert f"process called for {id}\n" not in log, log
    assert json.loads(real.get(bucket_out, 2)) == {"customer": "ACME", "total": 7.5}
    listed = real.s3.list_objects_v2(Bucket=bucket_out).get("Contents", [])
    assert sorted(item["Key"] for item in listed) == ["1", "2", "3"]
    assert service.returncode == 0, log
