"""The latency histogram is bounded and its quantiles are within the bucket error."""

from __future__ import annotations

import numpy as np
import pytest

from dataflare_platform.engine.metrics import HEAD_SAMPLES, LatencyHistogram


def test_a_million_samples_use_bounded_memory_and_quantiles_stay_within_the_bucket_error():
    rng = np.random.default_rng(7)
    # Latencies over five orders of magnitude: 0.01 ms .. 1 s, log-normal.
    samples = np.exp(rng.normal(np.log(5.0), 1.5, 1_000_000)).clip(0.01, 1_000)
    h = LatencyHistogram()
    buckets = h.counts.nbytes
    h.record_many(samples[:500_000])
    for ms in samples[500_000:501_000]:  # the per-batch path too
        h.record(float(ms))
    h.record_many(samples[501_000:])
    assert h.count == 1_000_000
    assert h.counts.nbytes == buckets < 32_000  # fixed: independent of the sample count
    assert len(h.head) == HEAD_SAMPLES
    for q in (1, 50, 90, 99, 99.9):
        exact = float(np.percentile(samples, q))
        assert h.percentile(q) == pytest.approx(exact, rel=2 * h.relative_error)
    assert h.summary()["max_ms"] == pytest.approx(samples.max())


def test_warm_up_samples_can_be_left_out():
    h = LatencyHistogram()
    h.record_many(np.array([1_000.0] * 10 + [2.0] * 990))
    assert h.summary()["max_ms"] == 1_000.0
    steady = h.summary(skip=10)
    assert steady["p99_ms"] == pytest.approx(2.0, rel=0.02)
    assert steady["max_ms"] == pytest.approx(2.0, rel=0.02)
    with pytest.raises(ValueError, match="at most the first"):
        h.summary(skip=HEAD_SAMPLES + 1)


def test_an_empty_histogram_summarises_to_zero():
    assert LatencyHistogram().summary() == {"p50_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0}
