"""``--workers N``: a supervisor process and N workers that each listen on the same port
(SO_REUSEPORT: the kernel spreads new connections over them).

The supervisor keeps the session limits for all of them (the ledger): a worker asks it before it
accepts a session and tells it when the session ends, one line each way over a socketpair. When
a worker dies its sessions died with it, so the supervisor forgets them and starts a new worker.
SIGTERM, SIGINT and SIGHUP are passed on to the workers; the supervisor exits when they have.
The metrics of all workers are summed by prometheus-client's multiprocess mode
(``PROMETHEUS_MULTIPROC_DIR``, a directory the supervisor makes and removes).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import shutil
import signal
import socket
import sys
import tempfile

from ._admission import Ledger, Refusal
from ._config import Config
from ._operations import log

# A worker that exits with an error status this soon after it started, while we are not
# stopping, is not restarted: something about the configuration or the port is wrong, and it
# would fail again. (One killed by a signal is restarted whenever it dies.)
CRASH_LOOP_SECONDS = 2.0


class RemoteLedger:
    """A worker's side of the supervisor's ledger."""

    def __init__(self, fd: int) -> None:
        self.sock = socket.socket(fileno=fd)
        self.waiting: collections.deque[asyncio.Future[Refusal | None]] = collections.deque()
        self.writer: asyncio.StreamWriter | None = None

    async def start(self) -> None:
        reader, self.writer = await asyncio.open_connection(sock=self.sock)
        asyncio.get_running_loop().create_task(self._read(reader))

    async def acquire(self, address: str) -> Refusal | None:
        assert self.writer is not None
        future: asyncio.Future[Refusal | None] = asyncio.get_running_loop().create_future()
        self.waiting.append(future)
        self.writer.write(b"+" + address.encode() + b"\n")
        return await future

    def release(self, address: str) -> None:
        if self.writer is not None and not self.writer.is_closing():
            self.writer.write(b"-" + address.encode() + b"\n")

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while line := await reader.readline():
            answer = line.decode().strip()
            future = self.waiting.popleft()
            if answer == "ok":
                future.set_result(None)
            else:
                reason, _, detail = answer.partition(" ")
                future.set_result(Refusal(reason, detail))
        # The supervisor is gone: nobody keeps the limits; stop as on SIGTERM.
        log("supervisor_gone")
        for future in self.waiting:
            if not future.done():
                future.set_result(Refusal("draining"))
        os.kill(os.getpid(), signal.SIGTERM)


class Supervisor:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.ledger = Ledger(config)
        self.workers: dict[int, asyncio.subprocess.Process] = {}
        self.stopping = False
        self.failed = False

    async def run(self) -> int:
        config = self.config
        family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
        # Held (bound, never listening) for the supervisor's life: the port is ours even when
        # --listen says port 0, and it is taken at once if something else has it.
        holder = socket.socket(family, socket.SOCK_STREAM)
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            holder.bind((config.host, config.port))
        except OSError as error:
            log("error", message=f"cannot listen on {config.host}:{config.port}: {error}")
            return 1
        self.port = holder.getsockname()[1]
        self.metrics_dir = tempfile.mkdtemp(prefix="pysmtp-proxy-metrics-")
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        loop.add_signal_handler(signal.SIGHUP, lambda: self.signal_all(signal.SIGHUP))
        log("supervisor", workers=config.workers, port=self.port)
        try:
            watchers = [loop.create_task(self.keep_running(index)) for index in range(config.workers)]
            await asyncio.gather(*watchers)
        finally:
            holder.close()
            shutil.rmtree(self.metrics_dir, ignore_errors=True)
        return 1 if self.failed else 0

    def stop(self) -> None:
        if not self.stopping:
            self.stopping = True
            self.signal_all(signal.SIGTERM)

    def signal_all(self, sig: int) -> None:
        for process in self.workers.values():
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(sig)

    async def keep_running(self, index: int) -> None:
        loop = asyncio.get_running_loop()
        while not self.stopping:
            mine, theirs = socket.socketpair()
            host = f"[{self.config.host}]" if ":" in self.config.host else self.config.host
            argv = [*self.config.argv, "--listen", f"{host}:{self.port}", "--worker-fd", str(theirs.fileno())]
            env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": self.metrics_dir}
            started = loop.time()
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "pysmtp_wasm.proxy", *argv, pass_fds=(theirs.fileno(),), env=env,
            )  # fmt: skip
            theirs.close()
            self.workers[index] = process
            held: collections.Counter[str] = collections.Counter()
            serving = loop.create_task(self.serve_ledger(mine, held))
            code = await process.wait()
            serving.cancel()
            with contextlib.suppress(BaseException):
                await serving
            for address, count in held.items():  # its sessions died with it
                for _ in range(count):
                    self.ledger.release(address)
            with contextlib.suppress(Exception):
                from prometheus_client import multiprocess

                multiprocess.mark_process_dead(process.pid, self.metrics_dir)  # type: ignore[no-untyped-call]
            del self.workers[index]
            if self.stopping:
                return
            log("worker_exited", worker=index, worker_pid=process.pid, code=code)
            if code > 0 and loop.time() - started < CRASH_LOOP_SECONDS:
                log("error", message=f"worker {index} exited at once (status {code}): stopping")
                self.failed = True
                self.stop()
                return
            await asyncio.sleep(0.2)

    async def serve_ledger(self, sock: socket.socket, held: collections.Counter[str]) -> None:
        reader, writer = await asyncio.open_connection(sock=sock)
        try:
            while line := await reader.readline():
                op, address = line[:1], line[1:].decode().strip()
                if op == b"+":
                    refusal = self.ledger.acquire(address)
                    if refusal is None:
                        held[address] += 1
                        writer.write(b"ok\n")
                    else:
                        writer.write(f"{refusal.reason} {refusal.detail}\n".encode())
                elif op == b"-" and held[address] > 0:
                    held[address] -= 1
                    self.ledger.release(address)
        finally:
            writer.close()
