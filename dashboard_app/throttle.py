"""Throttling: sign-in attempts and API requests, atomic fixed-window counts shared through Redis when configured.

One counter (``WindowCounter``) serves both: Redis INCR + EXPIRE in one Lua
script when ``OPSDASH_REDIS_URL`` is set (every process shares the counts), else
a lock and a dict in this process; if Redis fails the process falls back to its
own counts (logged), so sign-in and the API keep working.

Sign-in (``LoginThrottle``):

- A password is checked only after a slot was taken, in one atomic step
  (Redis INCR in a Lua script, or a lock in-process): 40 guesses sent at
  once get at most ``max_attempts`` checks, not "whoever read the count
  before the others wrote it".
- Limits are per (account, address): ``max_attempts`` in the window; and per
  account from all addresses: ``ACCOUNT_FACTOR`` times that (guessing from
  many addresses). There is no per-address limit: everyone behind an
  office NAT shares an address, and one person's typos (or an attacker's
  guesses) must not lock the others out.
- A successful sign-in gives its slot back and clears its (account,
  address) count; the account's count from other addresses stays.

API (``ApiRateLimit``, issue 18): ``OPSDASH_API_RATE_PER_MINUTE`` requests a
minute per API token (or per signed-in user when the cookie is used); an
event stream counts once, when it opens.
"""
from __future__ import annotations

import logging
import threading
import time

from data.redis_nodes import sync_client

from .settings import get_settings

log = logging.getLogger("opsdash.auth")
ACCOUNT_FACTOR = 10
#: Increment every key, set its expiry on the first increment, return the counts: one atomic step.
_RESERVE = """
local counts = {}
for i, key in ipairs(KEYS) do
  local n = redis.call('INCR', key)
  if n == 1 then redis.call('EXPIRE', key, ARGV[1]) end
  counts[i] = n
end
return counts
"""
_RELEASE = """
if redis.call('DECR', KEYS[1]) <= 0 then redis.call('DEL', KEYS[1]) end
redis.call('DEL', KEYS[2])
return 1
"""


def throttle_keys(username: str, address: str) -> tuple[str, str]:
    """(account key, (account, address) key); the braces keep both in one Redis Cluster slot."""
    account = username.strip().lower()[:150]
    return f"opsdash:login:{{{account}}}", f"opsdash:login:{{{account}}}:{address}"


class WindowCounter:
    """Counts per key in fixed windows of ``window_s``: in Redis when a URL is given, else in this process."""

    def __init__(self, window_s: int, redis_url: str | None = None, what: str = "sign-in throttle") -> None:
        self.window_s = window_s
        self.what = what
        self._counts: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()
        self._redis = None
        self._redis_url = redis_url

    def add(self, keys: tuple[str, ...]) -> list[int]:
        """Count one more for every key, atomically; the counts in the current window (blocking: a worker lane)."""
        counts = self.shared(_RESERVE, keys, self.window_s)
        return counts if counts is not None else self._local_reserve(keys)

    def shared(self, script: str, keys: tuple[str, ...], *args: int) -> list[int] | None:
        if self._redis_url is None:
            return None
        try:
            if self._redis is None:  # made at first use: a Redis Cluster client connects as it is made
                self._redis = sync_client(self._redis_url, timeout_s=2)
            result = self._redis.eval(script, len(keys), *keys, *args)
            # _RESERVE answers a list of counts, _RELEASE a single 1.
            return [int(n) for n in result] if isinstance(result, list) else [int(result)]
        except Exception as exc:
            log.warning("%s: Redis unavailable (%s), counting in this process", self.what, type(exc).__name__)
            return None

    def give_back(self, keys: tuple[str, str]) -> None:
        """One count less for the first key; the second key's count forgotten (a successful sign-in)."""
        if self.shared(_RELEASE, keys) is None:
            with self._lock:
                count, start = self._counts.get(keys[0], (1, time.monotonic()))
                self._counts[keys[0]] = (max(count - 1, 0), start)
                self._counts.pop(keys[1], None)

    def _local_reserve(self, keys: tuple[str, ...]) -> list[int]:
        now = time.monotonic()
        with self._lock:
            if len(self._counts) > 100_000:  # bound memory under a spray: forget expired windows
                self._counts = {k: v for k, v in self._counts.items() if now - v[1] < self.window_s}
            counts = []
            for key in keys:
                count, start = self._counts.get(key, (0, now))
                if now - start >= self.window_s:
                    count, start = 0, now
                self._counts[key] = (count + 1, start)
                counts.append(count + 1)
            return counts


class LoginThrottle:
    def __init__(self, max_attempts: int, window_s: int, redis_url: str | None = None) -> None:
        self.max_attempts = max_attempts
        self.window_s = window_s
        self.counter = WindowCounter(window_s, redis_url)

    def _limits(self) -> tuple[int, int]:
        return self.max_attempts * ACCOUNT_FACTOR, self.max_attempts

    def reserve(self, username: str, address: str) -> bool:
        """Take a slot for one password check; False when the account or this address for it is throttled."""
        counts = self.counter.add(throttle_keys(username, address))
        return all(count <= limit for count, limit in zip(counts, self._limits()))

    def succeeded(self, username: str, address: str) -> None:
        keys = throttle_keys(username, address)
        self.counter.give_back(keys)


class ApiRateLimit:
    """At most ``per_minute`` API requests a minute per credential (a token's id, or a signed-in user)."""

    WINDOW_S = 60

    def __init__(self, per_minute: int, redis_url: str | None = None) -> None:
        self.per_minute = per_minute
        self.counter = WindowCounter(self.WINDOW_S, redis_url, what="API rate limit")

    def allow(self, credential: str) -> bool:
        """Count one request of ``credential``; False when over the limit (blocking: call it in a worker lane)."""
        return self.counter.add((f"opsdash:api:{{{credential[:200]}}}",))[0] <= self.per_minute


_throttle: LoginThrottle | None = None
_api_limit: ApiRateLimit | None = None


def get_throttle() -> LoginThrottle:
    global _throttle
    if _throttle is None:
        s = get_settings()
        _throttle = LoginThrottle(s.login_max_attempts, s.login_window_s, s.redis_url)
    return _throttle


def get_api_rate_limit() -> ApiRateLimit:
    global _api_limit
    if _api_limit is None:
        s = get_settings()
        _api_limit = ApiRateLimit(s.api_rate_per_minute, s.redis_url)
    return _api_limit
