# A service written for the original slingshot-microservice, in the form its
# README shows: the original's imports, a generator `process` called
# positionally, and `Microservice(...).start()` at module level. It must run
# on slingshot unchanged; the tests point SLINGSHOT_SYS_MAP at their sys-map.
from typing import Generator

from sqlalchemy.engine.base import Connection

from slingshot_microservice import Microservice
from slingshot_microservice.typing import ReadFileFn, WriteFileFn


def process(
    request: int,
    read_file: ReadFileFn,
    write_file: WriteFileFn,
    connection: Connection,
) -> Generator[tuple[int, bool | int | str], None, None]:
    reader = read_file("in", request)
    input_data = reader.read().decode()
    writer = write_file("out", request)
    writer.write(f"Hello {input_data}".encode())
    yield (request, True)


microservice = Microservice("simple-py-microservice", "sys-map.slingshot.cv", process)
microservice.start()
