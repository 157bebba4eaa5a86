"""XML Schema simple types as the relay reads and writes them: xs:boolean, xs:duration, xs:dateTime.

Every time the relay writes is UTC with the ``Z`` indicator (Core "Basic Notification
Interface"); every time it reads may be absolute (xs:dateTime, a missing zone means UTC)
or relative (xs:duration).
"""

from __future__ import annotations

import datetime
import re

_DURATION = re.compile(
    r"^(?P<sign>-)?P(?:(?P<years>\d+)Y)?(?:(?P<months>\d+)M)?(?:(?P<days>\d+)D)?"
    r"(?:T(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?$"
)
_DATETIME = re.compile(
    r"^(?P<year>\d{4})-(?P<month>\d{2})-(?P<day>\d{2})T(?P<hour>\d{2}):(?P<minute>\d{2}):(?P<second>\d{2})"
    r"(?P<fraction>\.\d+)?(?P<zone>Z|[+-]\d{2}:\d{2})?$"
)
_UNITS = {"years": 365 * 86400.0, "months": 30 * 86400.0, "days": 86400.0, "hours": 3600.0, "minutes": 60.0}


def xs_bool(value: bool) -> str:
    """``value`` as an ``xs:boolean`` text."""
    return "true" if value else "false"


def format_duration(seconds: float) -> str:
    """An ``xs:duration`` for a number of seconds (``PT10S``, ``PT0.5S``)."""
    return f"PT{seconds:g}S"


def xs_datetime(seconds: float, milliseconds: bool = False) -> str:
    """An xs:dateTime in UTC with ``Z``, e.g. ``2023-11-14T22:13:20Z`` (or ``...20.123Z``)."""
    moment = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    if milliseconds:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_duration(text: str) -> float:
    """Seconds in an xs:duration (``PT60S``, ``PT1M``, ``P0DT0H1M0S``); raise ValueError if it is none.

    Years and months count as 365 and 30 days: no client waits that long.
    """
    match = _DURATION.match(text.strip())
    if match is None or text.strip().endswith(("P", "T")):
        raise ValueError(f"{text.strip()[:40]!r} is not an xs:duration")
    total = float(match.group("seconds") or 0)
    try:
        for unit, factor in _UNITS.items():
            total += int(match.group(unit) or 0) * factor
    except OverflowError:  # hundreds of digits: more than a float holds
        raise ValueError(f"{text.strip()[:40]!r} is too long a duration") from None
    return -total if match.group("sign") else total


def parse_datetime(text: str) -> float:
    """Seconds since the epoch of an xs:dateTime (no zone means UTC); raise ValueError if it is none."""
    match = _DATETIME.match(text.strip())
    if match is None:
        raise ValueError(f"{text.strip()[:40]!r} is not an xs:dateTime")
    zone_text = match.group("zone") or "Z"
    if zone_text == "Z":
        zone = datetime.timezone.utc
    else:
        sign = -1 if zone_text[0] == "-" else 1
        zone = datetime.timezone(sign * datetime.timedelta(hours=int(zone_text[1:3]), minutes=int(zone_text[4:6])))
    moment = datetime.datetime(
        int(match.group("year")),
        int(match.group("month")),
        int(match.group("day")),
        int(match.group("hour")),
        int(match.group("minute")),
        min(int(match.group("second")), 59),
        tzinfo=zone,
    )
    return moment.timestamp() + float(match.group("fraction") or 0)


def parse_time(text: str, now: float) -> float:
    """An AbsoluteOrRelativeTimeType value as seconds since the epoch (a duration counts from ``now``)."""
    stripped = text.strip()
    if stripped.startswith(("P", "-P")):
        return now + parse_duration(stripped)
    return parse_datetime(stripped)
