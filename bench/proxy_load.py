"""The load client of the bench group ``proxy``: plain ``websockets`` clients, sharing no code with
the proxies it measures (it imports nothing of pysmtp_wasm). One process holds many sessions;
bench/proxy_bench.py starts several (a process may open at most 20,000 files here).

    python bench/proxy_load.py idle URL COUNT            open COUNT sessions, hold them until stdin closes
    python bench/proxy_load.py send URL COUNT BYTES      COUNT sessions at once, each sends BYTES and waits
    python bench/proxy_load.py rtt URL COUNT PORT        COUNT round trips of 64 bytes through URL, then
                                                         the same straight to 127.0.0.1:PORT (no proxy)

The target is bench/sink.py's ``raw`` listener: it reads "N\\r\\n", then N bytes, and answers
"OK\\r\\n". Every mode prints JSON lines on stdout: {"ready": n, "errors": e} once its sessions
are open (``send`` then waits for a line on stdin to start), and {"done": ...} at the end.
Sessions offer the ``binary`` subprotocol, as the page does (lighttpd's mod_wstunnel needs it).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

CHUNK = 64 * 1024
# Connections opened at once by one process: a burst of thousands of handshakes would only
# measure the accept queue.
OPENING = 200


def say(**fields: Any) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


async def open_one(url: str) -> ClientConnection:
    return await connect(
        url, subprotocols=["binary"], compression=None, max_size=None, ping_interval=None, open_timeout=60,
        close_timeout=5,
    )  # fmt: skip


async def open_many(url: str, count: int) -> tuple[list[ClientConnection], int]:
    gate = asyncio.Semaphore(OPENING)

    async def one() -> ClientConnection | None:
        async with gate:
            try:
                return await open_one(url)
            except Exception:
                return None

    opened = await asyncio.gather(*(one() for _ in range(count)))
    conns = [conn for conn in opened if conn is not None]
    return conns, count - len(conns)


async def stdin_line() -> str:
    return await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


async def transfer(conn: ClientConnection, size: int) -> None:
    """size bytes to the raw sink, in 64 KiB frames, and its OK."""
    await conn.send(f"{size}\r\n".encode())
    left = size
    chunk = b"x" * CHUNK
    while left > 0:
        part = chunk if left >= CHUNK else chunk[:left]
        await conn.send(part)
        left -= len(part)
    reply = b""
    while not reply.endswith(b"OK\r\n"):
        reply += await conn.recv()


async def idle(url: str, count: int) -> None:
    conns, errors = await open_many(url, count)
    say(ready=len(conns), errors=errors)
    await stdin_line()
    still = sum(1 for conn in conns if conn.state.name == "OPEN")
    await asyncio.gather(*(conn.close() for conn in conns), return_exceptions=True)
    say(done=True, still_open=still)


async def send(url: str, count: int, size: int) -> None:
    say(ready=0, errors=0)
    await stdin_line()
    started = time.time()
    ends: list[float] = []

    async def one() -> bool:
        try:
            conn = await open_one(url)
            try:
                await transfer(conn, size)
            finally:
                await conn.close()
        except Exception:
            return False
        ends.append(time.time())
        return True

    results = await asyncio.gather(*(one() for _ in range(count)))
    say(done=True, started=started, ended=max(ends, default=time.time()), ok=sum(results),
        errors=len(results) - sum(results), bytes=size * sum(results))  # fmt: skip


async def rtt(url: str, count: int, port: int) -> None:
    conn = await open_one(url)
    proxied = []
    for _ in range(count):
        t0 = time.perf_counter()
        await conn.send(b"64\r\n" + b"x" * 64)
        reply = b""
        while not reply.endswith(b"OK\r\n"):
            reply += await conn.recv()
        proxied.append(time.perf_counter() - t0)
    await conn.close()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    direct = []
    for _ in range(count):
        t0 = time.perf_counter()
        writer.write(b"64\r\n" + b"x" * 64)
        await reader.readuntil(b"OK\r\n")
        direct.append(time.perf_counter() - t0)
    writer.close()
    say(done=True, proxied_us=statistics.median(proxied) * 1e6, direct_us=statistics.median(direct) * 1e6)


def main() -> None:
    mode, url, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if mode == "idle":
        asyncio.run(idle(url, count))
    elif mode == "send":
        asyncio.run(send(url, count, int(sys.argv[4])))
    elif mode == "rtt":
        asyncio.run(rtt(url, count, int(sys.argv[4])))
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
