"""When a secondary zone asks its primary again: RFC 1035's SOA timers, without I/O.

One `RefreshState` per secondary zone, driven by the manager (edgeway.dns.secondary) with the
time (`now`, seconds) and what happened; it answers when to look next and whether the zone may
still be served. The rules (RFC 1035 sections 3.3.13 and 4.3.5, RFC 1996 for NOTIFY), as NSD's
xfrd and Knot apply them:

- REFRESH after the data was last confirmed by a primary (a transfer, or a SOA answer whose
  serial is not higher), the SOA serial is asked again;
- a check or a transfer that fails is tried again RETRY later;
- EXPIRE after the last confirmation without a new one, the zone is no longer authoritative:
  it answers SERVFAIL (as NSD) until a primary answers again;
- a NOTIFY (or `edgeway ctl zone-refresh`) makes the check due now;
- before the first transfer there is no SOA to take timers from: the check is tried again
  after NO_DATA_RETRY, doubled on each failure up to NO_DATA_RETRY_MAX (NSD backs off too).

Timers below MIN_INTERVAL are raised to it (a SOA with refresh 0 must not make a hot loop;
Knot's refresh-min-interval does the same).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edgeway.dns.zone import serial_compare

MIN_INTERVAL = 1.0
NO_DATA_RETRY = 5.0
NO_DATA_RETRY_MAX = 300.0


@dataclass(frozen=True)
class SoaTimers:
    serial: int
    refresh: float
    retry: float
    expire: float

    @classmethod
    def of(cls, soa) -> "SoaTimers":
        """From a SOA rdata (dnspython's)."""
        return cls(soa.serial, max(MIN_INTERVAL, soa.refresh), max(MIN_INTERVAL, soa.retry),
                   max(MIN_INTERVAL, soa.expire))


@dataclass
class RefreshState:
    origin: str
    timers: SoaTimers | None = None      # of the data held (None: nothing yet)
    confirmed_at: float | None = None    # the last time a primary confirmed that data
    next_check: float = 0.0
    expired: bool = False
    failures: int = 0                    # in a row, since the last success
    last_error: str | None = None
    _backoff: float = field(default=NO_DATA_RETRY, repr=False)

    @property
    def serial(self) -> int | None:
        return self.timers.serial if self.timers is not None else None

    @property
    def servable(self) -> bool:
        return self.timers is not None and not self.expired

    def expires_at(self) -> float | None:
        if self.timers is None or self.confirmed_at is None:
            return None
        return self.confirmed_at + self.timers.expire

    def loaded(self, now: float, timers: SoaTimers, confirmed_at: float) -> None:
        """Data read from the zone's file at start, last confirmed at `confirmed_at` (the
        file's mtime): it is served at once unless already past its expiry, and checked now."""
        self.timers = timers
        self.confirmed_at = min(confirmed_at, now)
        self.expired = now >= self.confirmed_at + timers.expire
        self.next_check = now

    def wants_transfer(self, primary_serial: int) -> bool:
        """The primary's SOA serial against ours: transfer when it is higher (RFC 1982) or
        when we hold nothing. A lower serial is not transferred (NSD and Knot keep theirs)."""
        if self.timers is None:
            return True
        return serial_compare(primary_serial, self.timers.serial) == 1

    def confirmed(self, now: float) -> None:
        """A primary answered a serial that is not higher: our data is current."""
        self._success(now)

    def transferred(self, now: float, timers: SoaTimers) -> None:
        """New data from a primary is installed."""
        self.timers = timers
        self._success(now)

    def _success(self, now: float) -> None:
        self.confirmed_at = now
        self.expired = False
        self.failures = 0
        self.last_error = None
        self._backoff = NO_DATA_RETRY
        self.next_check = now + self.timers.refresh

    def failed(self, now: float, error: str) -> bool:
        """No primary answered (or every transfer failed). Returns True when this made the
        zone expire."""
        self.failures += 1
        self.last_error = error
        if self.timers is None:
            self.next_check = now + self._backoff
            self._backoff = min(NO_DATA_RETRY_MAX, self._backoff * 2)
            return False
        self.next_check = now + self.timers.retry
        return self.tick(now)

    def tick(self, now: float) -> bool:
        """Time passed: True when the zone expired just now."""
        expires = self.expires_at()
        if not self.expired and expires is not None and now >= expires:
            self.expired = True
            return True
        return False

    def notified(self, now: float) -> None:
        """A NOTIFY (or an operator) asks for a check now."""
        self.next_check = now

    def wake_at(self) -> float:
        """When the manager must look at this zone again: the next check, or the expiry
        if that comes first."""
        expires = self.expires_at()
        if expires is not None and not self.expired:
            return min(self.next_check, expires)
        return self.next_check
