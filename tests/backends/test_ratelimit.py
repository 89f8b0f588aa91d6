"""Token buckets on a fake clock: no sleeping, exact waits."""

from __future__ import annotations

import asyncio

import pytest

from psychocounsel.backends.ratelimit import RateLimiter, TokenBucket


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_rpm_bucket_holds_one_second_and_queues_in_order():
    clock = Clock()
    b = TokenBucket(120, clock=clock)  # 2 per second, burst of 2
    assert [b.reserve() for _ in range(5)] == [0.0, 0.0, 0.5, 1.0, 1.5]
    clock.t += 1.5  # the last queued caller goes now; the next turn is 0.5 s away
    assert b.reserve() == 0.5
    clock.t += 1.0  # the bucket has refilled one request past that turn
    assert b.reserve() == 0.0
    assert b.reserve() == 0.5


def test_refill_never_exceeds_capacity():
    clock = Clock()
    b = TokenBucket(60, clock=clock)  # 1 per second, burst of 1
    clock.t += 3600
    assert b.reserve() == 0.0 and b.reserve() == 1.0


def test_small_limits_still_allow_one_request():
    clock = Clock()
    b = TokenBucket(6, clock=clock)  # 0.1/s: capacity rounds up to one whole request
    assert b.reserve() == 0.0 and b.reserve() == pytest.approx(10.0)


def test_oversized_reservation_waits_for_a_full_bucket_then_leaves_debt():
    clock = Clock()
    b = TokenBucket(6000, clock=clock)  # 100 tokens/s, capacity 100
    assert b.reserve(250) == 0.0  # full bucket: goes ahead, level -150
    assert b.reserve(10) == pytest.approx(1.6)  # (10 - -150) / 100


def test_refund_reconciles_estimate_with_real_usage():
    clock = Clock()
    lim = RateLimiter(tpm=6000, clock=clock)
    assert lim.reserve(100) == 0.0
    assert lim.reserve(50) == pytest.approx(0.5)
    lim.reconcile(estimated=100, actual=40)  # first call used 40: 60 tokens come back
    assert lim.tokens.level == pytest.approx(-50 + 60)
    lim.reconcile(estimated=10, actual=0)  # no usage reported: keep the estimate
    assert lim.tokens.level == pytest.approx(10)


def test_limiter_takes_the_longer_wait_and_none_is_free():
    clock = Clock()
    lim = RateLimiter(rpm=60, tpm=60000, clock=clock)  # 1 req/s; 1000 tok/s
    assert lim.reserve(10) == 0.0
    assert lim.reserve(10) == pytest.approx(1.0)  # request bucket binds
    assert lim.reserve(3000) == pytest.approx(2.0)  # oversized: waits for a full token bucket... and rpm
    free = RateLimiter()
    assert not free.active and free.reserve(1e9) == 0.0


def test_acquire_sleeps_the_reserved_time():
    lim = RateLimiter(rpm=1200)  # 20/s, burst 20

    async def go():
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await asyncio.gather(*(lim.acquire(1) for _ in range(25)))
        return loop.time() - t0

    assert asyncio.run(go()) >= 0.24  # 5 beyond the burst at 20/s


def test_rejects_non_positive_rate():
    with pytest.raises(ValueError):
        TokenBucket(0)
