"""Emits ``progress`` for every request and ``invalid-input`` for odd ones, then routes the request on: for the events test."""
import slingshot


@slingshot.microservice(name="announcer", sys_map="sys-map.invalid")
def process(request: int, context: slingshot.RequestContext):
    context.emit("progress", "half")
    if request % 2:
        context.emit("invalid-input", f"odd {request}")
    return [(request, True)]


if __name__ == "__main__":
    process.main()
