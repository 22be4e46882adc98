"""A subscriber: an ordinary service whose queue the sys-map binds to events; it routes each event's request ID on, for the events test."""
import slingshot


@slingshot.microservice(name="listener", sys_map="sys-map.invalid")
def process(request: int):
    return [(request, True)]


if __name__ == "__main__":
    process.main()
