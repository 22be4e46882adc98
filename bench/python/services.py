"""The Python services slingshot-bench measures beside their Rust twins (bench/src/services.rs): ``python services.py NAME [run | invoke ID...]``."""

import sys

import slingshot


@slingshot.microservice(name="py-bench-noop", sys_map="file:unused.json")
def noop(request: int):
    return [(request, True)]


@slingshot.microservice(name="py-bench-file", sys_map="file:unused.json")
def file(request: int, read_file: slingshot.ReadFileFn, write_file: slingshot.WriteFileFn):
    data = read_file("in", request).read()
    write_file("out", request).write(data)
    return [(request, True)]


@slingshot.microservice(name="py-bench-copy", sys_map="file:unused.json")
def copy(request: int, read_file: slingshot.ReadFileFn, write_file: slingshot.WriteFileFn):
    reader, writer = read_file("in", request), write_file("out", request)
    while chunk := reader.read(64 * 1024):
        writer.write(chunk)
    return [(request, True)]


if __name__ == "__main__":
    services = {s.name: s for s in (noop, file, copy)}
    if len(sys.argv) < 2 or sys.argv[1] not in services:
        sys.exit(f"usage: {sys.argv[0]} {{{','.join(services)}}} [run | invoke ID...]")
    services[sys.argv[1]].main(sys.argv[2:])
