"""Per-endpoint adaptive concurrency (AIMD) and least-in-flight routing over a model's replicas.

One ``Router`` per model. Each endpoint has a concurrency ``limit`` between 1 and its ceiling:
- additive increase: every success adds ``increase / limit`` (about +1 per round trip at full window);
- multiplicative decrease on a 429, a timeout, or when the smoothed per-output-token latency rises above
  ``latency_factor`` x its floor (vLLM queues instead of answering 429 when it saturates). A decrease applies at most
  once per generation of requests: only requests that started after the last cut can cut again.
- ``Retry-After`` (429/503) puts the endpoint in cool-down; no request goes there until it ends.
Requests wait in one FIFO per model and are handed to the endpoint with the fewest requests in flight.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field

from schemas.config.models import AimdPolicy


@dataclass
class Endpoint:
    url: str
    ceiling: int
    policy: AimdPolicy
    limit: float = 1.0
    in_flight: int = 0
    cooldown_until: float = 0.0
    last_cut: float = 0.0
    lat_ewma: float | None = None
    lat_floor: float | None = None
    successes: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    cooldowns: int = 0  # failure cool-downs in a row (reset by a success)
    cuts: int = 0
    client: object = field(default=None, repr=False)
    api_key_env: str | None = None

    @property
    def capacity(self) -> int:
        return max(1, int(self.limit))

    def available(self, now: float) -> bool:
        return self.cooldown_until <= now and self.in_flight < self.capacity

    def on_success(self, started: float, latency_s: float, completion_tokens: int) -> bool:
        """Record a success; returns True when the limit grew past an integer (more requests may start)."""
        self.successes += 1
        self.consecutive_failures = 0
        self.cooldowns = 0
        per_token = latency_s / max(1, completion_tokens)
        # smoothed over about two round trips (2 x limit completions), so a momentary stall does not cut
        a = 1.0 / max(10.0, 2.0 * self.limit)
        self.lat_ewma = per_token if self.lat_ewma is None else (1 - a) * self.lat_ewma + a * per_token
        if self.successes >= self.policy.min_samples:
            if self.lat_floor is None or self.lat_ewma < self.lat_floor:
                self.lat_floor = self.lat_ewma
            elif self.lat_ewma > self.policy.latency_factor * self.lat_floor:
                self.cut(started)
                return False
        before = self.capacity
        self.limit = min(float(self.ceiling), self.limit + self.policy.increase / max(self.limit, 1.0))
        return self.capacity > before

    def cut(self, started: float) -> bool:
        """Multiplicative decrease, once per generation of requests."""
        if started < self.last_cut:
            return False
        self.limit = max(1.0, self.limit * self.policy.decrease_factor)
        self.last_cut = time.monotonic()
        self.cuts += 1
        return True

    def snapshot(self) -> dict:
        return {
            "url": self.url,
            "limit": round(self.limit, 2),
            "ceiling": self.ceiling,
            "in_flight": self.in_flight,
            "successes": self.successes,
            "failures": self.failures,
            "cuts": self.cuts,
            "cooling_down_s": round(max(0.0, self.cooldown_until - time.monotonic()), 2),
        }


class Router:
    """Hands out endpoints (slots) to waiting requests, FIFO, least in-flight first."""

    def __init__(self, endpoints: list[Endpoint]):
        if not endpoints:
            raise ValueError("a router needs at least one endpoint")
        self.endpoints = endpoints
        self._waiters: deque[asyncio.Future] = deque()
        self._rr = 0
        self._timer: asyncio.TimerHandle | None = None

    def _pick(self, now: float) -> Endpoint | None:
        best = None
        n = len(self.endpoints)
        for i in range(n):
            ep = self.endpoints[(self._rr + i) % n]
            if ep.available(now) and (best is None or ep.in_flight < best.in_flight):
                best = ep
        if best is not None:
            self._rr = (self._rr + 1) % n
        return best

    async def acquire(self) -> Endpoint:
        now = time.monotonic()
        if not self._waiters:
            ep = self._pick(now)
            if ep is not None:
                ep.in_flight += 1
                return ep
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        self._arm_timer()
        try:
            return await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release(fut.result())  # handed a slot just as we were cancelled: give it back
            raise

    def release(self, ep: Endpoint) -> None:
        ep.in_flight -= 1
        self.dispatch()

    def dispatch(self) -> None:
        now = time.monotonic()
        while self._waiters:
            fut = self._waiters[0]
            if fut.done():  # cancelled waiter
                self._waiters.popleft()
                continue
            ep = self._pick(now)
            if ep is None:
                break
            self._waiters.popleft()
            ep.in_flight += 1
            fut.set_result(ep)
        self._arm_timer()

    def _arm_timer(self) -> None:
        """While requests wait and some endpoint cools down, wake up when the first cool-down ends."""
        if self._timer is not None or not self._waiters:
            return
        now = time.monotonic()
        cooling = [ep.cooldown_until for ep in self.endpoints if ep.cooldown_until > now]
        if not cooling:
            return
        loop = asyncio.get_running_loop()

        def wake() -> None:
            self._timer = None
            self.dispatch()

        self._timer = loop.call_later(max(0.0, min(cooling) - now) + 0.001, wake)

    def cool_down(self, ep: Endpoint, seconds: float) -> None:
        ep.cooldown_until = max(ep.cooldown_until, time.monotonic() + seconds)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._arm_timer()

    def abort(self, exc: BaseException) -> None:
        """Fail every waiting request with ``exc`` (the run stopped)."""
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_exception(exc)

    @property
    def waiting(self) -> int:
        return sum(1 for f in self._waiters if not f.done())

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
