"""Which zone a reload serves: the rule, without I/O (the service reads and parses the files).

A zone file is parsed again only when its content changed (`zone_fingerprint`: its bytes and
those of the files it $INCLUDEs). A changed file is then judged by its SOA serial against the
zone that serves now, with RFC 1982 serial arithmetic (a serial that wrapped past 2**32 - 1 is
higher, not lower):

- higher: the new zone serves;
- lower, or exactly 2**31 away (RFC 1982 leaves that undefined): refused with a warning naming
  the file and both serials; the running zone keeps serving. NSD and Knot refuse a zone file
  whose serial went back (a secondary that already holds the higher serial would never
  transfer it, so the primary and its secondaries would disagree for good);
- the same serial with different content: served, with a warning that the serial was not
  raised. Knot (zonefile-load: whole) and NSD load a changed file whatever its serial; the
  warning is there because secondaries compare serials and will not see the change.

A zone new to the config is served as it is; a zone that left the config is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgeway.dns.zone import Zone, serial_compare


@dataclass(frozen=True)
class Verdict:
    zone: Zone                 # the zone to serve (the running one when the new one is refused)
    changed: bool              # the zone served changes (new data)
    warning: str | None = None


def judge(running: Zone | None, loaded: Zone) -> Verdict:
    """The rule above, for a file whose content changed and parsed as `loaded`."""
    if running is None:
        return Verdict(loaded, True)
    order = serial_compare(loaded.serial, running.serial)
    where = f"{loaded.path}: zone {loaded.origin}"
    if order is None:
        return Verdict(running, False, (
            f"{where}: serial {loaded.serial} is exactly 2**31 away from the running serial "
            f"{running.serial}: neither higher nor lower (RFC 1982); not loaded, the running zone "
            f"keeps serving: raise the serial to publish this file"))
    if order < 0:
        return Verdict(running, False, (
            f"{where}: serial {loaded.serial} is lower than the running serial {running.serial} "
            f"(RFC 1982): not loaded, the running zone keeps serving: raise the serial above "
            f"{running.serial} to publish this file"))
    if order == 0:
        return Verdict(loaded, True, (
            f"{where}: the file changed but its serial {loaded.serial} did not: loaded, but "
            f"secondaries compare serials and will keep the old data: raise the serial"))
    return Verdict(loaded, True)
