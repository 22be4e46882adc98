"""The peer of ``py-bench-noop`` (services.py) that slingshot-bench measures: the same no-op stage written with FastStream.

``python faststream_noop.py`` consumes the request IDs of queue
``$SLINGSHOT_BENCH_IN`` and publishes each to ``$SLINGSHOT_BENCH_OUT`` on the
RabbitMQ at ``$SLINGSHOT_BENCH_AMQP_URL``, until SIGTERM. The versions are
pinned in requirements-peer.txt.

Configured as a FastStream user who wants slingshot's guarantees would, and
otherwise left at FastStream's defaults:

- The inbound queue is declared durable (``RabbitQueue(durable=True)``), as
  slingshot declares its queues; the bench has declared both already.
- Each output is published persistently (``persist=True``; FastStream's
  default is transient) and mandatory (its default) on a channel with
  publisher confirms (its default), and an output the broker returns
  unrouted raises (``on_return_raises=True``; by default a returned message
  would count as published, and its input would be acked and lost).
- ``@broker.publisher`` publishes the handler's result inside the message's
  processing, awaiting the confirm, and only then does the acknowledgement
  policy ack the input: ack after the publish, never before (not
  ``AckPolicy.ACK_FIRST``). ``AckPolicy.NACK_ON_ERROR`` puts a failed
  message back in the queue, as slingshot retries one, where the default
  (``REJECT_ON_ERROR``) would drop it; on the success path measured here the
  two are the same.
- Prefetch 32 (``Channel(prefetch_count=32)`` on the subscriber; FastStream
  sets no limit by default), the prefetch slingshot's default concurrency
  derives. FastStream 0.7 runs every delivery of a RabbitMQ subscriber as a
  task of its own, so the prefetch is also its concurrency: there is no
  other knob.
- Logging off the way FastStream's documentation says
  ("Application and Access Logging"): ``logger=None`` on the broker and on
  the application. By default the broker logs two lines per message at INFO.
- The body is the ID in decimal ASCII, as slingshot's messages carry it.
  FastStream decodes a body without a content type as JSON (``"42"`` is 42)
  and validates it against the annotation (``request: int``), as slingshot
  validates a decimal u64; the int it returns is encoded as JSON, the same
  bytes, with FastStream's own properties (content type, correlation ID,
  timestamp, app ID) and no headers: FastStream propagates no trace context
  by default, where slingshot's outputs carry ``traceparent`` and its legacy
  trace header.
"""

import asyncio
import os
import sys

from faststream import AckPolicy, FastStream
from faststream.rabbit import Channel, RabbitBroker, RabbitQueue


def setting(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        sys.exit(f"{sys.argv[0]}: {name} is not set (slingshot-bench sets it)")
    return value


def application(url: str, inbound: str, outbound: str, prefetch: int) -> FastStream:
    """The FastStream application of the no-op stage, configured as the module says."""
    broker = RabbitBroker(url, logger=None, default_channel=Channel(on_return_raises=True))

    @broker.subscriber(
        RabbitQueue(inbound, durable=True),
        channel=Channel(prefetch_count=prefetch),
        ack_policy=AckPolicy.NACK_ON_ERROR,
    )
    @broker.publisher(RabbitQueue(outbound, durable=True), persist=True)
    async def noop(request: int) -> int:
        return request

    return FastStream(broker, logger=None)


def main() -> None:
    prefetch = os.environ.get("SLINGSHOT_BENCH_PREFETCH", "32")
    if not prefetch.isdigit() or int(prefetch) < 1:
        sys.exit(f"{sys.argv[0]}: SLINGSHOT_BENCH_PREFETCH={prefetch!r} is not a positive integer")
    app = application(
        setting("SLINGSHOT_BENCH_AMQP_URL"),
        setting("SLINGSHOT_BENCH_IN"),
        setting("SLINGSHOT_BENCH_OUT"),
        int(prefetch),
    )
    # FastStream's run() stops the application on SIGINT and SIGTERM,
    # finishing what is in flight (graceful_timeout, default 15 s).
    asyncio.run(app.run())


if __name__ == "__main__":
    main()
