"""Reads object ``request`` of ``in``, writes it upper-cased to ``out`` and routes the request on (case ``"copied"``): the second stage of the client's pipeline test."""
import slingshot


@slingshot.microservice(name="copier", sys_map="sys-map.invalid")
def process(request: int, read_file: slingshot.ReadFileFn, write_file: slingshot.WriteFileFn):
    text = read_file("in", request).read()
    write_file("out", request).write(text.upper())
    return [(request, "copied")]


if __name__ == "__main__":
    process.main()
