"""Prometheus metrics of one process, in a registry of its own (never the global default).

``Metrics`` is created by ``open_services`` and reaches handlers through ``Services``. Requests
are counted and timed by *route name* (the ``name=`` of the url rule, so cardinality stays bounded
whatever paths clients invent), method and status; gauges read their values from the objects that
already keep them (open WebSockets, TCP chat connections) when scraped, so nothing else has to
report to them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector
from tornado.httputil import HTTPServerRequest
from tornado.routing import Rule, RuleRouter
from tornado.web import Application, RequestHandler

PREFIX = "mservices"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
NOT_FOUND_ROUTE = "not_found"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

Count = Callable[[], float]
Totals = Callable[[], Mapping[str, float]]


class _CallbackCounter(Collector):
    """A counter read from an existing object's running totals when scraped.

    Without a label it reports one total; with ``label`` it reports one total per value of
    that label (the source returns a mapping from label value to total).
    """

    def __init__(self, name: str, documentation: str, label: str | None = None) -> None:
        self.name = name
        self.documentation = documentation
        self.label = label
        self.read: Count | None = None
        self.read_by_label: Totals | None = None

    def collect(self) -> Iterable[Metric]:
        """The current totals (nothing until a source is attached)."""
        if self.label is None:
            if self.read is None:
                return []
            family = CounterMetricFamily(self.name, self.documentation)
            family.add_metric([], self.read())
            return [family]
        if self.read_by_label is None:
            return []
        family = CounterMetricFamily(self.name, self.documentation, labels=[self.label])
        for value, total in sorted(self.read_by_label().items()):
            family.add_metric([value], total)
        return [family]


class Metrics:
    """Every metric of one process and the registry that exposes them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            f"{PREFIX}_http_requests",
            "HTTP requests answered, by route name, method and status.",
            ("route", "method", "status"),
            registry=self.registry,
        )
        self.latency = Histogram(
            f"{PREFIX}_http_request_duration_seconds",
            "Time from the request's arrival to its response, by route name and status.",
            ("route", "status"),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.websockets = Gauge(
            f"{PREFIX}_websocket_connections",
            "Open chat and ticker WebSockets.",
            registry=self.registry,
        )
        self.tcp_connections = Gauge(
            f"{PREFIX}_tcp_chat_connections",
            "Open TCP chat connections (0 when the TCP chat is off).",
            registry=self.registry,
        )
        self._chat_messages = _CallbackCounter(
            f"{PREFIX}_chat_messages_total",
            "Chat messages said in this process (WebSocket and TCP).",
        )
        self.registry.register(self._chat_messages)
        self._chat_frames = _CallbackCounter(
            f"{PREFIX}_chat_frames_delivered_total",
            "Chat frames handed to this process's members (messages, joins, leaves).",
        )
        self.registry.register(self._chat_frames)
        self._downloads = _CallbackCounter(
            f"{PREFIX}_downloads_total",
            "Downloads ended, by outcome (done, failed, cancelled, refused).",
            label="outcome",
        )
        self.registry.register(self._downloads)
        self.downloads_active = Gauge(
            f"{PREFIX}_downloads_active",
            "Downloads running now.",
            registry=self.registry,
        )
        self._routes: dict[type[RequestHandler], list[Rule]] | None = None

    # -- sources read at scrape time -----------------------------------------------------------

    def count_websockets(self, count: Count) -> None:
        """Read the open WebSocket count from ``count`` at each scrape."""
        self.websockets.set_function(count)

    def count_tcp_connections(self, count: Count) -> None:
        """Read the TCP chat connection count from ``count`` at each scrape."""
        self.tcp_connections.set_function(count)

    def count_chat_frames(self, total: Count) -> None:
        """Read the running total of delivered chat frames from ``total`` at each scrape."""
        self._chat_frames.read = total

    def count_chat_messages(self, total: Count) -> None:
        """Read the running total of chat messages said here from ``total`` at each scrape."""
        self._chat_messages.read = total

    def count_downloads(self, totals: Totals) -> None:
        """Read the downloads ended so far, by outcome, from ``totals`` at each scrape."""
        self._downloads.read_by_label = totals

    def count_active_downloads(self, count: Count) -> None:
        """Read the number of running downloads from ``count`` at each scrape."""
        self.downloads_active.set_function(count)

    # -- requests ------------------------------------------------------------------------------

    def observe(self, handler: RequestHandler) -> None:
        """Count and time one finished request under its route name."""
        request = handler.request
        route = self.route_name(handler)
        status = str(handler.get_status())
        method = request.method if request.method in METHODS else "other"
        self.requests.labels(route, method, status).inc()
        self.latency.labels(route, status).observe(request.request_time())

    def observing(self, log: Callable[[RequestHandler], None]) -> Callable[[RequestHandler], None]:
        """An Application ``log_function`` that observes each request, then calls ``log``."""

        def observe_then_log(handler: RequestHandler) -> None:
            self.observe(handler)
            log(handler)

        return observe_then_log

    def route_name(self, handler: RequestHandler) -> str:
        """The ``name=`` of the rule that routed ``handler``'s request (``not_found`` when none
        did; the handler class's name for an unnamed rule such as the static files)."""
        if self._routes is None:
            self._routes = rules_by_handler(handler.application)
        rules = self._routes.get(type(handler))
        if not rules:
            return NOT_FOUND_ROUTE
        rule = rules[0] if len(rules) == 1 else _matching(rules, handler.request)
        if rule is None:
            return NOT_FOUND_ROUTE
        return rule.name or type(handler).__name__

    def exposition(self) -> bytes:
        """Everything in the Prometheus text format."""
        return generate_latest(self.registry)


def rules_by_handler(app: Application) -> dict[type[RequestHandler], list[Rule]]:
    """The application's url rules grouped by handler class (most classes serve one rule),
    from every router: the route table and the rules ``add_handlers`` put beside it."""
    grouped: dict[type[RequestHandler], list[Rule]] = {}
    routers: list[RuleRouter] = [app.default_router]
    seen: set[int] = set()
    while routers:
        router = routers.pop(0)
        if id(router) in seen:
            continue
        seen.add(id(router))
        for rule in router.rules:
            if isinstance(rule.target, type) and issubclass(rule.target, RequestHandler):
                grouped.setdefault(rule.target, []).append(rule)
            elif isinstance(rule.target, RuleRouter):
                routers.append(rule.target)
    return grouped


def _matching(rules: list[Rule], request: HTTPServerRequest) -> Rule | None:
    """The rule among several of one handler class that matches ``request``."""
    for rule in rules:
        if rule.matcher.match(request) is not None:
            return rule
    return None
