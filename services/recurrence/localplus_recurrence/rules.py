"""Recurrence rules: RFC 5545 RRULE, EXDATE and RDATE expanded into the instants an event takes place.

DTSTART is the event's `starts_at` as wall-clock time in its IANA `timezone`, and the rule is
expanded in that wall-clock time (python-dateutil), so a weekly 19:00 event stays at 19:00 local
time across daylight-saving changes. Each wall-clock instance becomes an instant with zoneinfo
exactly as RFC 5545 §3.3.5 says:
- a time that does not exist (spring forward) is read with the offset before the gap, so it lands
  that much later (01:30 on the night London skips 01:00-02:00 is 02:30 BST);
- a time that occurs twice (fall back) is the first of the two (fold=0, still summer time).
Two wall-clock instances can fall on one instant (an hourly rule across the gap): they are one
occurrence. EXDATEs and RDATEs are instants; an EXDATE that is no instance of the series is refused
rather than silently ignored (an EXDATE written as local time in another zone misses by hours).

Guards, so that no rule expands without bound: FREQ is at most HOURLY, every expansion stops at
the API's last instant (2200-01-01), and dateutil, which otherwise looks for a next instance up to
year 9999 (seconds of CPU for a rule that yields nothing), stops there too (`_BoundedDatetime`).
"""

from __future__ import annotations

import functools
import re
import types
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo, available_timezones

import icalendar
from dateutil import rrule as dateutil_rrule

from localplus_common.errors import ApiError, invalid_argument
from localplus_common.requests import LATEST_TIMESTAMP

FIELD = "recurrence.rrule"
MAX_RULE_LENGTH = 500
MAX_DATES = 1000
# The most instances one expansion walks through before the window it wants (a dense rule that began
# long ago), and the most occurrences a series keeps materialised at once.
MAX_SCANNED = 100_000
ALLOWED_PARTS = {
    "FREQ", "UNTIL", "COUNT", "INTERVAL", "BYMINUTE", "BYHOUR", "BYDAY", "BYMONTHDAY", "BYYEARDAY",
    "BYWEEKNO", "BYMONTH", "BYSETPOS", "WKST",
}  # fmt: skip
FREQUENCIES = ("YEARLY", "MONTHLY", "WEEKLY", "DAILY", "HOURLY")
PART = re.compile(r"^[A-Z]+=[A-Z0-9,+\-]+$")
UNTIL_FORMS = (("%Y%m%dT%H%M%SZ", "utc"), ("%Y%m%dT%H%M%S", "local"), ("%Y%m%d", "date"))
# RFC 5545 §3.3.10's ranges for the numeric parts, as (lowest, highest, may count from the end with a
# minus). dateutil takes INTERVAL=0, INTERVAL=-1 or BYMONTHDAY=0 and then finds nothing, loops or fails
# mid-expansion (a stored rule with no occurrence, or a 500), so they are refused before it sees them.
POSITIVE_PARTS = ("COUNT", "INTERVAL")
# Their largest: more than an hourly series holds up to the API's last year, and well inside RFC 5545's
# INTEGER (a COUNT of 20 digits was stored, and then every calendar.ics of it was a 500).
MAX_PART = 1_000_000
NUMBER_LISTS = {
    "BYMINUTE": (0, 59, False), "BYHOUR": (0, 23, False), "BYMONTHDAY": (1, 31, True),
    "BYYEARDAY": (1, 366, True), "BYWEEKNO": (1, 53, True), "BYMONTH": (1, 12, False),
    "BYSETPOS": (1, 366, True),
}  # fmt: skip
NUMBER = re.compile(r"[+-]?[0-9]{1,3}")
# RFC 5545's weekdaynum: an optional ordinal (1 to 53, from the end with a minus) and a weekday. In a
# MONTHLY rule it counts within the month, which has at most five of each (dateutil fails on an 8th).
WEEKDAY = re.compile(r"(?:[+-]?([0-9]{1,2}))?(MO|TU|WE|TH|FR|SA|SU)")


class _BoundedDatetime(types.ModuleType):
    """The `datetime` module as dateutil.rrule sees it, with MAXYEAR at the API's last year: dateutil
    gives up looking for the next instance only past MAXYEAR, and checks UNTIL only on instances."""

    MAXYEAR = LATEST_TIMESTAMP.year

    def __getattr__(self, name: str) -> object:
        import datetime as real

        return getattr(real, name)


dateutil_rrule.datetime = _BoundedDatetime("datetime")


@dataclass(frozen=True)
class Recurrence:
    """What an event stores: the rule (normalised, without the RRULE: prefix) and two lists of instants."""

    rrule: str
    exdates: tuple[datetime, ...] = ()
    rdates: tuple[datetime, ...] = ()


@dataclass(frozen=True)
class Schedule:
    """When an event takes place: its first start and end, its zone, and how it recurs (None: once)."""

    starts_at: datetime
    ends_at: datetime
    timezone: str
    recurrence: Recurrence | None = None

    @property
    def duration(self) -> timedelta:
        return self.ends_at - self.starts_at

    @property
    def fingerprint(self) -> str:
        """Everything the occurrences are built from, as text: equal fingerprints, equal occurrences."""
        recurrence = self.recurrence
        parts = [self.starts_at.astimezone(UTC).isoformat(), self.ends_at.astimezone(UTC).isoformat(), self.timezone]
        if recurrence is not None:
            parts += [recurrence.rrule, *(f"-{d.astimezone(UTC).isoformat()}" for d in sorted(recurrence.exdates))]
            parts += [f"+{d.astimezone(UTC).isoformat()}" for d in sorted(recurrence.rdates)]
        return "|".join(parts)


@functools.cache
def _zone(name: str) -> ZoneInfo:
    # Looked up in zoneinfo's list first: a name is never opened as a path (see localplus_events.domain).
    if name not in available_timezones():
        raise invalid_argument("timezone", f"timezone {name[:64]!r} is not an IANA time zone")
    return ZoneInfo(name)


def to_instant(wall: datetime, zone: ZoneInfo) -> datetime:
    """A wall-clock time in `zone` as an instant (RFC 5545 §3.3.5): fold=0 reads a repeated time as
    the first of the two and a skipped one with the offset before the gap (so it moves forward)."""
    return wall.replace(tzinfo=zone, fold=0).astimezone(UTC)


def to_wall(instant: datetime, zone: ZoneInfo) -> datetime:
    return instant.astimezone(zone).replace(tzinfo=None, fold=0)


def normalise_rule(text: str) -> str:
    """The rule as stored: upper case, no `RRULE:` prefix, no spaces; 400 for anything but one RRULE."""
    rule = text.strip().upper().removeprefix("RRULE:")
    if not rule:
        raise invalid_argument(FIELD, "recurrence.rrule is required, e.g. FREQ=WEEKLY;BYDAY=TU")
    if len(rule) > MAX_RULE_LENGTH:
        raise invalid_argument(FIELD, f"recurrence.rrule is longer than {MAX_RULE_LENGTH} characters")
    names = []
    for part in rule.split(";"):
        if not PART.match(part):
            raise invalid_argument(FIELD, f"recurrence.rrule part {part[:40]!r} is not NAME=VALUE (RFC 5545)")
        name, _, value = part.partition("=")
        if name in ("DTSTART", "TZID", "BYSECOND"):
            raise invalid_argument(FIELD, f"{name} is not allowed in recurrence.rrule; starts_at and timezone set it")
        if name not in ALLOWED_PARTS:
            raise invalid_argument(FIELD, f"recurrence.rrule has an unknown part {name[:20]!r}")
        if name in names:
            raise invalid_argument(FIELD, f"recurrence.rrule names {name} twice")
        names.append(name)
        if name == "FREQ" and value in ("SECONDLY", "MINUTELY"):
            raise invalid_argument(FIELD, f"FREQ={value} is not allowed: events recur at most hourly")
        if name == "FREQ" and value not in FREQUENCIES:
            raise invalid_argument(FIELD, f"FREQ must be one of {', '.join(FREQUENCIES)}")
        if name in POSITIVE_PARTS and not (value.isdigit() and 0 < int(value) <= MAX_PART):
            raise invalid_argument(
                FIELD, f"{name} must be a positive integer (RFC 5545) up to {MAX_PART:,}, e.g. {name}=2"
            )
        if name in NUMBER_LISTS:
            _check_numbers(name, value)
    if "FREQ" not in names:
        raise invalid_argument(FIELD, "recurrence.rrule needs FREQ, e.g. FREQ=WEEKLY")
    parts = dict(part.split("=", 1) for part in rule.split(";"))
    if "BYDAY" in parts:
        _check_weekdays(parts["BYDAY"], parts["FREQ"] == "MONTHLY")
    if "COUNT" in names and "UNTIL" in names:
        raise invalid_argument(FIELD, "recurrence.rrule may have COUNT or UNTIL, not both (RFC 5545)")
    return rule


def _check_numbers(name: str, value: str) -> None:
    """A BY part's comma-separated numbers, each within RFC 5545's range for it."""
    lowest, highest, from_the_end = NUMBER_LISTS[name]
    for number in value.split(","):
        # A sign only where the grammar has one (BYHOUR=-0 is no hour); -0 is below 1 where it does.
        well_formed = NUMBER.fullmatch(number) and (from_the_end or number[0].isdigit())
        if well_formed and lowest <= abs(int(number)) <= highest:
            continue
        allowed = f"{lowest} to {highest}" + (f" or -{highest} to -{lowest}" if from_the_end else "")
        raise invalid_argument(FIELD, f"{name} must be {allowed} (RFC 5545), not {number[:10]!r}")


def _check_weekdays(value: str, monthly: bool) -> None:
    highest = 5 if monthly else 53
    for weekday in value.split(","):
        matched = WEEKDAY.fullmatch(weekday)
        if matched is None:
            example = "each with an optional number (1MO, -1FR)"
            raise invalid_argument(FIELD, f"BYDAY must be weekdays (MO to SU), {example}, not {weekday[:10]!r}")
        if matched[1] is not None and not 1 <= int(matched[1]) <= highest:
            where = " in a MONTHLY rule (a month has at most five of each)" if monthly else ""
            raise invalid_argument(
                FIELD, f"BYDAY must be weekdays numbered 1 to {highest} or -{highest} to -1{where}, not {weekday!r}"
            )


def _until(value: str, zone: ZoneInfo) -> datetime:
    """UNTIL as wall-clock time in the event's zone: UTC (RFC 5545's form for zoned DTSTARTs)
    converted, a floating time taken as local, a date meaning the end of that local day."""
    for form, kind in UNTIL_FORMS:
        try:
            parsed = datetime.strptime(value, form)
        except ValueError:
            continue
        if kind == "utc":
            return to_wall(parsed.replace(tzinfo=UTC), zone)
        if kind == "date":
            return datetime.combine(parsed.date(), time(23, 59, 59))
        return parsed
    raise invalid_argument(FIELD, "UNTIL must be a UTC time (20261231T235959Z) or a date (20261231)")


@dataclass(frozen=True)
class Series:
    """A schedule ready to expand."""

    schedule: Schedule
    zone: ZoneInfo
    rule: dateutil_rrule.rrule | None  # None: a one-off event
    exdates: frozenset[datetime]
    rdates: tuple[datetime, ...]

    def _rule_walls(self, until: datetime) -> Iterator[datetime]:
        """The rule's wall-clock instances up to `until`. UNTIL bounds dateutil's search too (it
        otherwise runs on through a stretch with no instance), except with COUNT, which dateutil
        will not combine with UNTIL."""
        if self.rule is None:
            yield to_wall(self.schedule.starts_at, self.zone)
            return
        bounded = self.rule
        if bounded._count is None and (bounded._until is None or bounded._until > until):
            bounded = bounded.replace(until=until)
        for wall in bounded:
            if wall > until:
                return
            yield wall

    def instants(self, start: datetime, end: datetime, limit: int) -> list[datetime]:
        """Original starts of the occurrences in [start, end), at most `limit` of them, in order."""
        end = min(end, LATEST_TIMESTAMP)
        # A little past `end` in wall-clock time, so that instances moved forward by a gap are seen.
        until = to_wall(end, self.zone) + timedelta(hours=3)
        found: set[datetime] = set()
        for scanned, wall in enumerate(self._rule_walls(until)):
            if scanned >= MAX_SCANNED:
                raise Unexpandable.of(
                    invalid_argument(
                        FIELD, f"the series has more than {MAX_SCANNED} occurrences before the ones asked for"
                    )
                )
            instant = to_instant(wall, self.zone)
            if instant >= end:
                break
            if instant >= start and instant not in self.exdates:
                found.add(instant)
                if len(found) >= limit:
                    break
        found.update(d for d in self.rdates if start <= d < end and d not in self.exdates)
        return sorted(found)[:limit]

    def rule_yields(self, instant: datetime) -> bool:
        """Whether the rule itself has an instance at `instant` (not only an RDATE)."""
        rule_only = Series(self.schedule, self.zone, self.rule, frozenset(), ())
        return bool(rule_only.instants(instant, instant + timedelta(microseconds=1), 1))


def compile_schedule(schedule: Schedule) -> Series:
    """Parse a schedule (400 naming the field for anything wrong with its recurrence)."""
    zone = _zone(schedule.timezone)
    recurrence = schedule.recurrence
    if recurrence is None:
        return Series(schedule, zone, None, frozenset(), ())
    parts = dict(part.split("=", 1) for part in normalise_rule(recurrence.rrule).split(";"))
    until = _until(parts.pop("UNTIL"), zone) if "UNTIL" in parts else None
    dtstart = to_wall(schedule.starts_at, zone)
    try:
        rule = dateutil_rrule.rrulestr(";".join(f"{k}={v}" for k, v in parts.items()), dtstart=dtstart, cache=False)
        assert isinstance(rule, dateutil_rrule.rrule)
        if until is not None:
            rule = rule.replace(until=until)
    except (ValueError, OverflowError) as error:
        raise invalid_argument(FIELD, f"recurrence.rrule is not a valid RRULE: {str(error)[:120]}") from None
    for name, dates in (("exdates", recurrence.exdates), ("rdates", recurrence.rdates)):
        if len(dates) > MAX_DATES:
            raise invalid_argument(f"recurrence.{name}", f"recurrence.{name} may hold at most {MAX_DATES} times")
    return Series(schedule, zone, rule, frozenset(recurrence.exdates), tuple(sorted(set(recurrence.rdates))))


class Unexpandable(ApiError):
    """A schedule the service cannot expand, saying why: the 400 a request with it gets (the field and
    message of the check it fails), and what the feeds and the horizon job log for a stored one."""

    @classmethod
    def of(cls, error: ApiError) -> Unexpandable:
        return cls(error.code, error.message, error.reason, error.field)


def expandable(schedule: Schedule) -> Series:
    """The schedule ready to expand, or Unexpandable naming what is wrong with it. The SQL checks hold a
    stored rule's shape only, so one written through Supabase's REST may be a rule the API refuses
    (BYDAY=XX, a 20-digit COUNT), or that iCalendar cannot write as the feeds' RRULE; both the calendar
    feeds and the horizon job ask this one question of what they read. (An expansion that would scan
    more than MAX_SCANNED instances raises Unexpandable as well, from Series.instants.)"""
    try:
        series = compile_schedule(schedule)
    except ApiError as error:
        raise Unexpandable.of(error) from None
    except (ValueError, OverflowError) as error:
        raise Unexpandable.of(invalid_argument(FIELD, f"the schedule cannot be expanded: {str(error)[:120]}")) from None
    if schedule.recurrence is not None:
        try:
            icalendar.vRecur.from_ical(schedule.recurrence.rrule)
        except ValueError as error:
            message = f"recurrence.rrule is not an iCalendar RECUR (RFC 5545): {str(error)[:120]}"
            raise Unexpandable.of(invalid_argument(FIELD, message)) from None
    return series


def validate(schedule: Schedule) -> Series:
    """Check that a schedule makes sense before it is stored: DTSTART is the rule's first instance
    (RFC 5545 leaves other sets undefined), every EXDATE is an instance, something is left."""
    series = compile_schedule(schedule)
    if series.rule is None:
        return series
    zone = series.zone
    dtstart = to_wall(schedule.starts_at, zone)
    first = next(iter(series._rule_walls(dtstart + timedelta(days=1))), None)
    if first is None or first > dtstart:
        if next(iter(series._rule_walls(to_wall(LATEST_TIMESTAMP, zone))), None) is None:
            raise invalid_argument(FIELD, "recurrence.rrule yields no occurrence at all")
        raise invalid_argument(
            FIELD,
            f"starts_at ({dtstart:%a %Y-%m-%d %H:%M} in {schedule.timezone}) must be the rule's first occurrence",
        )
    for i, rdate in enumerate(series.rdates):
        if rdate < schedule.starts_at:
            raise invalid_argument(f"recurrence.rdates[{i}]", "recurrence.rdates must not be before starts_at")
    if series.exdates:
        last = max(series.exdates) + timedelta(seconds=1)
        rule_only = Series(schedule, zone, series.rule, frozenset(), series.rdates)
        instances = set(rule_only.instants(schedule.starts_at, last, MAX_SCANNED))
        for i, exdate in enumerate(sorted(series.exdates)):
            if exdate not in instances:
                raise invalid_argument(
                    f"recurrence.exdates[{i}]",
                    f"recurrence.exdates[{i}] ({exdate.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}, "
                    f"{to_wall(exdate, zone):%Y-%m-%d %H:%M} in {schedule.timezone}) is not an occurrence of "
                    "the series; exdates are instants, e.g. the occurrence's starts_at",
                )
    if not series.instants(schedule.starts_at, LATEST_TIMESTAMP, 1):
        raise invalid_argument("recurrence.exdates", "recurrence.exdates leave no occurrence")
    return series


def split_rules(series: Series, split_at: datetime) -> tuple[str, str]:
    """The rule of the part before `split_at` (UNTIL just before it) and of the part from it on (COUNT
    reduced by the instances before it), for "this and following" edits."""
    assert series.schedule.recurrence is not None
    parts = dict(part.split("=", 1) for part in series.schedule.recurrence.rrule.split(";"))
    before = {k: v for k, v in parts.items() if k not in ("COUNT", "UNTIL")}
    before["UNTIL"] = (split_at - timedelta(seconds=1)).astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    after = dict(parts)
    if "COUNT" in parts:
        rule_only = Series(series.schedule, series.zone, series.rule, frozenset(), ())
        done = len(rule_only.instants(series.schedule.starts_at, split_at, MAX_SCANNED))
        after["COUNT"] = str(int(parts["COUNT"]) - done)
    return _join(before), _join(after)


def with_utc_until(rule: str, zone: ZoneInfo) -> str:
    """The rule with a date or floating UNTIL written as the UTC instant it means here, the form RFC
    5545 asks beside a DTSTART with a time zone (calendar clients read the others each their own way)."""
    parts = dict(part.split("=", 1) for part in rule.split(";"))
    if "UNTIL" not in parts or parts["UNTIL"].endswith("Z"):
        return rule
    parts["UNTIL"] = to_instant(_until(parts["UNTIL"], zone), zone).strftime("%Y%m%dT%H%M%SZ")
    return _join(parts)


def _join(parts: dict[str, str]) -> str:
    return ";".join(f"{k}={v}" for k, v in parts.items())


def shift(instant: datetime, by: timedelta, zone: ZoneInfo) -> datetime:
    """`instant` moved by a wall-clock difference in `zone` (19:00 + 1 h is 20:00 on both sides of DST)."""
    return to_instant(to_wall(instant, zone) + by, zone)
