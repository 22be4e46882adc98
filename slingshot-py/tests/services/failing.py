"""Fails in the ways the dead-letter test checks: 1 raises ValueError, 2 reads a missing object, others succeed."""
import slingshot


@slingshot.microservice(name="failing", sys_map="sys-map.invalid")
def process(request: int, read_file: slingshot.ReadFileFn):
    if request == 1:
        raise ValueError(f"bad request {request}")
    if request == 2:
        read_file("in", 999_999).read()
    return [(request, True)]


if __name__ == "__main__":
    process.main()
