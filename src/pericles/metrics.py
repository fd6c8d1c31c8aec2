"""Prometheus metrics: what the service and the API count, in a registry of their own.

Each server builds one `Metrics` and hands it down; there is no process-wide registry, so
two apps in one process (as in tests) never share counters.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from pericles.model import Payload, Status

# Payloads run from milliseconds to hours.
_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)
_DELAY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1, 5, 30, 300)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.created = Counter("pericles_payloads_created", "Payloads accepted", registry=r)
        self.ended = Counter(
            "pericles_payloads_ended", "Payloads that ended, by status", ["status"], registry=r
        )
        self.running = Gauge("pericles_payloads_running", "Payloads running now", registry=r)
        self.pending = Gauge("pericles_payloads_pending", "Payloads waiting to start", registry=r)
        self.start_delay = Histogram(
            "pericles_payload_start_delay_seconds",
            "From acceptance to the process running",
            buckets=_DELAY_BUCKETS,
            registry=r,
        )
        self.duration = Histogram(
            "pericles_payload_duration_seconds",
            "From the process starting to its end",
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.spawn_failures = Counter(
            "pericles_spawn_failures", "Payloads whose process could not start", registry=r
        )
        self.output_bytes = Counter(
            "pericles_output_bytes", "Bytes payloads wrote, by stream", ["stream"], registry=r
        )
        self.http_requests = Counter(
            "pericles_http_requests",
            "HTTP requests answered",
            ["route", "method", "code"],
            registry=r,
        )
        self.http_duration = Histogram(
            "pericles_http_request_duration_seconds",
            "Time to answer an HTTP request (to the end of the body)",
            ["route"],
            registry=r,
        )
        self.callbacks = Counter(
            "pericles_callbacks",
            "Callback attempts, by outcome: delivered, retry, failed (final answer or refused "
            "address), gave_up (out of retries)",
            ["outcome"],
            registry=r,
        )
        self.callback_duration = Histogram(
            "pericles_callback_duration_seconds",
            "Time one callback attempt took, to the end of the answer read",
            buckets=_DELAY_BUCKETS,
            registry=r,
        )
        self.callback_backlog = Gauge(
            "pericles_callback_backlog",
            "Callback deliveries due and waiting for a free sender (--callback-concurrency)",
            registry=r,
        )
        self._request_children: dict[tuple[str, str, int], Counter] = {}
        self._duration_children: dict[str, Histogram] = {}
        self._output_children = {s: self.output_bytes.labels(s) for s in ("stdout", "stderr")}

    def track_counts(self, running: Callable[[], int], pending: Callable[[], int]) -> None:
        """Read the gauges from the service at scrape time: they can never drift."""
        self.running.set_function(running)
        self.pending.set_function(pending)

    def track_callback_backlog(self, backlog: Callable[[], int]) -> None:
        self.callback_backlog.set_function(backlog)

    def callback(self, outcome: str, seconds: float) -> None:
        self.callbacks.labels(outcome).inc()
        self.callback_duration.observe(seconds)

    def transition(self, record: Payload, before: Status | None) -> None:
        state = record.state
        if before is None:
            self.created.inc()
        elif before is Status.PENDING and record.started_at and record.created_at:
            delay = (record.started_at - record.created_at).total_seconds()
            self.start_delay.observe(max(delay, 0.0))
        if not record.terminal:
            return
        self.ended.labels(state.value).inc()
        if state is Status.ERROR:
            self.spawn_failures.inc()
        if record.started_at and record.finished_at:
            self.duration.observe(
                max((record.finished_at - record.started_at).total_seconds(), 0.0)
            )

    def output(self, stream: str, size: int) -> None:
        self._output_children[stream].inc(size)

    def request(self, route: str, method: str, code: int, seconds: float) -> None:
        # labels() builds and locks on every call; the few label sets a server sees are
        # looked up once and kept (routes are templates, so the set stays small).
        key = (route, method, code)
        counter = self._request_children.get(key)
        if counter is None:
            counter = self._request_children[key] = self.http_requests.labels(
                route, method, str(code)
            )
        counter.inc()
        histogram = self._duration_children.get(route)
        if histogram is None:
            histogram = self._duration_children[route] = self.http_duration.labels(route)
        histogram.observe(seconds)
