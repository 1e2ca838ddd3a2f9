"""Row-level rules of every silver table, declared once, as data.

A rule is an id, a readable reason and a Narwhals predicate that is True when a row passes (a null
result counts as a failure). ``tasks.transforms.silver.conform`` evaluates them in declared order on the parsed batch
and quarantines each row under the FIRST rule it fails, so every bronze row ends up either valid or
quarantined exactly once. The same predicates run on every engine, so both quarantine the same rows.

Columns the predicates read (``tasks.transforms.silver`` computes them; the names are defined here):

* ``<col>``: landing column ``col`` normalised: trimmed (ASCII whitespace), blank → null; e-mail
  lower-cased; country and currency codes upper-cased; phone reduced to its digits. Typed columns are
  parsed (integer → Int64, decimal → Float64, date → Date, timestamp → Datetime UTC); text that is blank
  or does not parse becomes null.
* ``_text_<col>`` (:func:`text_col`): for typed columns only, the trimmed text before parsing (null when
  blank), so ``required.*`` can tell "missing" from ``type.invalid_*`` "present but unparseable".
* ``_first_copy`` (:data:`FIRST_COPY`): True for the first row of each ``_record_hash`` in the batch,
  ordered by ``_source_file`` then ``_ingested_at``.
* ``_known_customer`` / ``_known_product``: True when ``customer_id`` / ``product_id`` is in the
  silver.customers / silver.products reference frame, null otherwise.
* ``_in_lookback`` (:data:`IN_LOOKBACK`): for order changes and order events, True when the change (its
  ``updated_at`` / ``event_ts``) is at most ``lookback_days`` before the run date (always True in a replay).
* ``_plausible_until`` / ``_plausible_until_date`` (:data:`PLAUSIBLE_UNTIL`): the end of the run date plus
  :data:`FUTURE_TOLERANCE`, as a UTC timestamp and as a date (far in the future when there is no run date).
* ``fx_rate``: units of the row's currency per 1 USD as of the row's date (1.0 for USD), null when no
  rate lies in the window.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import narwhals as nw

from lakehouse.contracts.catalog import SILVER, TABLES
from lakehouse.contracts.expressions import first_match
from lakehouse.contracts.landing import (
    ACCOUNTS,
    BEHAVIOUR,
    CONTACTS,
    CURRENCY_CODES,
    CUSTOMERS,
    DEAL_STAGES,
    FX_RATES,
    OPPORTUNITIES,
    ORDER_EVENT_TYPES,
    ORDER_EVENTS,
    ORDER_STATUSES,
    ORDERS,
    PRODUCTS,
    LandingColumn,
    LandingEntity,
)


@dataclass(frozen=True)
class Rule:
    """One row-level rule: ``ok()`` is True when a row passes; null counts as a failure."""

    id: str
    reason: str
    ok: Callable[[], nw.Expr]


FIRST_COPY = "_first_copy"
KNOWN_CUSTOMER = "_known_customer"
KNOWN_PRODUCT = "_known_product"
FX_RATE = "fx_rate"
IN_LOOKBACK = "_in_lookback"
PLAUSIBLE_UNTIL = "_plausible_until"
PLAUSIBLE_UNTIL_DATE = "_plausible_until_date"

# Plausibility: nothing this business records happened before PLAUSIBLE_FROM, and nothing after the run date's
# end plus FUTURE_TOLERANCE (clock skew, a source's time zone). A date column about the future (a deal's
# expected close date) may reach up to PLAUSIBLE_FAR_FUTURE. One row out of the window would stretch dim_date
# to the year 9999 and every recency figure with it, so it is quarantined instead.
PLAUSIBLE_FROM = date(1990, 1, 1)
FUTURE_TOLERANCE = timedelta(days=1)
PLAUSIBLE_FAR_FUTURE = date(2100, 1, 1)
FUTURE_COLUMNS = frozenset({"close_date"})


def plausible_until(run_date: date | None) -> datetime:
    """The latest plausible instant for a run date: the end of the run date plus the tolerance."""
    day = run_date or PLAUSIBLE_FAR_FUTURE
    return datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1) + FUTURE_TOLERANCE

# ASCII-only on purpose: Rust's (Polars) and Java's (Spark) regex classes differ on Unicode (\d, \s).
EMAIL_PATTERN = r"^[a-z0-9._%+'-]+@[a-z0-9-]+(\.[a-z0-9-]+)*\.[a-z]{2,}$"
COUNTRY_PATTERN = r"^[A-Z]{2}$"
ORDER_QUANTITY_RANGE = (1, 1000)  # inclusive
# unit_price in (0, ORDER_MAX_UNIT_PRICE_USD] once converted to USD: a bound in the order's own currency would
# refuse ordinary prices in IDR, VND or KRW (a 1,250,000 IDR kettle is about 77 USD).
ORDER_MAX_UNIT_PRICE_USD = 100_000.0

_TYPE_TEXT = {
    "integer": "a whole number like 12",
    "decimal": "a decimal number like 12.50",
    "date": "a calendar date YYYY-MM-DD",
    "timestamp": "an ISO 8601 timestamp like 2026-11-01T09:30:00Z (T or space, a fraction, Z or an offset like +05:30; none means UTC)",
}

# Which landing entity feeds each silver table: derived from the catalog's `source` declarations.
SILVER_LANDING: dict[str, LandingEntity] = {
    t.name: TABLES[t.source].landing for t in SILVER if t.source and TABLES[t.source].landing is not None
}


def text_col(column: str) -> str:
    """Name of the trimmed-text twin of typed landing column ``column``."""
    return f"_text_{column}"


def _presence_col(column: LandingColumn) -> str:
    return column.name if column.type == "string" else text_col(column.name)


# ------------------------------------------------------------------------------------ rule builders
def _duplicate() -> Rule:
    return Rule(
        "duplicate.exact",
        "expected each raw record once per batch; an identical record (same _record_hash) came earlier "
        "(ordered by _source_file, _ingested_at)",
        lambda: nw.col(FIRST_COPY),
    )


def _required(column: LandingColumn) -> Rule:
    src = _presence_col(column)
    return Rule(f"required.{column.name}", f"expected a non-blank {column.name}", lambda: ~nw.col(src).is_null())


def _typed(column: LandingColumn) -> Rule:
    name, text = column.name, text_col(column.name)
    return Rule(
        f"type.invalid_{name}",
        f"expected {name} to be {_TYPE_TEXT[column.type]}",
        lambda: nw.col(text).is_null() | ~nw.col(name).is_null(),
    )


def _in_window(column: LandingColumn) -> nw.Expr:
    col = nw.col(column.name)
    if column.name in FUTURE_COLUMNS:
        return col.is_null() | ((col >= nw.lit(PLAUSIBLE_FROM).cast(nw.Date()))
                                & (col < nw.lit(PLAUSIBLE_FAR_FUTURE).cast(nw.Date())))
    if column.type == "date":
        return col.is_null() | ((col >= nw.lit(PLAUSIBLE_FROM).cast(nw.Date())) & (col <= nw.col(PLAUSIBLE_UNTIL_DATE)))
    floor = datetime(PLAUSIBLE_FROM.year, PLAUSIBLE_FROM.month, PLAUSIBLE_FROM.day, tzinfo=UTC)
    return col.is_null() | ((col >= nw.lit(floor).cast(nw.Datetime("us", "UTC"))) & (col < nw.col(PLAUSIBLE_UNTIL)))


def _plausible(entity: LandingEntity) -> tuple[Rule, ...]:
    """``time.implausible``: every date and timestamp of the row lies in the plausible window."""
    columns = [c for c in entity.columns if c.type in ("date", "timestamp")]
    if not columns:
        return ()
    names = ", ".join(c.name for c in columns)

    def ok() -> nw.Expr:
        checks = [_in_window(c) for c in columns]
        out = checks[0]
        for check in checks[1:]:
            out = out & check
        return out

    return (Rule("time.implausible", f"expected {names} on or after {PLAUSIBLE_FROM} and at most "
                 f"{FUTURE_TOLERANCE.days} day(s) after the run date"
                 + (f" ({', '.join(sorted(FUTURE_COLUMNS & {c.name for c in columns}))} before "
                    f"{PLAUSIBLE_FAR_FUTURE})" if FUTURE_COLUMNS & {c.name for c in columns} else ""), ok),)


def _base(entity: LandingEntity) -> tuple[Rule, ...]:
    """Rules every table has: exact duplicates, required columns, parseable typed columns, then plausible dates
    and times."""
    required = tuple(_required(c) for c in entity.columns if c.required)
    typed = tuple(_typed(c) for c in entity.columns if c.type != "string")
    return (_duplicate(), *required, *typed, *_plausible(entity))


def _one_of(rule_id: str, column: str, allowed: tuple[str, ...]) -> Rule:
    return Rule(rule_id, f"expected {column} to be one of {', '.join(allowed)}", lambda: nw.col(column).is_in(allowed))


def _currency(column: str) -> Rule:
    codes = tuple(sorted(CURRENCY_CODES))
    return Rule("currency.unknown", f"expected {column} to be an ISO 4217 currency code (e.g. USD, EUR, CNY)",
                lambda: nw.col(column).is_in(codes))


_EMAIL = Rule(
    "email.malformed",
    "expected email to look like name@domain.tld (ASCII letters, digits and ._%+'- only)",
    lambda: nw.col("email").str.contains(EMAIL_PATTERN),
)
_COUNTRY = Rule(
    "value.invalid_country",
    "expected country to be a two-letter ISO 3166 code (or blank)",
    lambda: nw.col("country").is_null() | nw.col("country").str.contains(COUNTRY_PATTERN),
)
_FX = Rule(
    "fx.no_rate",
    "expected an FX rate for the currency dated at most fx_window_days before the row's date (never after)",
    lambda: ~nw.col(FX_RATE).is_null(),
)

_LATE = Rule(
    "late.beyond_lookback",
    "expected the change to arrive at most lookback_days after it happened (its updated_at/event_ts); a later one "
    "would rewrite gold partitions older than the lookback: replay it once checked",
    lambda: nw.col(IN_LOOKBACK),
)

ROW_RULES: dict[str, tuple[Rule, ...]] = {
    "silver.customers": (*_base(CUSTOMERS), _EMAIL, _COUNTRY),
    "silver.products": (
        *_base(PRODUCTS),
        Rule("amount.out_of_range", "expected list_price_usd >= 0", lambda: nw.col("list_price_usd") >= 0),
    ),
    "silver.orders": (
        *_base(ORDERS),
        _LATE,
        Rule(
            "amount.out_of_range",
            f"expected quantity in {ORDER_QUANTITY_RANGE[0]}..{ORDER_QUANTITY_RANGE[1]} and unit_price above 0 and "
            f"at most {ORDER_MAX_UNIT_PRICE_USD:,.0f} USD at the order date's rate",
            lambda: nw.col("quantity").is_between(*ORDER_QUANTITY_RANGE)
            & (nw.col("unit_price") > 0)
            & (nw.col(FX_RATE).is_null() | (nw.col("unit_price") <= ORDER_MAX_UNIT_PRICE_USD * nw.col(FX_RATE))),
        ),
        _currency("currency"),
        _one_of("value.invalid_status", "status", ORDER_STATUSES),
        Rule("ref.unknown_customer", "expected customer_id to exist in silver.customers",
             lambda: nw.col(KNOWN_CUSTOMER)),
        Rule("ref.unknown_product", "expected product_id to exist in silver.products",
             lambda: nw.col(KNOWN_PRODUCT)),
        _FX,
    ),
    "silver.order_events": (
        *_base(ORDER_EVENTS),
        _LATE,
        _one_of("value.invalid_event_type", "event_type", ORDER_EVENT_TYPES),
        _one_of("value.invalid_status", "status", ORDER_STATUSES),
    ),
    "silver.fx_rates": (
        *_base(FX_RATES),
        Rule("currency.base_not_usd", "expected base_currency USD (rates are units of quote_currency per 1 USD)",
             lambda: nw.col("base_currency") == "USD"),
        _currency("quote_currency"),
        Rule("amount.out_of_range", "expected rate > 0", lambda: nw.col("rate") > 0),
    ),
    "silver.customer_behaviour": (
        *_base(BEHAVIOUR),
        Rule(
            "value.negative_count",
            "expected sessions, page_views, add_to_cart and time_on_site_s >= 0",
            lambda: (nw.col("sessions") >= 0) & (nw.col("page_views") >= 0)
            & (nw.col("add_to_cart") >= 0) & (nw.col("time_on_site_s") >= 0),
        ),
    ),
    "silver.accounts": (*_base(ACCOUNTS), _COUNTRY),
    "silver.contacts": (*_base(CONTACTS), _EMAIL),
    "silver.opportunities": (
        *_base(OPPORTUNITIES),
        _one_of("value.invalid_stage", "stage", DEAL_STAGES),
        Rule("amount.out_of_range", "expected amount >= 0", lambda: nw.col("amount") >= 0),
        _currency("currency"),
        _FX,
    ),
}


def first_failing_rule(rules: tuple[Rule, ...]) -> nw.Expr:
    """The id of the first rule a row fails, in declared order; null when it passes them all."""
    return first_match((~rule.ok().fill_null(value=False), nw.lit(rule.id)) for rule in rules)


def reason_of(rule_id: nw.Expr, rules: tuple[Rule, ...]) -> nw.Expr:
    """The reason of the rule whose id is in ``rule_id``."""
    return first_match((rule_id == rule.id, nw.lit(rule.reason)) for rule in rules)
