"""How likely two events are the same one: a scraped item and an event we have (or another import).

Three signals, each 0 to 1: the titles (normalised: lower case, punctuation and spacing gone, word
order ignored; Thai, written without spaces, compared as a whole), the venues (by distance when both
have coordinates, else by name), and the start times (the same night or not). An item is a likely
duplicate only when all three agree enough: the same venue on another night is another event, and so
is a different show at the same venue and time. `make bench` prints precision and recall over the
labelled pairs in tests/data/duplicate_pairs.json."""

import math
import unicodedata
from dataclasses import dataclass
from datetime import datetime

from rapidfuzz import fuzz

# Weights of title, venue and time in the score, and the bars each must clear.
TITLE_WEIGHT, VENUE_WEIGHT, TIME_WEIGHT = 0.5, 0.3, 0.2
DUPLICATE_SCORE = 0.78
MIN_TITLE = 0.6
MIN_TIME = 0.4
KM_PER_DEGREE = 111.32
# Words that say nothing about which event it is.
NOISE_WORDS = frozenset({"the", "a", "an", "at", "in", "on", "and", "&", "of", "live", "presents", "feat", "ft"})


@dataclass(frozen=True)
class Sighting:
    """What is compared of an event: as a scraper saw it, or as we have it."""

    title: str
    venue_name: str
    starts_at: datetime
    latitude: float | None = None
    longitude: float | None = None


def normalise(text: str) -> str:
    """Lower case, accents folded (NFKC), punctuation gone, noise words dropped, spaces collapsed."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    # Thai vowels and tone marks are combining marks (category M): keep them, drop punctuation and symbols.
    kept = "".join(ch if unicodedata.category(ch)[0] in "LMN" else " " for ch in folded)
    return " ".join(word for word in kept.split() if word not in NOISE_WORDS)


def title_similarity(a: str, b: str) -> float:
    left, right = normalise(a), normalise(b)
    if not left or not right:
        return 0.0
    by_words = (fuzz.token_sort_ratio(left, right) + fuzz.token_set_ratio(left, right)) / 2
    # Without spaces too: Thai runs words together, and spacing differs between sources.
    by_letters = fuzz.ratio(left.replace(" ", ""), right.replace(" ", ""))
    return max(by_words, by_letters) / 100


def venue_similarity(a: Sighting, b: Sighting) -> float:
    if None not in (a.latitude, a.longitude, b.latitude, b.longitude):
        km = _km(a, b)
        return 1.0 if km <= 0.15 else 0.8 if km <= 0.5 else 0.3 if km <= 2 else 0.0
    left, right = normalise(a.venue_name), normalise(b.venue_name)
    if not left or not right:
        return 0.5  # nothing to tell them apart by
    return max(fuzz.token_set_ratio(left, right), fuzz.ratio(left.replace(" ", ""), right.replace(" ", ""))) / 100


def time_similarity(a: Sighting, b: Sighting) -> float:
    minutes = abs((a.starts_at - b.starts_at).total_seconds()) / 60
    return 1.0 if minutes <= 15 else 0.8 if minutes <= 60 else 0.4 if minutes <= 180 else 0.0


def score(a: Sighting, b: Sighting) -> float:
    return round(
        TITLE_WEIGHT * title_similarity(a.title, b.title)
        + VENUE_WEIGHT * venue_similarity(a, b)
        + TIME_WEIGHT * time_similarity(a, b),
        4,
    )


def is_duplicate(a: Sighting, b: Sighting) -> bool:
    return (
        score(a, b) >= DUPLICATE_SCORE
        and title_similarity(a.title, b.title) >= MIN_TITLE
        and time_similarity(a, b) >= MIN_TIME
    )


def _km(a: Sighting, b: Sighting) -> float:
    assert a.latitude is not None and a.longitude is not None and b.latitude is not None and b.longitude is not None
    dlat = a.latitude - b.latitude
    dlng = (a.longitude - b.longitude) * math.cos(math.radians((a.latitude + b.latitude) / 2))
    return KM_PER_DEGREE * math.hypot(dlat, dlng)


@dataclass(frozen=True)
class Quality:
    """How the rule did on pairs labelled duplicate or not."""

    pairs: int
    true_positives: int
    false_positives: int
    false_negatives: int

    @property
    def precision(self) -> float:
        found = self.true_positives + self.false_positives
        return self.true_positives / found if found else 1.0

    @property
    def recall(self) -> float:
        actual = self.true_positives + self.false_negatives
        return self.true_positives / actual if actual else 1.0


def evaluate(labelled: list[tuple[Sighting, Sighting, bool]]) -> Quality:
    found = [(is_duplicate(a, b), duplicate) for a, b, duplicate in labelled]
    return Quality(
        pairs=len(found),
        true_positives=sum(1 for got, want in found if got and want),
        false_positives=sum(1 for got, want in found if got and not want),
        false_negatives=sum(1 for got, want in found if want and not got),
    )
