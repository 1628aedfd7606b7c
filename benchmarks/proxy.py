"""A loopback TCP proxy that delays every chunk of bytes by ``delay_ms`` in each direction.

Stands in for a warehouse across a network (1 ms each way = 2 ms round trip). Order is kept:
each direction has one queue; a chunk is forwarded ``delay_ms`` after it was read.

    python -m benchmarks.proxy --target 127.0.0.1:5432 --delay-ms 1 [--port 0]

prints ``PORT <n>`` once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import sys


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()

    async def sender() -> None:
        while True:
            due, data = await queue.get()
            if data is None:
                break
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
        try:
            writer.write_eof()
        except (OSError, RuntimeError):
            pass

    task = asyncio.create_task(sender())
    try:
        while True:
            data = await reader.read(1 << 16)
            if not data:
                break
            queue.put_nowait((loop.time() + delay, data))
    except (ConnectionError, OSError):
        pass
    queue.put_nowait((0.0, None))
    try:
        await task
    except (ConnectionError, OSError):
        pass


async def _serve(host: str, port: int, target_host: str, target_port: int, delay: float) -> None:
    async def handle(cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        try:
            sr, sw = await asyncio.open_connection(target_host, target_port)
        except OSError:
            cw.close()
            return
        await asyncio.gather(_pump(cr, sw, delay), _pump(sr, cw, delay), return_exceptions=True)
        for w in (cw, sw):
            w.close()

    server = await asyncio.start_server(handle, host, port)
    print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--target", default="127.0.0.1:5432")
    p.add_argument("--delay-ms", type=float, default=1.0)
    a = p.parse_args(argv)
    th, _, tp = a.target.rpartition(":")
    try:
        asyncio.run(_serve(a.host, a.port, th, int(tp), a.delay_ms / 1000.0))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
