"""The arithmetic behind the meta parameters: retry delays and the token bucket of ``limit``.

Both are plain objects driven by the worker's own task: no timer exists unless a
resource's meta asks for one.
"""

from __future__ import annotations

from convergent.resources.base import Meta

__all__ = ["WATCH_FAILED", "TokenBucket", "retry_delay", "retry_text", "seconds_text"]

WATCH_FAILED = "watch failed: "  # how a failed watch's error starts

_MAX_DOUBLINGS = 64  # 2**64 times any delay is beyond every max_delay


def retry_delay(meta: Meta, tries: int) -> float:
    """Seconds to wait before retry number ``tries`` (1 for the first retry).

    ``backoff: exponential`` doubles ``delay`` for each earlier try, up to ``max_delay``;
    ``jitter`` then spreads the result at random by up to that fraction either way
    (still capped by ``max_delay`` under exponential backoff).
    """
    delay = meta.delay
    exponential = meta.backoff == "exponential"
    if exponential:
        delay = min(delay * 2.0 ** min(tries - 1, _MAX_DOUBLINGS), meta.max_delay)
    if meta.jitter:
        import random

        delay *= random.uniform(1 - meta.jitter, 1 + meta.jitter)
        if exponential:
            delay = min(delay, meta.max_delay)
    return delay


def seconds_text(seconds: float) -> str:
    """``0.5``, ``2``, ``1.25``: seconds as people write them, at most two decimals."""
    return f"{seconds:.2f}".rstrip("0").rstrip(".")


def retry_text(what: str, tries: int, retry: int, delay: float, message: str) -> str:
    """``retry 2/5 in 0.5 s: exited with 1`` (``2/forever`` with ``retry: -1``)."""
    limit = "forever" if retry == -1 else str(retry)
    text = message.removeprefix(WATCH_FAILED)
    return f"{what} {tries}/{limit} in {seconds_text(delay)} s: {text}"


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` stored; starts full.

    A run takes one token. :meth:`take` never blocks: it says how long to wait for the
    next token instead, and the worker sleeps that long with its events coalesced into
    one pending check, so the last event is always acted on.
    """

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.stamp: float | None = None

    def take(self, now: float) -> float:
        """Take a token at time ``now`` and return 0, or return the seconds until one frees."""
        if self.stamp is not None:
            self.tokens = min(float(self.burst), self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1 - 1e-9:
            self.tokens = max(0.0, self.tokens - 1)
            return 0.0
        return (1 - self.tokens) / self.rate
