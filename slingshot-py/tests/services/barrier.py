"""Each request waits until BARRIER requests are in `process` at once: it can only succeed if the runtime really runs that many Python calls concurrently (ASYNC=1: as coroutines on the event loop)."""
import asyncio
import os
import threading

import slingshot

PARTIES = int(os.environ.get("BARRIER", "4"))

if os.environ.get("ASYNC") == "1":
    _barrier = None

    @slingshot.microservice(name="barrier", sys_map="sys-map.invalid")
    async def process(request: int):
        global _barrier
        if _barrier is None:
            _barrier = asyncio.Barrier(PARTIES)
        await asyncio.wait_for(_barrier.wait(), timeout=30)
        return [(request, True)]

else:
    _barrier = threading.Barrier(PARTIES, timeout=30)

    @slingshot.microservice(name="barrier", sys_map="sys-map.invalid")
    def process(request: int):
        _barrier.wait()
        return [(request, True)]


if __name__ == "__main__":
    process.main()
