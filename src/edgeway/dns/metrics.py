"""The DNS service's Prometheus metrics, built on each scrape from the counts it keeps.

`families(dns_service)` yields prometheus_client.core metric families (the admin listener's
collector calls it on every scrape); nothing here runs per query. The counting is in
edgeway.dns.counters (requests, responses, durations: the responder and the UDP server) and
in the resolver's `Counters` (cache hits and misses, upstream queries, SERVFAIL causes); both
are owned by the DnsService, so a reload neither resets nor loses them.

    edgeway_dns_requests_total{proto,qtype}      queries answered; qtype as CoreDNS labels it
                                                 (its monitored types by name, the rest "other")
    edgeway_dns_responses_total{rcode}           responses made (sent or, see send_errors, not), by RCODE name
    edgeway_dns_request_duration_seconds         histogram, CoreDNS's buckets (0.25 ms x 2^n)
    edgeway_dns_send_errors_total{proto}         answers made but not sent (NSD's num.txerr):
                                                 refused by the kernel, or the socket closed
    edgeway_resolver_cache_hits_total            questions answered from the cache (the
                                                 rendered fast path's hits included)
    edgeway_resolver_cache_misses_total          questions that had to be resolved
    edgeway_resolver_cache_entries               entries in the resolver's cache now
    edgeway_resolver_upstream_queries_total      queries sent to authoritative servers or forwarders
    edgeway_resolver_servfail_total{cause}       resolutions that ended in SERVFAIL, by cause
                                                 (resolution.SERVFAIL_CAUSES)

    edgeway_dns_record_answers_total{record,type,target}
                                                 policy records' answers (edgeway.dns.records),
                                                 per target whose addresses were answered
    edgeway_dns_record_all_down_total{record,type,mode}
                                                 answers given in when_all_down mode

The resolver's families are there without recursion too (zeros): a dashboard's query has a
series to read either way.
"""

from __future__ import annotations

from typing import Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from edgeway.dns.resolver.resolution import SERVFAIL_CAUSES


def families(dns_service) -> Iterable[Metric]:
    counters = dns_service.counters
    requests = CounterMetricFamily("edgeway_dns_requests", "DNS queries answered, by transport and query type",
                                   labels=["proto", "qtype"])
    for (proto, qtype), n in sorted(counters.requests().items()):
        requests.add_metric([proto, qtype], n)
    yield requests

    responses = CounterMetricFamily("edgeway_dns_responses", "DNS responses made (sent, or counted as send errors), by RCODE", labels=["rcode"])
    for rcode, n in sorted(counters.responses().items()):
        responses.add_metric([rcode], n)
    yield responses

    duration = counters.duration
    histogram = HistogramMetricFamily("edgeway_dns_request_duration_seconds",
                                      "Time to answer a DNS query, from reading it to the answer")
    histogram.add_metric([], duration.buckets(), duration.sum)
    yield histogram

    unsent = CounterMetricFamily("edgeway_dns_send_errors",
                                 "DNS answers made but not sent (the kernel refused the datagram, or the "
                                 "socket or connection had closed), by transport", labels=["proto"])
    for proto, n in sorted(counters.unsent.items()):
        unsent.add_metric([proto], n)
    yield unsent

    resolver_counters = dns_service.resolver_counters
    resolver = dns_service.resolver
    hits = CounterMetricFamily("edgeway_resolver_cache_hits", "Resolver questions answered from the cache")
    hits.add_metric([], resolver_counters.cache_hits + counters.cache_fast_hits())
    yield hits
    misses = CounterMetricFamily("edgeway_resolver_cache_misses", "Resolver questions not answered from the cache")
    misses.add_metric([], resolver_counters.cache_misses)
    yield misses
    entries = GaugeMetricFamily("edgeway_resolver_cache_entries", "Entries in the resolver's cache")
    entries.add_metric([], len(resolver.cache) if resolver is not None else 0)
    yield entries
    upstream = CounterMetricFamily("edgeway_resolver_upstream_queries",
                                   "Queries the resolver sent to name servers or forwarders")
    upstream.add_metric([], resolver_counters.upstream_queries)
    yield upstream
    servfail = CounterMetricFamily("edgeway_resolver_servfail", "Resolutions that ended in SERVFAIL, by cause",
                                   labels=["cause"])
    causes = dict(resolver_counters.servfail_causes)
    for cause in SERVFAIL_CAUSES:       # every cause, zeros included: rate() needs the series
        servfail.add_metric([cause], causes.get(cause, 0))
    yield servfail

    records = getattr(dns_service, "records", None)
    answers = CounterMetricFamily("edgeway_dns_record_answers",
                                  "Policy records' answers, per target whose addresses were answered",
                                  labels=["record", "type", "target"])
    all_down = CounterMetricFamily("edgeway_dns_record_all_down",
                                   "Policy records' answers given with no healthy address (when_all_down)",
                                   labels=["record", "type", "mode"])
    if not records:
        return      # (a family without a series: promtool and dashboards would see no names)
    for record in records:
        # every target from the start, zeros included: rate() needs the series
        counts = {target.label: 0 for target in record.targets}
        counts.update(record.answers)
        for target, n in counts.items():
            answers.add_metric([record.name, record.rdtype, target], n)
        all_down.add_metric([record.name, record.rdtype, record.when_all_down],
                            record.all_down.get(record.when_all_down, 0))
    yield answers
    yield all_down
