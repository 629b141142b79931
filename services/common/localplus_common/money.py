"""Money as the API takes it (CONTRACT §4): integer minor units and an ISO 4217 code. One check for
every service that accepts a price, so a price refused in one place is refused everywhere."""

from localplus_common.errors import invalid_argument

# public.ticket_types' CHECK on price_minor; checked here first to name the field at fault.
MAX_PRICE_MINOR = 100_000_000_000
# ISO 4217's currencies in use (its list of 2025, without funds, precious metals and test codes):
# a price is charged in one, and Stripe refuses anything else at checkout, after the sale was set up.
ISO_4217 = frozenset({
    "AED", "AFN", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT", "BGN",
    "BHD", "BIF", "BMD", "BND", "BOB", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD", "CDF", "CHF",
    "CLP", "CNY", "COP", "CRC", "CUC", "CUP", "CVE", "CZK", "DJF", "DKK", "DOP", "DZD", "EGP", "ERN",
    "ETB", "EUR", "FJD", "FKP", "GBP", "GEL", "GHS", "GIP", "GMD", "GNF", "GTQ", "GYD", "HKD", "HNL",
    "HTG", "HUF", "IDR", "ILS", "INR", "IQD", "IRR", "ISK", "JMD", "JOD", "JPY", "KES", "KGS", "KHR",
    "KMF", "KPW", "KRW", "KWD", "KYD", "KZT", "LAK", "LBP", "LKR", "LRD", "LSL", "LYD", "MAD", "MDL",
    "MGA", "MKD", "MMK", "MNT", "MOP", "MRU", "MUR", "MVR", "MWK", "MXN", "MYR", "MZN", "NAD", "NGN",
    "NIO", "NOK", "NPR", "NZD", "OMR", "PAB", "PEN", "PGK", "PHP", "PKR", "PLN", "PYG", "QAR", "RON",
    "RSD", "RUB", "RWF", "SAR", "SBD", "SCR", "SDG", "SEK", "SGD", "SHP", "SLE", "SLL", "SOS", "SRD",
    "SSP", "STN", "SVC", "SYP", "SZL", "THB", "TJS", "TMT", "TND", "TOP", "TRY", "TTD", "TWD", "TZS",
    "UAH", "UGX", "USD", "UYU", "UZS", "VED", "VES", "VND", "VUV", "WST", "XAF", "XCD", "XCG", "XOF",
    "XPF", "YER", "ZAR", "ZMW", "ZWG",
})  # fmt: skip


def check_price_minor(field: str, price_minor: int) -> None:
    """400 naming `field` (its path in the request) unless the price is 0 to MAX_PRICE_MINOR."""
    if not 0 <= price_minor <= MAX_PRICE_MINOR:
        raise invalid_argument(field, f"price_minor must be between 0 and {MAX_PRICE_MINOR:,}")


def currency_code(field: str, currency: str) -> str:
    """The ISO 4217 code `currency` names, in upper case as it is stored ("thb", as Stripe writes it,
    is THB; "thb" beside "THB" would split one currency in two), or a 400 naming `field`."""
    code = currency.strip().upper()
    if code not in ISO_4217:
        raise invalid_argument(field, "currency must be an ISO 4217 code such as THB")
    return code
