"""A histogram cheap enough for the hot path: one bisect and two additions per observation,
no lock and no label lookup (the owner keeps one Histogram per label set). prometheus-client's
own Histogram takes a lock and a label lookup per call; this is read only on scrape."""

from __future__ import annotations

from bisect import bisect_left


def exponential(start: float, factor: float, count: int) -> tuple[float, ...]:
    """`count` upper bounds start, start*factor, ... (Prometheus ExponentialBuckets)."""
    return tuple(start * factor ** i for i in range(count))


# CoreDNS's request duration buckets: 0.25 ms x 2^n, 16 of them, up to 8.192 s
DNS_BUCKETS = exponential(0.00025, 2, 16)


class Histogram:
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]):
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)   # the last one: above every bound (+Inf)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # Prometheus buckets are "less or equal": a value equal to a bound counts in it
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def buckets(self) -> list[tuple[str, int]]:
        """Cumulative (le, count) pairs as HistogramMetricFamily.add_metric takes them."""
        out, running = [], 0
        for bound, n in zip(self.bounds, self.counts):
            running += n
            out.append((repr(float(bound)), running))
        out.append(("+Inf", running + self.counts[-1]))
        return out
