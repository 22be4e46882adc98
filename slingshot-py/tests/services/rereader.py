"""Leaves large downloads partly read: reads 16 bytes of object ``request % 2``, skips 1 MiB, seeks back to the start (which re-opens the object while the old download is open) and reads again, then opens the other object and reads 16 bytes of it."""
import slingshot


@slingshot.microservice(name="rereader-py", sys_map="sys-map.invalid")
def process(request: int, read_file: slingshot.ReadFileFn):
    first = read_file("in", request % 2)
    head = first.read(16)
    first.seek(1 << 20)
    first.seek(0)
    again = first.read(16)
    if head != again or len(head) != 16:
        raise RuntimeError(f"object {request % 2} read {head!r} then {again!r}")
    other = read_file("in", (request + 1) % 2)
    if len(other.read(16)) != 16:
        raise RuntimeError("the other object is shorter than 16 bytes")
    return [(request, True)]


if __name__ == "__main__":
    process.main()
