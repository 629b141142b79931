"""How well scraped duplicates are told apart, on the labelled pairs of tests/data/duplicate_pairs.json
(English and Thai titles, punctuation and word-order variants, venues spelled differently, the same venue
on another night, another show at the same time): precision and recall of localplus_events.dedup."""

import json
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

from localplus_events.dedup import Sighting, evaluate, is_duplicate

PAIRS = Path(__file__).resolve().parents[1] / "tests" / "data" / "duplicate_pairs.json"


def labelled_pairs() -> list[dict[str, Any]]:
    pairs: list[dict[str, Any]] = json.loads(PAIRS.read_text())
    return pairs


def sighting(event: dict[str, Any]) -> Sighting:
    starts_at = datetime.fromisoformat(event["starts_at"])
    return Sighting(event["title"], event["venue_name"], starts_at, event["latitude"], event["longitude"])


def report() -> str:
    pairs = labelled_pairs()
    quality = evaluate([(sighting(p["a"]), sighting(p["b"]), p["duplicate"]) for p in pairs])
    missed = Counter(p["kind"] for p in pairs if is_duplicate(sighting(p["a"]), sighting(p["b"])) != p["duplicate"])
    lines = [
        f"dedup   {quality.pairs} labelled pairs: precision {quality.precision:.3f}, recall {quality.recall:.3f} "
        f"({quality.true_positives} duplicates found, {quality.false_positives} wrongly, "
        f"{quality.false_negatives} missed)"
    ]
    lines += [f"        wrong on {count}: {kind}" for kind, count in missed.most_common()]
    return "\n".join(lines)
