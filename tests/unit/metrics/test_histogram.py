from prometheus_client import CollectorRegistry, Histogram as ClientHistogram, generate_latest
from prometheus_client.core import HistogramMetricFamily

from edgeway.events import EventLog
from edgeway.metrics.histogram import DNS_BUCKETS, Histogram


def test_dns_buckets_are_corednss():
    assert len(DNS_BUCKETS) == 16 and DNS_BUCKETS[0] == 0.00025 and abs(DNS_BUCKETS[-1] - 8.192) < 1e-9


def test_same_exposition_as_prometheus_clients_own_histogram():
    values = [0.0, 0.00025, 0.0003, 0.001, 0.5, 8.192, 9, 100, 0.00012]
    ours = Histogram(DNS_BUCKETS)
    registry = CollectorRegistry()
    theirs = ClientHistogram("x_seconds", "x", buckets=DNS_BUCKETS, registry=registry)
    for v in values:
        ours.observe(v)
        theirs.observe(v)

    class One:
        def collect(self):
            family = HistogramMetricFamily("y_seconds", "x")
            family.add_metric([], ours.buckets(), ours.sum)
            yield family

    mine = CollectorRegistry()
    mine.register(One())
    def lines(text, name):
        return [l.replace(name, "N") for l in text.decode().splitlines()
                if l.startswith(name) and "_created" not in l]
    assert lines(generate_latest(mine), "y_seconds") == lines(generate_latest(registry), "x_seconds")
    assert ours.count == len(values)


def test_event_log_is_bounded_and_ordered():
    log = EventLog(size=3)
    for i in range(5):
        log.add("health", f"e{i}", n=i)
    assert [e["n"] for e in log.since(0)] == [2, 3, 4]
    assert [e["n"] for e in log.since(4)] == [4]
