"""Once mode: a write that is not idempotent (n = n + 1) per request, on the connection slingshot commits with the inbox and outbox. Request 13 fails once, after its write; with ONCE_COMMITS=1, process commits itself, which once mode refuses."""
import os

import slingshot
from sqlalchemy import text
from sqlalchemy.engine import Connection


@slingshot.microservice(name="once-counter", sys_map="sys-map.invalid", once=True)
def process(request: int, connection: Connection, context: slingshot.RequestContext):
    connection.execute(text("UPDATE py_counters SET n = n + 1 WHERE id = :id"), {"id": request})
    if os.environ.get("ONCE_COMMITS") == "1":
        connection.commit()
    if request == 13 and context.attempt == 1:
        raise RuntimeError("fails once, after its write")
    yield request, True


if __name__ == "__main__":
    process.main()
