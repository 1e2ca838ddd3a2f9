"""The landing format of every source entity: where its files sit, how they are encoded, which columns they carry.

This is the contract with the outside world. The sample-data generator writes exactly this, bronze ingestion
reads exactly this, and README's "Landing format" section documents it. Files for run date D live under
``<landing>/<source>/<entity>/<D>/``; every file in that folder is one delivery of that entity.

All values are read as text into bronze (bronze is raw); silver parses them. Timestamps are ISO 8601 UTC
(``2026-11-01T09:30:00Z``), dates ``YYYY-MM-DD``, decimals with a dot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

FileFormat = Literal["csv", "parquet", "jsonl"]


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

    @property
    def name(self) -> str:
        return f"{self.source}.{self.entity}"

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def suffix(self) -> str:
        return {"csv": ".csv", "parquet": ".parquet", "jsonl": ".jsonl"}[self.format]


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
    "FX vendor daily rates, one JSON object per line.",
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


KNOWN_CURRENCIES: tuple[str, ...] = (
    "USD", "EUR", "GBP", "JPY", "CAD", "AUD", "CHF", "SEK", "NOK", "DKK", "PLN", "MXN", "BRL", "INR", "SGD",
)
ORDER_STATUSES: tuple[str, ...] = ("placed", "shipped", "delivered", "cancelled")
ORDER_EVENT_TYPES: tuple[str, ...] = ("created", "updated", "cancelled")
DEAL_STAGES: tuple[str, ...] = (
    "prospecting", "qualification", "proposal", "negotiation", "closed_won", "closed_lost",
)
OPEN_DEAL_STAGES: tuple[str, ...] = ("prospecting", "qualification", "proposal", "negotiation")
