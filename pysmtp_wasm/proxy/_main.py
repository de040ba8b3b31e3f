"""The command: read the configuration, pick the event loop, run one process or a supervisor."""

from __future__ import annotations

import asyncio
import resource
import sys
from collections.abc import Coroutine
from typing import Any

from ._config import Config, ConfigError, parse_args
from ._operations import Metrics, log


def main(argv: list[str] | None = None) -> int:
    """``pysmtp-wasm-proxy [FLAGS]`` (``--help`` lists them; docs/proxy.md explains them)."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        config, worker_fd = parse_args(argv)
    except ConfigError as error:
        print(f"pysmtp-wasm-proxy: {error}", file=sys.stderr)
        return 2
    # Each session holds two file descriptors: take all the kernel lets this process have.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if config.workers > 1 and worker_fd is None:
        from ._workers import Supervisor

        return run(Supervisor(config).run(), config)
    return run(worker(config, worker_fd), config)


def run(coroutine: Coroutine[Any, Any, int], config: Config) -> int:
    if config.loop != "asyncio":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return int(uvloop.run(coroutine))
    return asyncio.run(coroutine)


async def worker(config: Config, ledger_fd: int | None) -> int:
    from ._server import LedgerLike, LocalLedger, Proxy

    ledger: LedgerLike
    if ledger_fd is None:
        ledger = LocalLedger(config)
    else:
        from ._workers import RemoteLedger

        remote = RemoteLedger(ledger_fd)
        await remote.start()
        ledger = remote
    proxy = Proxy(config, ledger, Metrics(multiprocess=ledger_fd is not None))
    try:
        await proxy.serve(reuse_port=ledger_fd is not None)
    except OSError as error:
        log("error", message=f"cannot listen on {config.host}:{config.port}: {error}")
        return 1
    return 0
