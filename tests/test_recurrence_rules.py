"""Expansion of recurrence rules against hand-checked dates (localplus_recurrence.rules), with no
database: daily, weekly on several days, monthly by weekday, last day of the month, UNTIL and COUNT,
EXDATE and RDATE, series across daylight-saving changes in Europe/London and America/New_York, and
Asia/Bangkok (no DST); bad rules are clear 400s, quickly."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import grpc
import pytest

from localplus_common.errors import ApiError
from localplus_recurrence.rules import Recurrence, Schedule, split_rules, validate

FAR = datetime(2199, 1, 1, tzinfo=UTC)


def local(zone: str, year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=ZoneInfo(zone)).astimezone(UTC)


def expand(
    zone: str, start: datetime, rule: str, *, hours: int = 2, limit: int = 500, **dates: list[datetime]
) -> list[datetime]:
    schedule = Schedule(
        start, start + timedelta(hours=hours), zone, Recurrence(rule, **{k: tuple(v) for k, v in dates.items()})
    )
    return validate(schedule).instants(start, FAR, limit)


def walls(zone: str, instants: list[datetime]) -> list[str]:
    return [i.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M %Z") for i in instants]


def test_daily_with_count() -> None:
    got = expand("Asia/Bangkok", local("Asia/Bangkok", 2027, 1, 30, 18), "FREQ=DAILY;COUNT=4")
    assert walls("Asia/Bangkok", got) == [
        "2027-01-30 18:00 +07", "2027-01-31 18:00 +07", "2027-02-01 18:00 +07", "2027-02-02 18:00 +07",
    ]  # fmt: skip


def test_weekly_on_several_days_until() -> None:
    # From Tuesday 2027-03-02; UNTIL in UTC (RFC 5545's form) is inclusive: 2027-03-11 19:00 +07 is 12:00Z.
    start = local("Asia/Bangkok", 2027, 3, 2, 19)
    got = expand("Asia/Bangkok", start, "FREQ=WEEKLY;BYDAY=TU,TH,SA;UNTIL=20270311T120000Z")
    assert walls("Asia/Bangkok", got) == [
        "2027-03-02 19:00 +07", "2027-03-04 19:00 +07", "2027-03-06 19:00 +07", "2027-03-09 19:00 +07",
        "2027-03-11 19:00 +07",
    ]  # fmt: skip
    earlier = expand("Asia/Bangkok", start, "FREQ=WEEKLY;BYDAY=TU,TH,SA;UNTIL=20270311T115959Z")
    assert walls("Asia/Bangkok", earlier)[-1] == "2027-03-09 19:00 +07"
    # A date UNTIL means the end of that local day.
    by_date = expand("Asia/Bangkok", start, "FREQ=WEEKLY;BYDAY=TU,TH,SA;UNTIL=20270311")
    assert walls("Asia/Bangkok", by_date)[-1] == "2027-03-11 19:00 +07"


def test_monthly_on_the_second_tuesday() -> None:
    got = expand("Asia/Bangkok", local("Asia/Bangkok", 2027, 1, 12, 19), "FREQ=MONTHLY;BYDAY=2TU;COUNT=5")
    assert [d[:10] for d in walls("Asia/Bangkok", got)] == [
        "2027-01-12", "2027-02-09", "2027-03-09", "2027-04-13", "2027-05-11",
    ]  # fmt: skip


def test_last_day_of_the_month() -> None:
    got = expand("Asia/Bangkok", local("Asia/Bangkok", 2027, 1, 31, 9), "FREQ=MONTHLY;BYMONTHDAY=-1;COUNT=4")
    assert [d[:10] for d in walls("Asia/Bangkok", got)] == ["2027-01-31", "2027-02-28", "2027-03-31", "2027-04-30"]
    leap = expand("Asia/Bangkok", local("Asia/Bangkok", 2028, 1, 31, 9), "FREQ=MONTHLY;BYMONTHDAY=-1;COUNT=2")
    assert [d[:10] for d in walls("Asia/Bangkok", leap)] == ["2028-01-31", "2028-02-29"]


def test_exdates_and_rdates() -> None:
    start = local("Asia/Bangkok", 2027, 1, 4, 19)  # a Monday
    skipped = local("Asia/Bangkok", 2027, 1, 11, 19)
    extra = local("Asia/Bangkok", 2027, 1, 13, 10)
    got = expand("Asia/Bangkok", start, "FREQ=WEEKLY;COUNT=3", exdates=[skipped], rdates=[extra])
    assert walls("Asia/Bangkok", got) == ["2027-01-04 19:00 +07", "2027-01-13 10:00 +07", "2027-01-18 19:00 +07"]


def test_weekly_19_00_stays_19_00_across_dst_in_london_and_new_york() -> None:
    london = expand("Europe/London", local("Europe/London", 2027, 3, 16, 19), "FREQ=WEEKLY;COUNT=3")
    assert walls("Europe/London", london) == ["2027-03-16 19:00 GMT", "2027-03-23 19:00 GMT", "2027-03-30 19:00 BST"]
    assert [i.hour for i in london] == [19, 19, 18]  # in UTC the time moves, locally it does not
    autumn = expand("Europe/London", local("Europe/London", 2027, 10, 26, 19), "FREQ=WEEKLY;COUNT=2")
    assert walls("Europe/London", autumn) == ["2027-10-26 19:00 BST", "2027-11-02 19:00 GMT"]
    new_york = expand("America/New_York", local("America/New_York", 2027, 3, 7, 19), "FREQ=WEEKLY;COUNT=2")
    assert walls("America/New_York", new_york) == ["2027-03-07 19:00 EST", "2027-03-14 19:00 EDT"]
    fall = expand("America/New_York", local("America/New_York", 2027, 10, 31, 19), "FREQ=WEEKLY;COUNT=2")
    assert walls("America/New_York", fall) == ["2027-10-31 19:00 EDT", "2027-11-07 19:00 EST"]


def test_nonexistent_times_move_forward_past_the_gap() -> None:
    # London skips 01:00-02:00 on 2027-03-28: a daily 01:30 is 02:30 BST that night (RFC 5545 §3.3.5).
    got = expand("Europe/London", local("Europe/London", 2027, 3, 27, 1, 30), "FREQ=DAILY;COUNT=3", hours=1)
    assert walls("Europe/London", got) == ["2027-03-27 01:30 GMT", "2027-03-28 02:30 BST", "2027-03-29 01:30 BST"]
    # New York skips 02:00-03:00 on 2027-03-14.
    ny = expand("America/New_York", local("America/New_York", 2027, 3, 13, 2, 30), "FREQ=DAILY;COUNT=2", hours=1)
    assert walls("America/New_York", ny) == ["2027-03-13 02:30 EST", "2027-03-14 03:30 EDT"]


def test_ambiguous_times_are_the_first_of_the_two() -> None:
    # New York repeats 01:00-02:00 on 2027-11-07: 01:30 is the first one, still EDT.
    got = expand("America/New_York", local("America/New_York", 2027, 11, 6, 1, 30), "FREQ=DAILY;COUNT=2", hours=1)
    assert walls("America/New_York", got) == ["2027-11-06 01:30 EDT", "2027-11-07 01:30 EDT"]
    # An hourly rule through the repeated hour has it once, and two wall times on one instant are one.
    hourly = expand("Europe/London", local("Europe/London", 2027, 3, 28, 0, 30), "FREQ=HOURLY;COUNT=4", hours=1)
    assert walls("Europe/London", hourly) == ["2027-03-28 00:30 GMT", "2027-03-28 02:30 BST", "2027-03-28 03:30 BST"]


def test_bangkok_has_no_dst() -> None:
    got = expand("Asia/Bangkok", local("Asia/Bangkok", 2027, 3, 23, 19), "FREQ=WEEKLY;COUNT=3")
    assert {i.hour for i in got} == {12}


def test_an_unbounded_rule_stops_at_the_window() -> None:
    start = local("Asia/Bangkok", 2027, 1, 1, 8)
    got = expand("Asia/Bangkok", start, "FREQ=DAILY", limit=100_000)
    assert got[-1] < FAR and len(got) > 60_000  # to the window's end, never beyond
    assert len(expand("Asia/Bangkok", start, "FREQ=HOURLY", limit=1000)) == 1000


def test_split_rules() -> None:
    schedule = Schedule(local("Europe/London", 2027, 3, 2, 19), local("Europe/London", 2027, 3, 2, 21),
                        "Europe/London", Recurrence("FREQ=WEEKLY;BYDAY=TU;COUNT=6"))  # fmt: skip
    before, after = split_rules(validate(schedule), local("Europe/London", 2027, 3, 16, 19))
    assert before == "FREQ=WEEKLY;BYDAY=TU;UNTIL=20270316T185959Z"
    assert after == "FREQ=WEEKLY;BYDAY=TU;COUNT=4"


BAD = [
    ("not-a-rule", "recurrence.rrule", "NAME=VALUE"),
    ("FREQ=FORTNIGHTLY", "recurrence.rrule", "FREQ must be"),
    ("FREQ=SECONDLY", "recurrence.rrule", "at most hourly"),
    ("FREQ=MINUTELY;COUNT=5", "recurrence.rrule", "at most hourly"),
    ("FREQ=DAILY;COUNT=3;UNTIL=20271231T000000Z", "recurrence.rrule", "not both"),
    ("FREQ=DAILY;DTSTART=20270101T000000", "recurrence.rrule", "DTSTART"),
    ("FREQ=WEEKLY;BYDAY=XX", "recurrence.rrule", "BYDAY must be weekdays (MO to SU)"),
    ("FREQ=DAILY;UNTIL=tomorrow", "recurrence.rrule", "UNTIL must be"),
    ("FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30", "recurrence.rrule", "no occurrence"),
    ("FREQ=DAILY;BYMONTH=2;BYMONTHDAY=30", "recurrence.rrule", "no occurrence"),
    ("FREQ=HOURLY;BYMONTH=4;BYMONTHDAY=31", "recurrence.rrule", "no occurrence"),
    ("FREQ=WEEKLY;BYDAY=WE", "recurrence.rrule", "first occurrence"),  # starts on a Tuesday
    ("FREQ=DAILY;UNTIL=20260101T000000Z", "recurrence.rrule", "no occurrence"),  # ends before it starts
    # RFC 5545 ranges dateutil does not enforce: it takes them and then loops over nothing or fails mid-way.
    ("FREQ=DAILY;INTERVAL=0", "recurrence.rrule", "INTERVAL must be a positive integer"),
    ("FREQ=WEEKLY;INTERVAL=-1", "recurrence.rrule", "INTERVAL must be a positive integer"),
    ("FREQ=DAILY;INTERVAL=+2", "recurrence.rrule", "INTERVAL must be a positive integer"),
    ("FREQ=DAILY;COUNT=0", "recurrence.rrule", "COUNT must be a positive integer"),
    ("FREQ=DAILY;COUNT=99999999999999999999", "recurrence.rrule", "COUNT must be a positive integer"),
    ("FREQ=DAILY;INTERVAL=1000001", "recurrence.rrule", "INTERVAL must be a positive integer"),
    ("FREQ=DAILY;COUNT=-3", "recurrence.rrule", "COUNT must be a positive integer"),
    ("FREQ=MONTHLY;BYMONTHDAY=0", "recurrence.rrule", "BYMONTHDAY must be 1 to 31 or -31 to -1"),
    ("FREQ=YEARLY;BYMONTH=13", "recurrence.rrule", "BYMONTH must be 1 to 12"),
    ("FREQ=YEARLY;BYWEEKNO=54", "recurrence.rrule", "BYWEEKNO must be 1 to 53 or -53 to -1"),
    ("FREQ=YEARLY;BYYEARDAY=-0", "recurrence.rrule", "BYYEARDAY must be 1 to 366 or -366 to -1"),
    ("FREQ=DAILY;BYHOUR=-1", "recurrence.rrule", "BYHOUR must be 0 to 23"),
    # A month has at most five of a weekday; dateutil failed on an 8th (IndexError, a 500).
    ("FREQ=MONTHLY;BYDAY=8TU", "recurrence.rrule", "BYDAY must be weekdays numbered 1 to 5 or -5 to -1"),
    ("FREQ=MONTHLY;BYDAY=1TU,53TU", "recurrence.rrule", "BYDAY must be weekdays numbered 1 to 5 or -5 to -1"),
    ("FREQ=YEARLY;BYDAY=54MO", "recurrence.rrule", "BYDAY must be weekdays numbered 1 to 53 or -53 to -1"),
    ("FREQ=YEARLY;BYDAY=+MO", "recurrence.rrule", "BYDAY must be weekdays (MO to SU)"),
    ("", "recurrence.rrule", "required"),
    ("X" * 600, "recurrence.rrule", "longer than"),
]


@pytest.fixture(scope="module")
def unbounded_search_seconds() -> float:
    """What `_BoundedDatetime` prevents, timed on this machine as it is loaded now: dateutil's own search
    for the next instance of a rule that yields nothing runs to the year 9999."""
    import datetime as real

    from dateutil import rrule

    patched = rrule.datetime
    rrule.datetime = real
    try:
        started = time.monotonic()
        assert list(rrule.rrulestr("FREQ=DAILY;BYMONTH=2;BYMONTHDAY=30", dtstart=datetime(2027, 1, 1))) == []
        return time.monotonic() - started
    finally:
        rrule.datetime = patched


def test_without_the_bound_dateutil_searches_an_empty_rule_for_seconds(unbounded_search_seconds: float) -> None:
    assert unbounded_search_seconds > 1


@pytest.mark.parametrize(("rule", "field", "message"), BAD, ids=[b[0][:30] or "empty" for b in BAD])
def test_bad_rules_are_400s_and_quick(rule: str, field: str, message: str, unbounded_search_seconds: float) -> None:
    started = time.monotonic()
    with pytest.raises(ApiError) as raised:
        expand("Europe/London", local("Europe/London", 2027, 3, 2, 19), rule)
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.field == field
    assert message in raised.value.message
    # Relative to the unbounded daily search in the same run, so a loaded machine does not fail it: an hourly
    # rule searched to 9999 would take some 24 times as long as that.
    elapsed = time.monotonic() - started
    assert elapsed < unbounded_search_seconds / 2, "a rule that yields nothing must not be searched until year 9999"


def test_an_exdate_in_another_zone_is_a_400_naming_it() -> None:
    start = local("Europe/London", 2027, 6, 1, 19)  # 18:00Z
    # The client meant "19:00 on 8 June" but wrote it in UTC: no occurrence starts then.
    with pytest.raises(ApiError) as raised:
        expand("Europe/London", start, "FREQ=WEEKLY", exdates=[datetime(2027, 6, 8, 19, tzinfo=UTC)])
    assert raised.value.field == "recurrence.exdates[0]"
    assert "2027-06-08 20:00 in Europe/London" in raised.value.message
    assert expand("Europe/London", start, "FREQ=WEEKLY;COUNT=2", exdates=[start + timedelta(days=7)]) == [start]


def test_exdates_that_leave_nothing_are_a_400() -> None:
    start = local("Asia/Bangkok", 2027, 1, 4, 19)
    with pytest.raises(ApiError) as raised:
        expand("Asia/Bangkok", start, "FREQ=WEEKLY;COUNT=2", exdates=[start, start + timedelta(days=7)])
    assert "leave no occurrence" in raised.value.message
