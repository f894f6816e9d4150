"""The scenarios the harness drives against every target, and the type that declares one.

To add a scenario, append a ``Scenario`` to ``SCENARIOS``. A scenario that needs something from the
running server first (a bearer token, say) declares a ``setup`` hook: it receives the target's base
URL (``http://127.0.0.1:PORT``) and returns extra request headers, either directly or as an
awaitable. The hook runs once per target, before the load, and must bound its own network calls.
"""

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

SetupResult = Mapping[str, str] | Awaitable[Mapping[str, str]]
"""What a setup hook returns: extra headers, or an awaitable of them."""

SetupHook = Callable[[str], SetupResult]
"""A setup hook: called with the target's base URL before the scenario runs."""

SETUP_TIMEOUT_S = 30.0
"""How long an async setup hook may take before the scenario is reported as failed."""


@dataclass(frozen=True)
class BackgroundLoad:
    """Load driven against the same server while a scenario is measured; its rate is reported
    in the row's note as ``<label>/s``."""

    label: str
    path: str
    method: str = "GET"
    body: str | None = None
    connections: int = 32
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Scenario:
    """One request shape, replayed by wrk for the whole measurement.

    ``path`` is appended to the target's base URL and may carry a query string. ``headers`` and
    ``body`` are sent with every request (a body gets its Content-Length from wrk); ``setup`` adds
    headers computed against the running server, e.g. ``Authorization: Bearer ...``.
    """

    name: str
    path: str
    method: str = "GET"
    headers: Mapping[str, str] = field(default_factory=dict)
    body: str | None = None
    setup: SetupHook | None = None
    description: str = ""
    background: BackgroundLoad | None = None
    connections: int | None = None
    """Connections of the measured load, when it must differ from the run's (a latency probe)."""

    def __post_init__(self) -> None:
        """Reject paths that would not join onto a base URL."""
        if not self.path.startswith("/"):
            raise ValueError(f"scenario {self.name!r}: path must start with '/'")


BENCH_PASSWORD = "bench passphrase not in any list"
JSON = {"Content-Type": "application/json"}
HTTP_TIMEOUT_S = 10.0


def _post_json(url: str, body: Mapping[str, object]) -> tuple[int, dict[str, object]]:
    """POST ``body`` as JSON (the harness's own blocking client, never inside the server)."""
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers=JSON, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def ensure_account(base_url: str, name: str) -> None:
    """Register ``name`` with the bench password (an existing account is fine)."""
    status, body = _post_json(f"{base_url}/user", {"name": name, "pwd": BENCH_PASSWORD})
    # 201: registered; 200: the name exists and this is its password (seed §4.3 logs it in)
    if status not in (200, 201):
        raise RuntimeError(f"cannot register {name}: {status} {body}")


def bearer_for(name: str) -> SetupHook:
    """A setup hook that registers ``name``, logs in and returns the Authorization header."""

    def setup(base_url: str) -> Mapping[str, str]:
        ensure_account(base_url, name)
        status, body = _post_json(
            f"{base_url}/user/login", {"name": name, "pwd": BENCH_PASSWORD, "mobile_type": 3}
        )
        if status != 200:
            raise RuntimeError(f"login of {name} failed: {status} {body}")
        return {"Authorization": f"Bearer {body['token']}"}

    return setup


def account(name: str) -> SetupHook:
    """A setup hook that only makes sure ``name`` exists (for background logins)."""

    def setup(base_url: str) -> Mapping[str, str]:
        ensure_account(base_url, name)
        return {}

    return setup


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(name="GET /", path="/", description="the home page"),
    Scenario(name="GET /healthz", path="/healthz", description="the liveness probe"),
    Scenario(
        name="GET /user/me (token)",
        path="/user/me",
        setup=bearer_for("bench-me"),
        description="profile, roles and menu tree from the caches (target: ratio >= 0.5)",
    ),
    Scenario(
        name="GET /user/me/menus (token, 200 menus)",
        path="/user/me/menus",
        setup=bearer_for("bench-menus"),
        description="the caller's tree from the per-role-set cache (target: ratio >= 0.5)",
    ),
    Scenario(
        name="GET /healthz while 32 clients log in",
        path="/healthz",
        setup=account("bench-login"),
        description="argon2 logins must not stall the loop (target: p99 < 20 ms)",
        connections=1,
        background=BackgroundLoad(
            label="logins",
            path="/user/login",
            method="POST",
            body=json.dumps({"name": "bench-login", "pwd": BENCH_PASSWORD}),
            connections=32,
            headers=JSON,
        ),
    ),
)
"""Every scenario, in the order they are run and reported."""


def select(scenarios: Sequence[Scenario], only: str | None) -> list[Scenario]:
    """Return the scenarios whose name contains ``only`` (case-insensitive); all when None."""
    if not only:
        return list(scenarios)
    needle = only.casefold()
    return [scenario for scenario in scenarios if needle in scenario.name.casefold()]


async def _bounded(awaitable: Awaitable[Mapping[str, str]]) -> Mapping[str, str]:
    """Await a setup hook's result, giving up after ``SETUP_TIMEOUT_S``."""
    return await asyncio.wait_for(awaitable, timeout=SETUP_TIMEOUT_S)


def request_headers(scenario: Scenario, base_url: str) -> dict[str, str]:
    """Return the scenario's static headers merged with those its setup hook produces."""
    headers = dict(scenario.headers)
    if scenario.setup is None:
        return headers
    result = scenario.setup(base_url)
    extra = result if isinstance(result, Mapping) else asyncio.run(_bounded(result))
    headers.update(extra)
    return headers
