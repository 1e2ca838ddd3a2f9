"""The table catalog: every bronze, silver, gold and quarantine table, declared once.

A table is a name (``layer.entity``), where it lives under the lake root, its business keys, its partition
columns, how it is written, its contract (contracts/contract.py: column types, nullability, ranges, uniqueness) and
the tables it is built from (``inputs``). The graph is those inputs: build orders (``build_order``), what a
task reads and what a gate checks are derived from them, never restated. Nothing else in the project builds a
table path: ask the catalog (``table("gold.fact_orders")``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from graphlib import TopologicalSorter
from typing import TYPE_CHECKING, Literal

from lakehouse.contracts.contract import Check, Column, Contract, optional, required
from lakehouse.contracts.landing import (
    CURRENCY_CODES,
    LANDING_ENTITIES,
    ORDER_EVENT_TYPES,
    ORDER_STATUSES,
    LandingEntity,
)
from lakehouse.contracts.types import BOOL, DATE, UTC_TS
from lakehouse.contracts.types import FLOAT64 as F64
from lakehouse.contracts.types import INT64 as I64
from lakehouse.contracts.types import STRING as STR

if TYPE_CHECKING:
    import narwhals as nw
    import polars as pl
    import pyarrow as pa_arrow

Layer = Literal["bronze", "silver", "gold", "quarantine"]
WriteMode = Literal["append", "merge", "overwrite"]


@dataclass(frozen=True)
class Reference:
    """Referential integrity: every non-null ``columns`` value of the table is a ``to`` key of ``table``."""

    columns: tuple[str, ...]
    table: str
    to: tuple[str, ...]

    @property
    def rule_id(self) -> str:
        return f"ref.{'+'.join(self.columns)}->{self.table}"


@dataclass(frozen=True)
class Gate:
    """When a run's batch of a table fails its gate: more than ``max_quarantine_rate`` of the batch's rows were
    quarantined (for batches of at least ``min_rows`` rows; a smaller batch fails above ``small_batch_max_share``), or
    its source is stale: the newest rows of its bronze table were ingested more than ``max_age_days`` before
    the run date (the source stopped delivering). The sample data injects up to ~2.7% dirt per table by design
    (docs/sample-data.md), so the default rate is 5%; FX rates skip weekends and holidays, hence 4 days."""

    max_quarantine_rate: float = 0.05
    min_rows: int = 100
    # A batch under min_rows (an FX day has 9-54 rates) is judged by a looser share instead: losing a third of a
    # small feed still stops the run, a single bad row of a handful does not.
    small_batch_max_share: float = 0.25
    max_age_days: int | None = 4  # freshness: the newest delivery (bronze ingest date) at most this many days old


@dataclass(frozen=True)
class TableSpec:
    """One table of the lake."""

    layer: Layer
    entity: str
    schema: Contract
    keys: tuple[str, ...] = ()
    partition_by: tuple[str, ...] = ()
    mode: WriteMode = "overwrite"
    latest_by: str | None = None  # for merge tables: the column whose larger value wins (ties: larger _record_hash)
    # The tables it is built from: a silver table's bronze table first, then the silver tables its rules look up;
    # a gold table's every input its transform reads.
    inputs: tuple[str, ...] = ()
    description: str = ""
    landing: LandingEntity | None = field(default=None, compare=False)
    references: tuple[Reference, ...] = ()  # silver: part of the gate; gold: audited before a release
    max_row_drop: float | None = None  # gold: fail the audit if rows fall by more than this share vs the release
    gate: Gate = Gate()  # silver: checked after the refine stage (tasks/gates.py check_gate)
    history: str | None = None  # silver: the table that also keeps every version (not only the latest per key)

    @property
    def name(self) -> str:
        return f"{self.layer}.{self.entity}"

    @property
    def source(self) -> str | None:
        """For a silver table conformed from bronze: that bronze table."""
        return next((n for n in self.inputs if n.startswith("bronze.")), None)

    @property
    def lookups(self) -> tuple[str, ...]:
        """For a silver table conformed from bronze: the silver tables its rules look rows up in."""
        return tuple(n for n in self.inputs if not n.startswith("bronze.")) if self.source else ()

    @property
    def path(self) -> str:
        """Location relative to the lake root (``bronze/crm/accounts``, ``gold/fact_orders``, ...)."""
        return f"{self.layer}/{self.entity.replace('.', '/')}"

    @property
    def columns(self) -> list[str]:
        return list(self.schema.columns)

    @cached_property
    def arrow_schema(self) -> pa_arrow.Schema:
        """The Arrow schema every engine writes this table with (Arrow is the exchange format; text is
        ``large_string``, as Polars writes it)."""
        import polars as pl

        return pl.DataFrame(schema=self.polars_schema).to_arrow().schema

    @property
    def polars_schema(self) -> dict[str, pl.DataType]:
        return self.schema.polars_schema

    @property
    def narwhals_schema(self) -> dict[str, nw.dtypes.DType]:
        """The declared column types as Narwhals types (what the transforms cast to, on every engine)."""
        return {n: c.dtype.narwhals() for n, c in self.schema.columns.items()}


def _cols(**columns: Column) -> dict[str, Column]:
    return columns


_req, _opt = required, optional


def _schema(name: str, columns: dict[str, Column], unique: tuple[str, ...] = ()) -> Contract:
    return Contract(name, columns, unique)


# --------------------------------------------------------------------------------------------- bronze
def _bronze(entity: LandingEntity) -> TableSpec:
    cols = {c: _opt(STR) for c in entity.column_names}
    cols |= _cols(
        _run_id=_req(STR),
        _ingested_at=_req(UTC_TS),
        _source_file=_req(STR),
        _record_hash=_req(STR),
        _ingest_date=_req(DATE),
    )
    return TableSpec(
        "bronze", f"{entity.source}.{entity.entity}", _schema(f"bronze.{entity.name}", cols),
        partition_by=("_ingest_date",), mode="append",
        description=f"{entity.description} Raw text values plus lineage; append-only.",
        landing=entity,
    )


# ------------------------------------------------------------------------------------------ quarantine
QUARANTINE_COLUMNS = _cols(
    rule=_req(STR),
    reason=_req(STR),
    record=_req(STR),  # the raw record as a JSON object of text values (or the raw line if unparseable)
    record_hash=_req(STR),
    occurrence=_req(I64),  # 1 for the first copy of this record under this rule in its file, 2 for the next ...
    source_file=_req(STR),
    run_id=_req(STR),
    run_date=_req(DATE),
)


def _quarantine(layer: str, entity: str) -> TableSpec:
    return TableSpec(
        "quarantine", f"{layer}.{entity}", _schema(f"quarantine.{layer}.{entity}", dict(QUARANTINE_COLUMNS)),
        keys=("record_hash", "rule", "source_file", "occurrence"), partition_by=("run_date",), mode="merge",
        description=f"Rows of {layer}.{entity} that broke a rule: rule id, reason, raw record, run id.",
    )


# ---------------------------------------------------------------------------------------------- silver
_ccy = Check.isin(sorted(CURRENCY_CODES))
_pos = Check.gt(0)
_nonneg = Check.ge(0)
_pii = _cols(email_hmac=_req(STR, Check.str_matches(r"^[0-9a-f]{64}$")), email_masked=_req(STR),
             phone_hmac=_opt(STR, Check.str_matches(r"^[0-9a-f]{64}$")), phone_masked=_opt(STR))
_lineage = _cols(_source_file=_req(STR), _record_hash=_req(STR))

SILVER: tuple[TableSpec, ...] = (
    TableSpec("silver", "customers", _schema("silver.customers", _cols(
        customer_id=_req(STR, unique=True), first_name=_opt(STR), last_name=_opt(STR), **_pii,
        country=_opt(STR, Check.str_matches(r"^[A-Z]{2}$")), signup_date=_req(DATE), updated_at=_req(UTC_TS),
        **_lineage)), keys=("customer_id",), mode="merge", inputs=("bronze.snowflake.customers",), latest_by="updated_at",
        history="silver.customer_versions",
        description="Customers, latest version per customer_id; e-mail and phone pseudonymised."),
    TableSpec("silver", "customer_versions", _schema("silver.customer_versions", _cols(
        customer_id=_req(STR), first_name=_opt(STR), last_name=_opt(STR), **_pii,
        country=_opt(STR, Check.str_matches(r"^[A-Z]{2}$")), signup_date=_req(DATE), updated_at=_req(UTC_TS),
        **_lineage), unique=("customer_id", "updated_at")),
        keys=("customer_id", "updated_at"), mode="merge", latest_by="updated_at",
        description="Every version of every customer (one per customer_id and updated_at), in whatever order "
        "they arrived: the history gold.dim_customer (SCD2) is built from."),
    TableSpec("silver", "products", _schema("silver.products", _cols(
        product_id=_req(STR, unique=True), sku=_req(STR), product_name=_req(STR), category=_opt(STR),
        list_price_usd=_req(F64, _nonneg), updated_at=_req(UTC_TS), **_lineage)),
        keys=("product_id",), mode="merge", inputs=("bronze.snowflake.products",), latest_by="updated_at", description="Products, latest version per product_id."),
    TableSpec("silver", "orders", _schema("silver.orders", _cols(
        order_id=_req(STR, unique=True), customer_id=_req(STR), product_id=_req(STR),
        quantity=_req(I64, Check.in_range(1, 1000)), unit_price=_req(F64, _pos), currency=_req(STR, _ccy),
        amount=_req(F64, _pos), fx_rate=_req(F64, _pos), fx_rate_date=_req(DATE), amount_usd=_req(F64, _pos),
        status=_req(STR, Check.isin(list(ORDER_STATUSES))), order_ts=_req(UTC_TS), order_date=_req(DATE),
        updated_at=_req(UTC_TS), **_lineage)),
        keys=("order_id",), partition_by=("order_date",), mode="merge", latest_by="updated_at",
        inputs=("bronze.snowflake.orders", "silver.customers", "silver.products", "silver.fx_rates"),
        references=(Reference(("customer_id",), "silver.customers", ("customer_id",)),
                    Reference(("product_id",), "silver.products", ("product_id",))),
        description="Orders, latest version per order_id, amounts converted to USD at the order date's rate."),
    TableSpec("silver", "order_events", _schema("silver.order_events", _cols(
        event_id=_req(STR, unique=True), order_id=_req(STR), event_type=_req(STR, Check.isin(list(ORDER_EVENT_TYPES))),
        status=_req(STR, Check.isin(list(ORDER_STATUSES))), event_ts=_req(UTC_TS), event_date=_req(DATE),
        **_lineage)),
        keys=("event_id",), partition_by=("event_date",), mode="merge", inputs=("bronze.kafka.order_events",), latest_by="event_ts",
        description="Kafka order events, one row per event_id."),
    TableSpec("silver", "fx_rates", _schema("silver.fx_rates", _cols(
        quote_currency=_req(STR, _ccy), rate_date=_req(DATE), rate=_req(F64, _pos), published_at=_req(UTC_TS),
        **_lineage), unique=("quote_currency", "rate_date")),
        keys=("quote_currency", "rate_date"), mode="merge", inputs=("bronze.fx.rates",), latest_by="published_at",
        description="Daily FX rates: units of quote_currency per 1 USD, latest publication per day."),
    TableSpec("silver", "customer_behaviour", _schema("silver.customer_behaviour", _cols(
        customer_id=_req(STR), activity_date=_req(DATE), sessions=_req(I64, _nonneg), page_views=_req(I64, _nonneg),
        add_to_cart=_req(I64, _nonneg), time_on_site_s=_req(I64, _nonneg), extracted_at=_req(UTC_TS), **_lineage),
        unique=("customer_id", "activity_date")),
        keys=("customer_id", "activity_date"), partition_by=("activity_date",), mode="merge", inputs=("bronze.redshift.customer_behaviour",), latest_by="extracted_at",
        description="Daily behaviour per customer, latest extract per (customer_id, activity_date)."),
    TableSpec("silver", "accounts", _schema("silver.accounts", _cols(
        account_id=_req(STR, unique=True), account_name=_req(STR), domain=_opt(STR), industry=_opt(STR),
        owner_name=_opt(STR), country=_opt(STR), updated_at=_req(UTC_TS), **_lineage)),
        keys=("account_id",), mode="merge", inputs=("bronze.crm.accounts",), latest_by="updated_at", description="CRM companies, latest version per account_id."),
    TableSpec("silver", "contacts", _schema("silver.contacts", _cols(
        contact_id=_req(STR, unique=True), account_id=_opt(STR), first_name=_opt(STR), last_name=_opt(STR), **_pii,
        lifecycle_stage=_opt(STR), updated_at=_req(UTC_TS), **_lineage)),
        keys=("contact_id",), mode="merge", inputs=("bronze.crm.contacts",), latest_by="updated_at",
        references=(Reference(("account_id",), "silver.accounts", ("account_id",)),),
        description="CRM contacts, latest version per contact_id; e-mail and phone pseudonymised."),
    TableSpec("silver", "opportunities", _schema("silver.opportunities", _cols(
        opportunity_id=_req(STR, unique=True), account_id=_req(STR), opportunity_name=_opt(STR), stage=_req(STR),
        is_open=_req(BOOL), amount=_req(F64, _nonneg), currency=_req(STR, _ccy), amount_usd=_req(F64, _nonneg),
        close_date=_opt(DATE), owner_name=_opt(STR), updated_at=_req(UTC_TS), **_lineage)),
        keys=("opportunity_id",), mode="merge", inputs=("bronze.crm.opportunities", "silver.fx_rates"), latest_by="updated_at",
        references=(Reference(("account_id",), "silver.accounts", ("account_id",)),),
        description="CRM deals, latest version per opportunity_id, amount in USD at the run date's rate."),
    TableSpec("silver", "customer_crm_links", _schema("silver.customer_crm_links", _cols(
        customer_id=_req(STR, unique=True), contact_id=_req(STR), account_id=_opt(STR), matched_on=_req(STR))),
        keys=("customer_id",), mode="overwrite", inputs=("silver.customers", "silver.contacts"),
        description="Each customer matched to its CRM contact (and the contact's account) by pseudonymised e-mail."),
)

# ------------------------------------------------------------------------------------------------ gold
GOLD: tuple[TableSpec, ...] = (
    TableSpec("gold", "dim_customer", _schema("gold.dim_customer", _cols(
        customer_sk=_req(STR, Check.str_matches(r"^[0-9a-f]{16}$"), unique=True), customer_id=_req(STR),
        first_name=_opt(STR), last_name=_opt(STR), email_masked=_req(STR),
        email_hmac=_req(STR), phone_masked=_opt(STR), country=_opt(STR), signup_date=_req(DATE),
        crm_account_id=_opt(STR), updated_at=_req(UTC_TS), valid_from=_req(UTC_TS), valid_to=_opt(UTC_TS),
        is_current=_req(BOOL)), unique=("customer_id", "valid_from")),
        inputs=("silver.customer_versions", "silver.customer_crm_links"),
        keys=("customer_sk",), mode="overwrite",
        description="Customer dimension, SCD2: one row per customer version. `valid_from` ≤ t < `valid_to` (null: "
        "current); a fact order takes the version valid at its `order_ts`, or the customer's first version if it "
        "is older."),
    TableSpec("gold", "dim_product", _schema("gold.dim_product", _cols(
        product_id=_req(STR, unique=True), sku=_req(STR), product_name=_req(STR), category=_opt(STR),
        list_price_usd=_req(F64), updated_at=_req(UTC_TS))),
        inputs=("silver.products",),
        keys=("product_id",), mode="overwrite", description="Product dimension (current version)."),
    TableSpec("gold", "fact_orders", _schema("gold.fact_orders", _cols(
        order_id=_req(STR, unique=True), order_date=_req(DATE), date_key=_req(I64), customer_id=_req(STR),
        customer_sk=_opt(STR), product_id=_req(STR), quantity=_req(I64), unit_price=_req(F64), currency=_req(STR), amount=_req(F64),
        fx_rate=_req(F64), amount_usd=_req(F64), status=_req(STR), is_cancelled=_req(BOOL), order_ts=_req(UTC_TS),
        updated_at=_req(UTC_TS))),
        inputs=("silver.orders", "silver.order_events", "gold.dim_customer"),
        keys=("order_id",), partition_by=("order_date",), mode="overwrite", max_row_drop=0.10,
        references=(Reference(("customer_id",), "gold.dim_customer", ("customer_id",)),
                    Reference(("customer_sk",), "gold.dim_customer", ("customer_sk",)),
                    Reference(("product_id",), "gold.dim_product", ("product_id",)),
                    Reference(("date_key",), "gold.dim_date", ("date_key",))),
        description="One row per order: the latest status (order extract or a later Kafka event) and USD amount."),
    TableSpec("gold", "dim_date", _schema("gold.dim_date", _cols(
        date_key=_req(I64, unique=True), date=_req(DATE), year=_req(I64), quarter=_req(I64, Check.in_range(1, 4)),
        month=_req(I64, Check.in_range(1, 12)), day=_req(I64, Check.in_range(1, 31)),
        iso_weekday=_req(I64, Check.in_range(1, 7)), is_weekend=_req(BOOL))),
        inputs=("gold.fact_orders",),
        keys=("date_key",), mode="overwrite", description="Calendar of every day from the first to the last order."),
    TableSpec("gold", "customer_360", _schema("gold.customer_360", _cols(
        customer_id=_req(STR, unique=True), country=_opt(STR), lifetime_revenue_usd=_req(F64, _nonneg),
        order_count=_req(I64, _nonneg), cancelled_order_count=_req(I64, _nonneg),
        first_order_date=_opt(DATE), last_order_date=_opt(DATE),
        crm_account_id=_opt(STR), crm_account_name=_opt(STR), crm_owner=_opt(STR),
        open_pipeline_usd=_req(F64, _nonneg), sessions=_req(I64, _nonneg), page_views=_req(I64, _nonneg),
        add_to_cart=_req(I64, _nonneg), time_on_site_s=_req(I64, _nonneg), active_days=_req(I64, _nonneg),
        last_active_date=_opt(DATE))),
        inputs=("gold.fact_orders", "silver.customers", "silver.customer_crm_links", "silver.accounts",
                "silver.opportunities", "silver.customer_behaviour"),
        keys=("customer_id",), mode="overwrite", references=(Reference(("customer_id",), "gold.dim_customer", ("customer_id",)),),
        description="One row per customer: revenue, orders, CRM account and owner, open pipeline, behaviour."),
    TableSpec("gold", "product_performance", _schema("gold.product_performance", _cols(
        order_date=_req(DATE), product_id=_req(STR), orders=_req(I64, _nonneg), units=_req(I64, _nonneg),
        revenue_usd=_req(F64, _nonneg), distinct_customers=_req(I64, _nonneg), cancelled_orders=_req(I64, _nonneg),
        cancellation_rate=_req(F64, Check.in_range(0, 1))), unique=("order_date", "product_id")),
        inputs=("gold.fact_orders",),
        keys=("order_date", "product_id"), partition_by=("order_date",), mode="overwrite",
        references=(Reference(("product_id",), "gold.dim_product", ("product_id",)),),
        description="Per product per day: orders, units and USD revenue of kept orders, customers, cancellations."),
    TableSpec("gold", "customer_segments", _schema("gold.customer_segments", _cols(
        customer_id=_req(STR, unique=True), as_of_date=_req(DATE), recency_days=_req(I64, _nonneg),
        frequency=_req(I64, _pos), monetary_usd=_req(F64, _nonneg),
        r_score=_req(I64, Check.in_range(1, 5)), f_score=_req(I64, Check.in_range(1, 5)),
        m_score=_req(I64, Check.in_range(1, 5)), rfm_score=_req(STR, Check.str_matches(r"^[1-5]{3}$")),
        segment=_req(STR))),
        inputs=("gold.customer_360", "gold.fact_orders"),
        keys=("customer_id",), mode="overwrite", references=(Reference(("customer_id",), "gold.dim_customer", ("customer_id",)),),
        description="RFM scores and segment per customer with at least one kept order."),
)

# What each gold column means (docs/gold.md is generated from it: make docs).
GOLD_COLUMN_DOCS: dict[str, dict[str, str]] = {
    "gold.fact_orders": {
        "order_id": "Order id (one row per silver order).",
        "order_date": "UTC date the order was placed.",
        "date_key": "order_date as a yyyymmdd integer; joins to dim_date.date_key.",
        "customer_id": "Ordering customer (business key).",
        "customer_sk": "The customer version valid when the order was placed; joins to dim_customer.customer_sk "
        "(null only for a customer without any version, which the release audit refuses).",
        "product_id": "Ordered product; joins to dim_product.",
        "quantity": "Units ordered.",
        "unit_price": "Price per unit in the order currency.",
        "currency": "ISO 4217 code of the order.",
        "amount": "quantity x unit_price in the order currency.",
        "fx_rate": "Units of the order currency per 1 USD on the order date.",
        "amount_usd": "Order amount in USD at the order date's rate.",
        "status": "Latest status: of the latest Kafka event if it is newer than the order extract, "
        "else the extract's.",
        "is_cancelled": "status is 'cancelled'; cancelled orders are excluded from revenue.",
        "order_ts": "When the order was placed (UTC).",
        "updated_at": "Latest change seen: the later of the extract's updated_at and the latest event.",
    },
    "gold.dim_customer": {
        "customer_sk": "Surrogate key of this version: first 16 hex digits of SHA-256(customer_id, valid_from).",
        "customer_id": "Customer id from the operational warehouse (one row per version).",
        "first_name": "Given name.",
        "last_name": "Family name.",
        "email_masked": "E-mail with the local part masked, for display.",
        "email_hmac": "Keyed HMAC-SHA256 of the normalised e-mail, for joins without the address.",
        "phone_masked": "Phone number masked, for display.",
        "country": "ISO 3166 alpha-2 country code.",
        "signup_date": "Date the customer signed up.",
        "crm_account_id": "CRM company the customer's matched contact belongs to; null if unmatched.",
        "updated_at": "When this version of the customer record was made.",
        "valid_from": "Start of this version's validity (its updated_at); orders before a customer's first "
        "version take the first version.",
        "valid_to": "Start of the next version (exclusive); null for the current version.",
        "is_current": "This is the customer's latest version.",
    },
    "gold.dim_product": {
        "product_id": "Product id.",
        "sku": "Stock keeping unit.",
        "product_name": "Display name.",
        "category": "Product category.",
        "list_price_usd": "List price in USD.",
        "updated_at": "Last change of the product record.",
    },
    "gold.dim_date": {
        "date_key": "The date as a yyyymmdd integer (primary key).",
        "date": "Calendar date.",
        "year": "Calendar year.",
        "quarter": "Calendar quarter, 1-4.",
        "month": "Month, 1-12.",
        "day": "Day of the month, 1-31.",
        "iso_weekday": "ISO weekday: 1 = Monday ... 7 = Sunday, on every engine.",
        "is_weekend": "Saturday or Sunday (iso_weekday >= 6).",
    },
    "gold.customer_360": {
        "customer_id": "Customer id (one row per silver customer, with or without orders).",
        "country": "ISO 3166 alpha-2 country code of the customer.",
        "lifetime_revenue_usd": "Sum of amount_usd over the customer's kept (not cancelled) orders; 0 if none.",
        "order_count": "Number of kept (not cancelled) orders.",
        "cancelled_order_count": "Number of cancelled orders.",
        "first_order_date": "Date of the first kept order; null if none.",
        "last_order_date": "Date of the latest kept order; null if none.",
        "crm_account_id": "CRM company matched to the customer via its contact; null if unmatched.",
        "crm_account_name": "Name of that CRM company.",
        "crm_owner": "Owner (sales rep) of that CRM company.",
        "open_pipeline_usd": "USD value of the company's open deals (any customer of the company sees "
        "the whole company's pipeline); 0 if none.",
        "sessions": "Web/app sessions over all behaviour days; 0 if none.",
        "page_views": "Page views over all behaviour days; 0 if none.",
        "add_to_cart": "Add-to-cart events over all behaviour days; 0 if none.",
        "time_on_site_s": "Seconds on site over all behaviour days; 0 if none.",
        "active_days": "Distinct days with a behaviour row; 0 if none.",
        "last_active_date": "Latest day with a behaviour row; null if none.",
    },
    "gold.product_performance": {
        "order_date": "Day the orders were placed.",
        "product_id": "Product ordered.",
        "orders": "All orders of the product that day, cancelled included.",
        "units": "Units of the kept (not cancelled) orders.",
        "revenue_usd": "USD revenue of the kept orders.",
        "distinct_customers": "Distinct customers over all the day's orders of the product, cancelled included.",
        "cancelled_orders": "Cancelled orders.",
        "cancellation_rate": "cancelled_orders / orders.",
    },
    "gold.customer_segments": {
        "customer_id": "Customer with at least one kept (not cancelled) order.",
        "as_of_date": "Latest order_date in fact_orders (any status); recency is measured from it, so "
        "rerunning a past day reproduces its result.",
        "recency_days": "Days from the customer's latest kept order to as_of_date.",
        "frequency": "Number of kept orders.",
        "monetary_usd": "USD revenue of the kept orders.",
        "r_score": "Recency score 1-5 from RFM_THRESHOLDS['r_score'] (5 = most recent).",
        "f_score": "Frequency score 1-5 from RFM_THRESHOLDS['f_score'] (5 = most orders).",
        "m_score": "Monetary score 1-5 from RFM_THRESHOLDS['m_score'] (5 = highest revenue).",
        "rfm_score": "The three scores as text, r then f then m (e.g. '543').",
        "segment": "First matching rule of SEGMENT_RULES on r_score and f_score.",
    },
}

BRONZE: tuple[TableSpec, ...] = tuple(_bronze(e) for e in LANDING_ENTITIES)
QUARANTINE: tuple[TableSpec, ...] = (
    tuple(_quarantine("bronze", f"{e.source}.{e.entity}") for e in LANDING_ENTITIES)
    + tuple(_quarantine("silver", t.entity) for t in SILVER if t.source is not None)
)
TABLES: dict[str, TableSpec] = {t.name: t for t in (*BRONZE, *SILVER, *GOLD, *QUARANTINE)}


def table(name: str) -> TableSpec:
    """The declaration of table ``name`` (``layer.entity``); a clear error lists the known names otherwise."""
    try:
        return TABLES[name]
    except KeyError:
        close = [n for n in TABLES if name.split(".")[-1] in n] or list(TABLES)
        msg = f"expected a table name like 'gold.fact_orders', got {name!r}; known tables: {', '.join(sorted(close))}"
        raise KeyError(msg) from None


def tables(layer: Layer | None = None) -> list[TableSpec]:
    return [t for t in TABLES.values() if layer is None or t.layer == layer]


def build_order(layer: Layer) -> tuple[str, ...]:
    """The tables of ``layer`` in an order that builds every table after its inputs of the same layer (a
    topological sort of the declared ``inputs``; a history table comes after the table whose conform writes
    it). Of the tables ready at each step the first declared goes first, so the order is stable."""
    mine = {t.name: t for t in tables(layer)}
    graph: dict[str, set[str]] = {n: {i for i in t.inputs if i in mine} for n, t in mine.items()}
    for t in mine.values():
        if t.history in graph:
            graph[t.history].add(t.name)
    sorter = TopologicalSorter(graph)
    sorter.prepare()
    position = {name: i for i, name in enumerate(mine)}
    ready: list[str] = []
    order: list[str] = []
    while sorter.is_active():
        ready = sorted([*ready, *sorter.get_ready()], key=position.__getitem__)
        order.append(ready.pop(0))
        sorter.done(order[-1])
    return tuple(order)


def conform_order() -> tuple[str, ...]:
    """The silver tables conformed from bronze (the refine stage), each after the tables its rules look up."""
    return tuple(n for n in build_order("silver") if TABLES[n].source)


def bronze_for(entity: LandingEntity) -> TableSpec:
    return TABLES[f"bronze.{entity.source}.{entity.entity}"]


def quarantine_for(spec: TableSpec) -> TableSpec:
    """The quarantine table that receives rows rejected on the way into ``spec``."""
    return TABLES[f"quarantine.{spec.layer}.{spec.entity}"]
