"""Client-side request pacing for the CRM sinks.

CRMs punish clients that exceed their limits (Bitrix24 answers 503 and counts the excess,
Kommo blocks the IP after repeated 429s), so every HTTP request a sink makes first takes a
token here. The bucket is a GCRA ("virtual scheduling") token bucket: at most ``burst``
requests back to back, then one every ``1 / rate`` seconds. It is thread-safe, and the clock
and the sleep are injectable so that tests can drive it without waiting.
"""

from __future__ import annotations

import threading
import time
from typing import Callable


class TokenBucket:
    """At most ``burst`` requests at once, ``rate`` requests per second on average.

    Callers that arrive while the bucket is empty are given consecutive future slots, so
    concurrent users of one bucket queue up instead of racing for the same token.
    """

    def __init__(
        self,
        rate: float,
        burst: int = 1,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate!r}")
        if burst < 1:
            raise ValueError(f"burst must be at least 1, got {burst!r}")
        self.rate = float(rate)
        self.burst = int(burst)
        self._interval = 1.0 / self.rate
        self._tolerance = (self.burst - 1) * self._interval
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tat = clock()  # theoretical arrival time of the next request: a full bucket

    def reserve(self) -> float:
        """Take the next token; return how many seconds to wait before using it."""
        with self._lock:
            now = self._clock()
            tat = max(self._tat, now)
            wait = max(0.0, tat - self._tolerance - now)
            self._tat = tat + self._interval
            return wait

    def acquire(self) -> float:
        """Block until a token is available; return the seconds waited."""
        wait = self.reserve()
        if wait > 0:
            self._sleep(wait)
        return wait

    def defer(self, seconds: float) -> None:
        """Empty the bucket and hand out no token for ``seconds``.

        For when the server says we went too fast (Bitrix24 503, Kommo 429): the next request
        waits, and the ones after it are paced one by one instead of bursting again.
        """
        with self._lock:
            self._tat = max(self._tat, self._clock() + max(0.0, seconds) + self._tolerance)

    def available_in(self) -> float:
        """Seconds until a token would be handed out without waiting (0 if one is ready)."""
        with self._lock:
            return max(0.0, self._tat - self._tolerance - self._clock())
