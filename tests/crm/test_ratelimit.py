"""The client-side token bucket on an injected clock."""

from __future__ import annotations

import threading

import pytest

from celsync.ratelimit import TokenBucket


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds


def test_burst_then_one_request_per_interval():
    clock = Clock()
    bucket = TokenBucket(2.0, 3, clock=clock, sleep=clock.sleep)
    sent = []
    for _ in range(7):
        bucket.acquire()
        sent.append(clock.t)
    assert sent == [0.0, 0.0, 0.0, 0.5, 1.0, 1.5, 2.0]


def test_idle_time_refills_up_to_the_burst_only():
    clock = Clock()
    bucket = TokenBucket(1.0, 2, clock=clock, sleep=clock.sleep)
    clock.t = 100.0
    waits = [bucket.acquire() for _ in range(3)]
    assert waits == [0.0, 0.0, 1.0]


def test_defer_empties_the_bucket_and_paces_afterwards():
    clock = Clock()
    bucket = TokenBucket(2.0, 10, clock=clock, sleep=clock.sleep)
    bucket.defer(5.0)
    assert bucket.available_in() == 5.0
    sent = []
    for _ in range(3):
        bucket.acquire()
        sent.append(clock.t)
    assert sent == [5.0, 5.5, 6.0]  # no burst right after the pause


def test_concurrent_callers_get_distinct_slots():
    clock = Clock()
    bucket = TokenBucket(10.0, 1, clock=clock)  # nobody sleeps: only the reservations count
    waits: list[float] = []
    lock = threading.Lock()

    def take() -> None:
        for _ in range(25):
            w = bucket.reserve()
            with lock:
                waits.append(w)

    threads = [threading.Thread(target=take) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(round(w, 6) for w in waits) == [round(i * 0.1, 6) for i in range(100)]


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError, match="rate"):
        TokenBucket(0)
    with pytest.raises(ValueError, match="burst"):
        TokenBucket(1, 0)
