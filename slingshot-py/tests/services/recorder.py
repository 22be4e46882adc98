"""Records each request in PostgreSQL (committed), then passes it on: for the lost-connection test."""
import time

import slingshot
from sqlalchemy import text
from sqlalchemy.engine import Connection


@slingshot.microservice(name="recorder", sys_map="sys-map.invalid")
def process(request: int, connection: Connection):
    connection.execute(text("INSERT INTO seen (id) VALUES (:id) ON CONFLICT DO NOTHING"), {"id": request})
    connection.commit()
    time.sleep(0.02)
    yield request, True


if __name__ == "__main__":
    process.main()
