"""Runs a query that can never succeed for requests 1 to 5, records the others: for the wrong-query tests.

1 is a syntax error, 2 reads a missing table, 3 breaks a primary key, 4
executes a prepared statement that does not exist, which PostgreSQL answers
with SQLSTATE 26000 and psycopg2 raises as ``OperationalError`` (on SQLite it
is a syntax error, an ``OperationalError`` as well, as are 1 and 2 there),
and 5 sleeps past the statement timeout the test sets (PostgreSQL cancels it:
``QueryCanceledError``, an ``OperationalError`` too; SQLite has no
``pg_sleep``).
"""
import slingshot
from sqlalchemy import text
from sqlalchemy.engine import Connection

WRONG = {
    1: "SELEC 1",
    2: "SELECT * FROM no_such_table",
    3: "INSERT INTO taken (id) VALUES (0)",
    4: "EXECUTE never_prepared",
    5: "SELECT pg_sleep(5)",
}


@slingshot.microservice(name="bad-query", sys_map="sys-map.invalid")
def process(request: int, connection: Connection):
    if request in WRONG:
        connection.execute(text(WRONG[request]))
    else:
        connection.execute(text("INSERT INTO taken (id) VALUES (:id)"), {"id": request})
        connection.commit()
    yield request, True


if __name__ == "__main__":
    process.main()
