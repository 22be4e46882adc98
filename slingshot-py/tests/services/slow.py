"""Takes SLOW_SECONDS per request, so that a test can stop it with requests in flight."""
import os
import time

import slingshot


@slingshot.microservice(name="slow", sys_map="sys-map.invalid")
def process(request: int):
    time.sleep(float(os.environ.get("SLOW_SECONDS", "0.3")))
    return [(request, "done")]


if __name__ == "__main__":
    process.main()
