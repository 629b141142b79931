"""Import a scraped feed through the API (`POST /api/imports`, as service_role): a JSON file of items
(a list, or `{"items": [...]}`, fields as the API's ImportItem) or an iCalendar file, whose recurring
events (RRULE, RDATE, EXDATE) are imported one item per occurrence within the horizon. Prints a
progress bar and a summary.

    python -m localplus_dev.importer feed.ics --source bangkok-listings
    make import FILE=feed.json SOURCE=bangkok-listings
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import icalendar
from dateutil.rrule import rrule, rruleset, rrulestr
from tqdm import tqdm

from localplus_common.config import DEV_JWT_SECRET
from localplus_dev.token import mint

BATCH = 100
HORIZON = timedelta(days=365)
MAX_OCCURRENCES = 500
Item = dict[str, Any]


def items_from_json(text: str, source: str) -> list[Item]:
    loaded = json.loads(text)
    items: list[Item] = loaded["items"] if isinstance(loaded, dict) else loaded
    return [{"source": source} | item for item in items]


def items_from_ics(text: str, source: str, now: datetime) -> list[Item]:
    calendar = icalendar.Calendar.from_ical(text)
    items = []
    for event in calendar.walk("VEVENT"):
        starts = _moment(event.decoded("DTSTART"))
        ends = _moment(event.decoded("DTEND")) if "DTEND" in event else None
        length = ends - starts if ends else None
        base: Item = {
            "source": source,
            "title": str(event.get("SUMMARY", "")),
            "description": str(event.get("DESCRIPTION", "")),
            "venue_name": str(event.get("LOCATION", "")),
            "url": str(event.get("URL", "")),
            "raw": {"uid": str(event.get("UID", "")), "ics": event.to_ical().decode()[:4000]},
        }
        if "GEO" in event:
            latitude, longitude = event.decoded("GEO")
            base |= {"latitude": float(latitude), "longitude": float(longitude)}
        uid = str(event.get("UID", "")) or f"{base['title']}-{starts.isoformat()}"
        for occurrence in _occurrences(event, starts, now):
            item = base | {"external_id": f"{uid}/{occurrence.isoformat()}", "starts_at": occurrence.isoformat()}
            if length is not None:
                item["ends_at"] = (occurrence + length).isoformat()
            items.append(item)
    return items


def _moment(value: datetime | date) -> datetime:
    """An aware datetime; a date (an all-day event) is midnight UTC."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime(value.year, value.month, value.day, tzinfo=UTC)


def _occurrences(event: icalendar.cal.Component, starts: datetime, now: datetime) -> Iterator[datetime]:
    """The event's start, or its recurrences' within the horizon (at most MAX_OCCURRENCES)."""
    if "RRULE" not in event and "RDATE" not in event:
        yield starts
        return
    rules = rruleset()
    recurrences = event.get("RRULE") or []
    for rule in recurrences if isinstance(recurrences, list) else [recurrences]:
        parsed = rrulestr(rule.to_ical().decode(), dtstart=starts)
        assert isinstance(parsed, rrule), "one RRULE line is one rule"
        rules.rrule(parsed)
    for listing, add in (("RDATE", rules.rdate), ("EXDATE", rules.exdate)):
        values = event.get(listing) or []
        for group in values if isinstance(values, list) else [values]:
            for moment in group.dts:
                add(_moment(moment.dt))
    for count, occurrence in enumerate(rules.between(now, now + HORIZON, inc=True)):
        if count == MAX_OCCURRENCES:
            return
        yield occurrence


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("file", type=Path, help="a .json or .ics file")
    parser.add_argument("--source", required=True, help="the scraper's name, e.g. bangkok-listings")
    parser.add_argument("--gateway", default=os.environ.get("GATEWAY_URL", "http://127.0.0.1:8080"))
    parser.add_argument(
        "--token", default=os.environ.get("LOCALPLUS_SERVICE_TOKEN"), help="a service_role JWT (dev: minted)"
    )
    args = parser.parse_args(argv)
    text = args.file.read_text()
    now = datetime.now(UTC)
    items = items_from_ics(text, args.source, now) if args.file.suffix == ".ics" else items_from_json(text, args.source)
    token = args.token or mint(None, os.environ.get("SUPABASE_JWT_SECRET") or DEV_JWT_SECRET, role="service_role")
    outcomes: Counter[str] = Counter()
    headers = {"authorization": f"Bearer {token}"}
    with (
        httpx.Client(base_url=args.gateway, headers=headers, timeout=120) as client,
        tqdm(total=len(items), unit="item", file=sys.stderr) as progress,
    ):
        for start in range(0, len(items), BATCH):
            batch = items[start : start + BATCH]
            response = client.post("/api/imports", json={"items": batch})
            if response.status_code != 200:
                print(f"\nthe API refused the batch: {response.status_code} {response.text}", file=sys.stderr)
                return 1
            for result in response.json()["results"]:
                outcomes[result["result"].removeprefix("IMPORT_RESULT_").lower()] += 1
                if result["error"]:
                    tqdm.write(f"rejected {result['external_id']}: {result['error']}", file=sys.stderr)
            progress.update(len(batch))
    names = ("created", "updated", "unchanged", "duplicate", "rejected")
    print(", ".join(f"{outcomes[name]} {name}" for name in names) + f" of {len(items)} items")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
