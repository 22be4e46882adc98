"""Reads object ``request`` of ``in`` as an ``Invoice`` (a Pydantic model, validated before ``process`` runs), writes its ``Total`` to ``out`` (a ``ModelWriter``) and routes the request on (case ``True``): for the typed-object tests."""
from __future__ import annotations

from typing import Annotated

import pydantic

import slingshot


class Line(pydantic.BaseModel):
    sku: str
    amount: float


class Invoice(pydantic.BaseModel):
    customer: str
    lines: list[Line]


class Total(pydantic.BaseModel):
    customer: str
    total: float


@slingshot.microservice(name="invoice-total", sys_map="sys-map.invalid")
def process(
    request: int,
    invoice: Annotated[Invoice, slingshot.Object("in")],
    total: Annotated[slingshot.ModelWriter[Total], slingshot.Object("out")],
):
    print(f"process called for {request}", flush=True)
    total.write(Total(customer=invoice.customer, total=sum(line.amount for line in invoice.lines)))
    yield request, True


if __name__ == "__main__":
    process.main()
