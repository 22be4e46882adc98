"""Writes ``stamped <request>`` to object ``request`` of ``out`` and routes the request on (case ``True``); output ``request + 1000`` has case ``False``, which no route names: for the client's tests."""
import slingshot


@slingshot.microservice(name="stamper", sys_map="sys-map.invalid")
def process(request: int, write_file: slingshot.WriteFileFn):
    write_file("out", request).write(f"stamped {request}".encode())
    yield request, True
    yield request + 1000, False


if __name__ == "__main__":
    process.main()
