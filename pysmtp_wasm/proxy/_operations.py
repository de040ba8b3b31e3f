"""Operations: the JSON log (one line per session, and a few about the process), the
Prometheus metrics and the health answer, all served on the proxy's own port."""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import UTC, datetime
from typing import Any

from ._admission import REASONS

# Write each line with one write(2): lines from several workers on one stderr never interleave
# (a pipe's writes up to PIPE_BUF, 4096 bytes, are atomic; a log line is far shorter).
_STDERR = sys.stderr.fileno() if hasattr(sys.stderr, "fileno") else 2


def log(event: str, **fields: Any) -> None:
    """One JSON line on stderr: ``time`` (UTC, ISO 8601), ``event``, then ``fields``."""
    line = {"time": datetime.now(UTC).isoformat(timespec="milliseconds"), "event": event, "pid": os.getpid()}
    line.update(fields)
    data = (json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
    try:
        os.write(_STDERR, data)
    except OSError:
        pass  # a closed stderr must not stop the relay


# Every way a session ends, as the log's "end" and the metric's label.
ENDS = (
    "client_closed",  # the page closed the WebSocket (or its TCP connection went away)
    "target_closed",  # the target closed its TCP side
    "idle_timeout",
    "drained",  # still open when the drain time was up
    "target_unreachable",
    "target_timeout",
    "frame_too_big",
    "text_frame",
    "client_error",  # the page broke the WebSocket protocol
    "target_error",  # the TCP connection to the target failed mid-session
    "refused",
)


class Metrics:
    """The counters behind ``GET /metrics``. With several workers (``multiprocess_dir``),
    prometheus-client's multiprocess mode sums them over all the workers' files, so any worker
    answers for the whole proxy."""

    def __init__(self, multiprocess: bool) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge
        from prometheus_client.process_collector import ProcessCollector

        self.multiprocess = multiprocess
        registry = None if multiprocess else CollectorRegistry()
        self.registry = registry
        if registry is not None:
            ProcessCollector(registry=registry)
        self.open = Gauge(
            "pysmtp_proxy_sessions_open", "Sessions open now", registry=registry, multiprocess_mode="livesum"
        )
        self.draining = Gauge(
            "pysmtp_proxy_draining", "1 while the proxy drains (SIGTERM)", registry=registry,
            multiprocess_mode="livemax",
        )  # fmt: skip
        self.opened = Counter("pysmtp_proxy_sessions_opened", "Sessions opened", registry=registry)
        self.refused = Counter(
            "pysmtp_proxy_sessions_refused", "Sessions refused, by reason", ["reason"], registry=registry
        )
        self.ended = Counter(
            "pysmtp_proxy_sessions_ended", "Sessions ended, by how", ["end"], registry=registry
        )
        self.bytes = Counter(
            "pysmtp_proxy_bytes", "Bytes relayed, by direction", ["direction"], registry=registry
        )
        self.to_target = self.bytes.labels("to_target")
        self.to_client = self.bytes.labels("to_client")
        for reason in REASONS:
            if REASONS[reason][0] not in (502, 504, 408):  # those end sessions; they are not refusals
                self.refused.labels(reason)
        for end in ENDS:
            self.ended.labels(end)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        if self.registry is not None:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST


def now() -> float:
    """Wall-clock seconds, for tickets (their expiry is a Unix time)."""
    return time.time()
