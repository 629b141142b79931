"""Money as the API takes it (CONTRACT §4): integer minor units and an ISO 4217 code. One check for
every service that accepts a price, so a price refused in one place is refused everywhere."""

import re

from localplus_common.errors import invalid_argument

# public.ticket_types' CHECK on price_minor; checked here first to name the field at fault.
MAX_PRICE_MINOR = 100_000_000_000
# Upper case only: codes are stored as given, and "thb" beside "THB" would split one currency in two.
CURRENCY = re.compile(r"[A-Z]{3}")


def check_price_minor(field: str, price_minor: int) -> None:
    """400 naming `field` (its path in the request) unless the price is 0 to MAX_PRICE_MINOR."""
    if not 0 <= price_minor <= MAX_PRICE_MINOR:
        raise invalid_argument(field, f"price_minor must be between 0 and {MAX_PRICE_MINOR:,}")


def check_currency(field: str, currency: str) -> None:
    """400 naming `field` unless `currency` is an upper-case ISO 4217 code."""
    if not CURRENCY.fullmatch(currency):
        raise invalid_argument(field, "currency must be an ISO 4217 code such as THB")
