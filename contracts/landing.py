"""The landing format of every source entity: where its files sit, how they are encoded, which columns they carry.

This is the contract with the outside world. The sample-data generator writes exactly this, bronze ingestion
reads exactly this, and docs/landing.md documents it. Files for run date D live under
``<landing>/<source>/<entity>/<D>/``; every file in that folder is one delivery of that entity.

All values are read as text into bronze (bronze is raw); silver parses them. Timestamps are RFC 3339 / ISO 8601
(``2026-11-01T09:30:00Z``; a space for the T, a fraction and an offset are read too; no zone means UTC), dates
``YYYY-MM-DD``, decimals with a dot, currencies ISO 4217 codes.

The boundary's own rules are declared here too: which file names an entity accepts, the limits a file must stay
within (``READ_LIMITS``), why a whole file is refused (``FILE_RULES``) and why one record is quarantined
(``RECORD_RULES``). ``backends/landing.py`` applies them, the same for every engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Literal

import iso4217

FileFormat = Literal["csv", "parquet", "jsonl"]
Delivery = Literal["daily", "when_changed"]

# How an entity's files arrive, declared per entity (``LandingEntity.delivery``).
DELIVERIES: dict[str, str] = {
    "daily": "a file every run date, an empty one (a CSV header, a Parquet file of no rows, an empty JSON-lines "
             "file) when nothing changed: a run date without one stops before anything is written, unless the "
             "run allows it missing (--allow-missing, sources.allow_missing)",
    "when_changed": "files only on days with changes: a day without one is normal; the freshness gate "
                    "(max_age_days) tells a quiet source from one that stopped",
}


@dataclass(frozen=True)
class LandingColumn:
    name: str
    type: Literal["string", "integer", "decimal", "date", "timestamp"]
    required: bool
    meaning: str


@dataclass(frozen=True)
class LandingEntity:
    """One entity of one source system as it arrives in the landing folder."""

    source: str
    entity: str
    format: FileFormat
    columns: tuple[LandingColumn, ...]
    description: str
    # A stream drained into micro-batch files: applied to bronze in order, each commit recorded in a checkpoint.
    stream: bool = False
    delivery: Delivery = "daily"  # see DELIVERIES

    @property
    def name(self) -> str:
        return f"{self.source}.{self.entity}"

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def folder(self, landing_root: Path, run_date: date) -> Path:
        """Where this entity's files for ``run_date`` lie: ``<landing>/<source>/<entity>/<YYYY-MM-DD>``."""
        return landing_root / self.source / self.entity / run_date.isoformat()

    @property
    def suffix(self) -> str:
        return {"csv": ".csv", "parquet": ".parquet", "jsonl": ".jsonl"}[self.format]

    @property
    def accepted_suffixes(self) -> tuple[str, ...]:
        """File name endings this entity reads: its format's, plain or compressed (gzip, zstd)."""
        return (self.suffix, *(self.suffix + c for c in COMPRESSED_SUFFIXES))


COMPRESSED_SUFFIXES: tuple[str, ...] = (".gz", ".zst")


@dataclass(frozen=True)
class ReadLimits:
    """What a landing file must stay within; past a limit the record is quarantined or the file refused, so a
    hostile file costs bounded time and memory (one record of at most ``max_record_bytes`` is held at a time
    besides the rows already read)."""

    max_record_bytes: int = 1 << 20  # one CSV record / JSON line; a longer one is quarantined, its head kept
    kept_record_bytes: int = 64 << 10  # how much of an over-long record the quarantine keeps
    max_columns: int = 2000  # a header (CSV) or schema (Parquet) wider than this refuses the file
    max_json_depth: int = 64  # nesting of a JSON line (objects and arrays)
    json_chunk_bytes: int = 32 << 20  # JSON lines (and plain CSV lines) read together on the fast path


READ_LIMITS = ReadLimits()

# Why a landing file is refused whole (nothing of it ingested, the file kept where it is, logged in _refused/).
FILE_RULES: dict[str, str] = {
    "file.extension": "the file name does not end in one of the entity's accepted extensions",
    "file.empty": "a 0-byte CSV or Parquet file (a CSV delivery without changes still carries its header row)",
    "file.unreadable": "not readable as the entity's format: not Parquet, truncated, a broken compressed stream, "
                       "a CSV header that does not parse",
    "file.encoding": "the CSV header is not UTF-8",
    "file.too_many_columns": f"more columns than the limit ({READ_LIMITS.max_columns})",
    "schema.missing_column": "a declared column is missing (renamed?)",
    "schema.duplicate_column": "a declared column appears more than once",
    "schema.uncastable_column": "a declared column has a type that does not cast to text (nested, binary, time)",
}

# Why one landing record is quarantined in bronze (its raw bytes kept in the quarantine ``record``).
RECORD_RULES: dict[str, str] = {
    "parse.field_count": "a CSV record with more or fewer fields than the header",
    "parse.unmatched_quote": "a CSV line opens a quoted field that no later line closes into a valid record; the "
                             "record ends at the end of its own line and reading goes on with the next line",
    "parse.malformed_row": "a CSV line whose quoting breaks RFC 4180 (text after a closing quote)",
    "parse.record_too_large": f"a CSV record or JSON line longer than {READ_LIMITS.max_record_bytes} bytes "
                              f"(the quarantine keeps its first {READ_LIMITS.kept_record_bytes} bytes)",
    "parse.malformed_json": "a line that is not valid JSON",
    "parse.not_an_object": "a JSON line that is valid JSON but not an object",
    "parse.too_deep": f"a JSON line nested deeper than {READ_LIMITS.max_json_depth} levels",
    "parse.nonfinite_number": "a number that is NaN, Infinity or out of a double's range (JSON literals "
                              "NaN/Infinity/1e309, Parquet float NaN/inf)",
    "parse.duplicate_key": "a JSON object that names the same key twice",
    "parse.nested_value": "a declared column holds a JSON object or array instead of a scalar",
    "encoding.invalid_utf8": "bytes that are not UTF-8 (e.g. a latin-1 name); the record keeps them escaped as \\xNN",
    "encoding.nul_byte": "a value holds a NUL character",
}


def _c(name: str, type_: str, required: bool, meaning: str) -> LandingColumn:
    return LandingColumn(name, type_, required, meaning)  # type: ignore[arg-type]


ACCOUNTS = LandingEntity(
    "crm", "accounts", "csv",
    (
        _c("account_id", "string", True, "CRM company record id"),
        _c("account_name", "string", True, "company name"),
        _c("domain", "string", False, "web domain of the company"),
        _c("industry", "string", False, "industry label"),
        _c("owner_name", "string", False, "account owner (sales rep)"),
        _c("country", "string", False, "ISO 3166 alpha-2 country code"),
        _c("updated_at", "timestamp", True, "last modification time in the CRM"),
    ),
    "CRM companies export (CSV with a header row).",
)

CONTACTS = LandingEntity(
    "crm", "contacts", "csv",
    (
        _c("contact_id", "string", True, "CRM contact record id"),
        _c("account_id", "string", False, "company the contact belongs to"),
        _c("first_name", "string", False, "given name"),
        _c("last_name", "string", False, "family name"),
        _c("email", "string", True, "e-mail address (PII: pseudonymised in silver)"),
        _c("phone", "string", False, "phone number (PII: pseudonymised in silver)"),
        _c("lifecycle_stage", "string", False, "lead, marketingqualifiedlead, opportunity, customer, ..."),
        _c("updated_at", "timestamp", True, "last modification time in the CRM"),
    ),
    "CRM contacts export (CSV with a header row).",
)

OPPORTUNITIES = LandingEntity(
    "crm", "opportunities", "csv",
    (
        _c("opportunity_id", "string", True, "CRM deal record id"),
        _c("account_id", "string", True, "company the deal is with"),
        _c("opportunity_name", "string", False, "deal name"),
        _c("stage", "string", True, "prospecting, qualification, proposal, negotiation, closed_won, closed_lost"),
        _c("amount", "decimal", True, "deal value in `currency`"),
        _c("currency", "string", True, "ISO 4217 code of `amount`"),
        _c("close_date", "date", False, "expected or actual close date"),
        _c("owner_name", "string", False, "deal owner (sales rep)"),
        _c("updated_at", "timestamp", True, "last modification time in the CRM"),
    ),
    "CRM deals export (CSV with a header row).",
)

CUSTOMERS = LandingEntity(
    "snowflake", "customers", "parquet",
    (
        _c("customer_id", "string", True, "customer id in the operational warehouse"),
        _c("email", "string", True, "e-mail address (PII: pseudonymised in silver)"),
        _c("phone", "string", False, "phone number (PII: pseudonymised in silver)"),
        _c("first_name", "string", False, "given name"),
        _c("last_name", "string", False, "family name"),
        _c("country", "string", False, "ISO 3166 alpha-2 country code"),
        _c("signup_date", "date", True, "date the customer signed up"),
        _c("updated_at", "timestamp", True, "last change of the record"),
    ),
    "Snowflake extract of new and changed customers (Parquet).",
)

PRODUCTS = LandingEntity(
    "snowflake", "products", "parquet",
    (
        _c("product_id", "string", True, "product id"),
        _c("sku", "string", True, "stock keeping unit"),
        _c("product_name", "string", True, "display name"),
        _c("category", "string", False, "product category"),
        _c("list_price_usd", "decimal", True, "list price in USD"),
        _c("updated_at", "timestamp", True, "last change of the record"),
    ),
    "Snowflake extract of new and changed products (Parquet).",
    delivery="when_changed",
)

ORDERS = LandingEntity(
    "snowflake", "orders", "parquet",
    (
        _c("order_id", "string", True, "order id"),
        _c("customer_id", "string", True, "ordering customer"),
        _c("product_id", "string", True, "ordered product (one product per order line = order)"),
        _c("quantity", "integer", True, "units ordered, 1..1000"),
        _c("unit_price", "decimal", True, "price per unit in `currency`"),
        _c("currency", "string", True, "ISO 4217 code of the order"),
        _c("status", "string", True, "placed, shipped, delivered, cancelled"),
        _c("order_ts", "timestamp", True, "when the order was placed"),
        _c("updated_at", "timestamp", True, "last change of the record (late updates carry a later value)"),
    ),
    "Snowflake extract of new and changed orders (Parquet).",
)

BEHAVIOUR = LandingEntity(
    "redshift", "customer_behaviour", "csv",
    (
        _c("customer_id", "string", True, "customer id"),
        _c("activity_date", "date", True, "day of activity"),
        _c("sessions", "integer", True, "web/app sessions that day"),
        _c("page_views", "integer", True, "page views that day"),
        _c("add_to_cart", "integer", True, "add-to-cart events that day"),
        _c("time_on_site_s", "integer", True, "seconds on site that day"),
        _c("extracted_at", "timestamp", True, "when Redshift produced the row"),
    ),
    "Redshift UNLOAD of daily customer behaviour aggregates (CSV with a header row).",
)

FX_RATES = LandingEntity(
    "fx", "rates", "jsonl",
    (
        _c("rate_date", "date", True, "business day the rate is for (no weekends)"),
        _c("base_currency", "string", True, "always USD"),
        _c("quote_currency", "string", True, "ISO 4217 code"),
        _c("rate", "decimal", True, "units of quote_currency per 1 USD"),
        _c("published_at", "timestamp", True, "when the vendor published the rate"),
    ),
    "FX vendor daily rates, one JSON object per line (none on weekends and bank holidays).",
    delivery="when_changed",
)

ORDER_EVENTS = LandingEntity(
    "kafka", "order_events", "jsonl",
    (
        _c("event_id", "string", True, "unique event id"),
        _c("order_id", "string", True, "order the event is about"),
        _c("event_type", "string", True, "created, updated, cancelled"),
        _c("status", "string", True, "order status after the event"),
        _c("event_ts", "timestamp", True, "when the event happened"),
    ),
    "Kafka `orders` topic drained into JSON-lines micro-batch files (several per day).",
    stream=True,
)

LANDING_ENTITIES: tuple[LandingEntity, ...] = (
    ACCOUNTS, CONTACTS, OPPORTUNITIES, CUSTOMERS, PRODUCTS, ORDERS, BEHAVIOUR, FX_RATES, ORDER_EVENTS,
)


def landing_entity(name: str) -> LandingEntity:
    """Look up a landing entity by ``source.entity``."""
    for e in LANDING_ENTITIES:
        if e.name == name:
            return e
    known = ", ".join(e.name for e in LANDING_ENTITIES)
    msg = f"expected a landing entity name (one of {known}), got {name!r}"
    raise KeyError(msg)


# Every active ISO 4217 code, from the maintained list of the ``iso4217`` package (updated with each ISO
# amendment), but XXX ("no currency") and XTS (reserved for testing), which no amount is in.
CURRENCY_CODES: frozenset[str] = frozenset(c.code for c in iso4217.Currency) - {"XXX", "XTS"}
ORDER_STATUSES: tuple[str, ...] = ("placed", "shipped", "delivered", "cancelled")
ORDER_EVENT_TYPES: tuple[str, ...] = ("created", "updated", "cancelled")
DEAL_STAGES: tuple[str, ...] = (
    "prospecting", "qualification", "proposal", "negotiation", "closed_won", "closed_lost",
)
OPEN_DEAL_STAGES: tuple[str, ...] = ("prospecting", "qualification", "proposal", "negotiation")
