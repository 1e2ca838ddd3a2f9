"""Silver conform on small hand-written bronze batches: exact rows in, exact rows out, on every engine."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import hmac
import json
from collections import Counter
from collections.abc import Mapping
from typing import Any

import narwhals as nw
import polars as pl
import pytest
from conftest import plan_nodes

from lakehouse.backends.expressions import with_one_per_key_flag
from lakehouse.contracts.catalog import table
from lakehouse.contracts.expressions import record_digest
from lakehouse.contracts.landing import LandingEntity
from lakehouse.contracts.rules import ROW_RULES, SILVER_LANDING
from lakehouse.tasks.transforms.silver import (
    QUARANTINE_OUTPUT,
    TYPE_PATTERNS,
    _keep_last,
    conform,
    latest_per_key,
    link_customers_to_crm,
)
from lakehouse.testing import to_engine

KEY = b"test-key-not-a-secret"
OTHER_KEY = b"another-key"
UTC = dt.UTC
INGESTED = dt.datetime(2026, 11, 10, 6, 0, tzinfo=UTC)
D = dt.date


def ts(day: int, hour: int = 10, minute: int = 0, second: int = 0) -> dt.datetime:
    return dt.datetime(2026, 11, day, hour, minute, second, tzinfo=UTC)


# ---------------------------------------------------------------------------------------- helpers
@pytest.fixture
def engine(transform_engine: str) -> str:
    return transform_engine


def lazy(engine: str, data: Mapping[str, list], schema: Mapping[str, Any]) -> nw.LazyFrame:
    """A lazy frame of ``data`` on ``engine`` (every test builds its input here)."""
    return to_engine(engine, pl.LazyFrame(dict(data), schema=dict(schema)))


def rows(frame: nw.LazyFrame, *sort_by: str) -> list[dict[str, Any]]:
    """Collected rows as dicts, sorted by ``sort_by`` (default: every column, as text)."""
    out = frame.collect(backend="polars").to_native().rows(named=True)
    return sorted(out, key=lambda r: tuple(str(r[c]) for c in (sort_by or r)))


def qrows(out, *sort_by: str) -> list[dict[str, Any]]:
    """Quarantined rows with their JSON record, as the daily flow writes them."""
    got = out.quarantine_records().collect(backend="pyarrow").to_native().to_pylist()
    return sorted(got, key=lambda r: tuple(str(r[c]) for c in (sort_by or r)))


def bronze(engine: str, entity: LandingEntity, records: list[dict[str, Any]], source_file: str = "f1") -> nw.LazyFrame:
    """A bronze batch: landing values as text (missing → null) plus lineage, hashed like bronze ingestion.

    A record may carry ``_source_file`` / ``_ingested_at`` to override the batch defaults.
    """
    cols = entity.column_names
    data: dict[str, list] = {c: [r.get(c) for r in records] for c in cols}
    data["_run_id"] = ["run-1"] * len(records)
    data["_ingested_at"] = [r.get("_ingested_at", INGESTED) for r in records]
    data["_source_file"] = [r.get("_source_file", source_file) for r in records]
    data["_record_hash"] = [raw_hash(entity, r) for r in records]
    data["_ingest_date"] = [INGESTED.date()] * len(records)
    schema = {c: pl.String for c in cols} | {
        "_run_id": pl.String, "_ingested_at": pl.Datetime("us", "UTC"), "_source_file": pl.String,
        "_record_hash": pl.String, "_ingest_date": pl.Date,
    }
    return lazy(engine, data, schema)


def raw_hash(entity: LandingEntity, record: Mapping[str, Any]) -> str:
    return record_digest([record.get(c) for c in entity.column_names])


def fx_ref(engine: str, rates: list[tuple[str, dt.date, float, dt.datetime]]) -> nw.LazyFrame:
    """A silver.fx_rates frame: (quote_currency, rate_date, rate, published_at) rows."""
    spec = table("silver.fx_rates")
    data = {
        "quote_currency": [r[0] for r in rates], "rate_date": [r[1] for r in rates], "rate": [r[2] for r in rates],
        "published_at": [r[3] for r in rates], "_source_file": ["fx"] * len(rates),
        "_record_hash": [f"h{i}" for i in range(len(rates))],
    }
    return lazy(engine, data, spec.polars_schema)


def order_refs(engine: str, rates: list[tuple[str, dt.date, float, dt.datetime]] | None = None) -> dict:
    rates = rates if rates is not None else [("EUR", D(2026, 11, 6), 0.9, ts(6, 16))]
    return {
        "silver.customers": lazy(engine, {"customer_id": ["C1", "C2"]}, {"customer_id": pl.String}),
        "silver.products": lazy(engine, {"product_id": ["P1"]}, {"product_id": pl.String}),
        "silver.fx_rates": fx_ref(engine, rates),
    }


def refs_for(engine: str, name: str) -> dict:
    return order_refs(engine) if table(name).lookups else {}


def hmac_hex(key: bytes, value: str) -> str:
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()


# One valid landing record per silver table.
GOOD: dict[str, dict[str, str | None]] = {
    "silver.customers": {
        "customer_id": "C1", "email": "jane.doe@example.com", "phone": "+1 (555) 010-4567", "first_name": "Jane",
        "last_name": "Doe", "country": "US", "signup_date": "2026-01-15", "updated_at": "2026-11-01T09:30:00Z",
    },
    "silver.products": {
        "product_id": "P1", "sku": "SKU-1", "product_name": "Widget", "category": "tools", "list_price_usd": "19.99",
        "updated_at": "2026-11-01T09:30:00Z",
    },
    "silver.orders": {
        "order_id": "O1", "customer_id": "C1", "product_id": "P1", "quantity": "2", "unit_price": "9.00",
        "currency": "EUR", "status": "placed", "order_ts": "2026-11-07T10:00:00Z", "updated_at": "2026-11-07T11:00:00Z",
    },
    "silver.order_events": {
        "event_id": "E1", "order_id": "O1", "event_type": "created", "status": "placed", "event_ts": "2026-11-07T10:00:00Z",
    },
    "silver.fx_rates": {
        "rate_date": "2026-11-06", "base_currency": "USD", "quote_currency": "EUR", "rate": "0.9",
        "published_at": "2026-11-06T16:00:00Z",
    },
    "silver.customer_behaviour": {
        "customer_id": "C1", "activity_date": "2026-11-06", "sessions": "3", "page_views": "12", "add_to_cart": "0",
        "time_on_site_s": "600", "extracted_at": "2026-11-07T02:00:00Z",
    },
    "silver.accounts": {
        "account_id": "A1", "account_name": "Acme", "domain": "acme.example", "industry": "tools", "owner_name": "Sam",
        "country": "DE", "updated_at": "2026-11-01T09:30:00Z",
    },
    "silver.contacts": {
        "contact_id": "K1", "account_id": "A1", "first_name": "Jane", "last_name": "Doe", "email": "jane.doe@example.com",
        "phone": None, "lifecycle_stage": "customer", "updated_at": "2026-11-01T09:30:00Z",
    },
    "silver.opportunities": {
        "opportunity_id": "D1", "account_id": "A1", "opportunity_name": "Big deal", "stage": "proposal",
        "amount": "1000", "currency": "EUR", "close_date": "2026-12-01", "owner_name": "Sam",
        "updated_at": "2026-11-07T10:00:00Z",
    },
}

_LINEAGE = {"_source_file": "f1"}
_PII_JANE = {
    "email_hmac": hmac_hex(KEY, "jane.doe@example.com"), "email_masked": "j***@example.com",
}
# The exact silver row of each GOOD record (plus _record_hash, added in the test).
EXPECTED_GOOD: dict[str, dict[str, Any]] = {
    "silver.customers": {
        "customer_id": "C1", "first_name": "Jane", "last_name": "Doe", **_PII_JANE,
        "phone_hmac": hmac_hex(KEY, "15550104567"), "phone_masked": "***4567", "country": "US",
        "signup_date": D(2026, 1, 15), "updated_at": dt.datetime(2026, 11, 1, 9, 30, tzinfo=UTC), **_LINEAGE,
    },
    "silver.products": {
        "product_id": "P1", "sku": "SKU-1", "product_name": "Widget", "category": "tools", "list_price_usd": 19.99,
        "updated_at": dt.datetime(2026, 11, 1, 9, 30, tzinfo=UTC), **_LINEAGE,
    },
    "silver.orders": {
        "order_id": "O1", "customer_id": "C1", "product_id": "P1", "quantity": 2, "unit_price": 9.0,
        "currency": "EUR", "amount": 18.0, "fx_rate": 0.9, "fx_rate_date": D(2026, 11, 6), "amount_usd": 18.0 / 0.9,
        "status": "placed", "order_ts": ts(7, 10), "order_date": D(2026, 11, 7), "updated_at": ts(7, 11), **_LINEAGE,
    },
    "silver.order_events": {
        "event_id": "E1", "order_id": "O1", "event_type": "created", "status": "placed", "event_ts": ts(7, 10),
        "event_date": D(2026, 11, 7), **_LINEAGE,
    },
    "silver.fx_rates": {
        "quote_currency": "EUR", "rate_date": D(2026, 11, 6), "rate": 0.9, "published_at": ts(6, 16), **_LINEAGE,
    },
    "silver.customer_behaviour": {
        "customer_id": "C1", "activity_date": D(2026, 11, 6), "sessions": 3, "page_views": 12, "add_to_cart": 0,
        "time_on_site_s": 600, "extracted_at": ts(7, 2), **_LINEAGE,
    },
    "silver.accounts": {
        "account_id": "A1", "account_name": "Acme", "domain": "acme.example", "industry": "tools", "owner_name": "Sam",
        "country": "DE", "updated_at": dt.datetime(2026, 11, 1, 9, 30, tzinfo=UTC), **_LINEAGE,
    },
    "silver.contacts": {
        "contact_id": "K1", "account_id": "A1", "first_name": "Jane", "last_name": "Doe", **_PII_JANE,
        "phone_hmac": None, "phone_masked": None, "lifecycle_stage": "customer",
        "updated_at": dt.datetime(2026, 11, 1, 9, 30, tzinfo=UTC), **_LINEAGE,
    },
    "silver.opportunities": {
        "opportunity_id": "D1", "account_id": "A1", "opportunity_name": "Big deal", "stage": "proposal",
        "is_open": True, "amount": 1000.0, "currency": "EUR", "amount_usd": 1000.0 / 0.9, "close_date": D(2026, 12, 1),
        "owner_name": "Sam", "updated_at": ts(7, 10), **_LINEAGE,
    },
}

_BAD_TEXT = {"integer": "12.5", "decimal": "12,50", "date": "2026-02-30", "timestamp": "01/11/2026 09:30"}
# Rule-specific violations: (table, rule id, overrides of the GOOD record).
_SPECIFIC: list[tuple[str, str, dict[str, str]]] = [
    ("silver.customers", "email.malformed", {"email": "jane.doe.example.com"}),
    ("silver.customers", "email.malformed", {"email": "jane doe@example.com"}),
    ("silver.customers", "value.invalid_country", {"country": "USA"}),
    ("silver.products", "amount.out_of_range", {"list_price_usd": "-0.01"}),
    ("silver.orders", "amount.out_of_range", {"quantity": "0"}),
    ("silver.orders", "amount.out_of_range", {"quantity": "1001"}),
    ("silver.orders", "amount.out_of_range", {"unit_price": "0"}),
    ("silver.orders", "amount.out_of_range", {"unit_price": "100000.01"}),
    ("silver.orders", "currency.unknown", {"currency": "XYZ"}),
    ("silver.orders", "value.invalid_status", {"status": "lost"}),
    ("silver.orders", "ref.unknown_customer", {"customer_id": "C404"}),
    ("silver.orders", "ref.unknown_product", {"product_id": "P404"}),
    ("silver.orders", "fx.no_rate", {"currency": "GBP"}),
    ("silver.orders", "late.beyond_lookback", {"order_ts": "2026-11-01T10:00:00Z", "updated_at": "2026-11-04T23:59:59Z"}),
    ("silver.order_events", "late.beyond_lookback", {"event_ts": "2026-11-04T23:59:59Z"}),
    ("silver.order_events", "value.invalid_event_type", {"event_type": "deleted"}),
    ("silver.order_events", "value.invalid_status", {"status": "lost"}),
    ("silver.fx_rates", "currency.base_not_usd", {"base_currency": "EUR"}),
    ("silver.fx_rates", "currency.unknown", {"quote_currency": "XXX"}),
    ("silver.fx_rates", "amount.out_of_range", {"rate": "0"}),
    ("silver.fx_rates", "amount.out_of_range", {"rate": "-1.5"}),
    ("silver.customer_behaviour", "value.negative_count", {"sessions": "-1"}),
    ("silver.customer_behaviour", "value.negative_count", {"time_on_site_s": "-5"}),
    ("silver.accounts", "value.invalid_country", {"country": "Germany"}),
    ("silver.contacts", "email.malformed", {"email": "jane@"}),
    ("silver.opportunities", "value.invalid_stage", {"stage": "won"}),
    ("silver.opportunities", "amount.out_of_range", {"amount": "-5"}),
    ("silver.opportunities", "currency.unknown", {"currency": "ABC"}),
    ("silver.opportunities", "fx.no_rate", {"currency": "JPY"}),
]


def _violations() -> list[tuple[str, str, dict[str, str]]]:
    cases = []
    for name, landing in SILVER_LANDING.items():
        for col in landing.columns:
            if col.required:
                cases.append((name, f"required.{col.name}", {col.name: "  \t "}))
            if col.type != "string":
                cases.append((name, f"type.invalid_{col.name}", {col.name: _BAD_TEXT[col.type]}))
        when = next((c for c in landing.columns if c.type in ("date", "timestamp")), None)
        if when is not None:
            far = "9999-12-31" if when.type == "date" else "9999-12-31T00:00:00Z"
            cases.append((name, "time.implausible", {when.name: far}))
    return cases + _SPECIFIC


VIOLATIONS = _violations()


def reason(name: str, rule_id: str) -> str:
    return next(r.reason for r in ROW_RULES[name] if r.id == rule_id)


def quarantine_row(name: str, rule_id: str, record: dict, source_file: str = "f1") -> dict[str, str]:
    landing = SILVER_LANDING[name]
    raw = {c: record.get(c) for c in landing.column_names}
    return {"rule": rule_id, "reason": reason(name, rule_id), "record": json.dumps(raw, separators=(",", ":"), ensure_ascii=False),
            "record_hash": raw_hash(landing, record), "source_file": source_file}


def conform_records(engine: str, name: str, records: list[dict], **kwargs: Any):
    kwargs.setdefault("refs", refs_for(engine, name))
    kwargs.setdefault("run_date", D(2026, 11, 8))  # a Sunday: opportunities convert at Friday's rate
    kwargs.setdefault("lookback_days", 3)  # changes from 2026-11-05 on are on time
    return conform(name, bronze(engine, SILVER_LANDING[name], records), hmac_key=KEY, **kwargs)


# ----------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("name", sorted(GOOD))
def test_good_record_becomes_exactly_one_silver_row(engine: str, name: str) -> None:
    out = conform_records(engine, name, [GOOD[name]])
    expected = EXPECTED_GOOD[name] | {"_record_hash": raw_hash(SILVER_LANDING[name], GOOD[name])}
    assert rows(out.valid) == [expected]
    assert list(out.valid.collect_schema().names()) == table(name).columns
    assert qrows(out) == []


@functools.cache
def _violations_conformed(engine: str, name: str) -> tuple[list[dict], dict[str, list[dict]]]:
    """Every violation case of ``name`` conformed in one batch, each record in a file of its own (``case-<i>``):
    the valid rows and the quarantined rows by source file. One conform per table and engine instead of one per
    case (a classic Spark plan takes seconds to plan); a rule that looked at other rows of the batch would show
    up as a case quarantined under another rule, or not at all."""
    cases = [(i, GOOD[name] | overrides) for i, (n, _, overrides) in enumerate(VIOLATIONS) if n == name]
    out = conform_records(engine, name, [record | {"_source_file": f"case-{i}"} for i, record in cases])
    by_file: dict[str, list[dict]] = {}
    for row in qrows(out):
        by_file.setdefault(row["source_file"], []).append(row)
    return rows(out.valid), by_file


@pytest.mark.parametrize(("case", "name", "rule_id", "overrides"), [(i, *v) for i, v in enumerate(VIOLATIONS)],
                         ids=[f"{n[7:]}-{r}" for n, r, _ in VIOLATIONS])
def test_each_rule_quarantines_its_row(engine: str, case: int, name: str, rule_id: str, overrides: dict) -> None:
    record = GOOD[name] | overrides
    valid, quarantined = _violations_conformed(engine, name)
    assert valid == []
    assert quarantined.get(f"case-{case}") == [quarantine_row(name, rule_id, record, source_file=f"case-{case}")]
    assert reason(name, rule_id).strip()


@pytest.mark.parametrize("name", ["silver.orders", "silver.customers"])
def test_a_violation_alone_in_its_batch_is_quarantined_as_in_a_batch_of_many(engine: str, name: str) -> None:
    """The batched cases above equal one case conformed alone (the first of each table)."""
    case, (_, rule_id, overrides) = next((i, v) for i, v in enumerate(VIOLATIONS) if v[0] == name)
    record = GOOD[name] | overrides
    out = conform_records(engine, name, [record])
    assert rows(out.valid) == []
    assert qrows(out) == [quarantine_row(name, rule_id, record)]
    assert _violations_conformed(engine, name)[1][f"case-{case}"] == [quarantine_row(name, rule_id, record,
                                                                                      source_file=f"case-{case}")]


@pytest.mark.parametrize(("name", "column"), [("silver.orders", "updated_at"), ("silver.order_events", "event_ts")])
def test_the_lookback_starts_at_midnight_of_its_first_day_and_a_replay_has_none(engine: str, name: str,
                                                                             column: str) -> None:
    on_time = GOOD[name] | {column: "2026-11-05T00:00:00Z"}
    late = GOOD[name] | {column: "2026-11-04T23:59:59Z"}
    if name == "silver.orders":
        late |= {"order_id": "O2"}
    else:
        late |= {"event_id": "E2"}
    out = conform_records(engine, name, [on_time, late])
    assert len(rows(out.valid)) == 1 and [q["rule"] for q in qrows(out)] == ["late.beyond_lookback"]
    assert len(rows(conform_records(engine, name, [on_time, late], lookback_days=None).valid)) == 2
    with pytest.raises(ValueError, match="expected lookback_days as an integer >= 0"):
        conform_records(engine, name, [on_time], lookback_days=-1)


def test_every_declared_rule_has_a_violation_case() -> None:
    declared = {(name, r.id) for name, rules in ROW_RULES.items() for r in rules if r.id != "duplicate.exact"}
    covered = {(name, rule_id) for name, rule_id, _ in VIOLATIONS}
    assert declared == covered
    for name, rules in ROW_RULES.items():
        assert len({r.id for r in rules}) == len(rules), f"duplicate rule id in {name}"
        assert all(r.reason.strip() for r in rules)


@pytest.mark.parametrize("name", sorted(GOOD))
def test_exact_duplicates_keep_the_first_copy_by_file_then_ingest_time(engine: str, name: str) -> None:
    record = GOOD[name]
    # File order wins over ingest time: the copy in "a" is kept although it was ingested later.
    copies = [record | {"_source_file": "b", "_ingested_at": ts(1)}, record | {"_source_file": "a", "_ingested_at": ts(2)},
              record | {"_source_file": "b", "_ingested_at": ts(3)}]
    out = conform_records(engine, name, copies)
    assert [r["_source_file"] for r in rows(out.valid)] == ["a"]
    assert qrows(out) == [quarantine_row(name, "duplicate.exact", record, "b")] * 2


@pytest.mark.parametrize("name", sorted(GOOD))
def test_every_row_ends_valid_or_quarantined_exactly_once(engine: str, name: str) -> None:
    cases = [(rule_id, GOOD[name] | overrides) for n, rule_id, overrides in VIOLATIONS if n == name]
    records = [GOOD[name], GOOD[name], *(record for _, record in cases)]
    out = conform_records(engine, name, records)
    valid, quarantined = rows(out.valid), qrows(out)
    assert len(records) == len(valid) + len(quarantined)
    assert Counter(q["rule"] for q in quarantined) == Counter(["duplicate.exact", *(rule_id for rule_id, _ in cases)])
    table(name).schema.pandera().validate(out.valid.collect(backend="polars").to_native())  # valid rows meet the contract


@pytest.mark.parametrize("name", ["silver.orders", "silver.customers"])
def test_the_rule_tagged_rows_carry_only_what_the_valid_and_quarantined_rows_read(engine: str, name: str) -> None:
    """What the checkpoint computes once (and Sail stages): the table's columns (for PII tables the HMAC and masked
    columns, computed once, and not the clear values they come from), the first-copy flag, the rule, and the raw
    landing values of quarantined rows only; the valid and quarantined rows made from it are the same as ever."""
    tagged: list[nw.LazyFrame] = []

    def checkpoint(frame: nw.LazyFrame) -> nw.LazyFrame:
        tagged.append(frame)
        return frame

    spec, landing = table(name), SILVER_LANDING[name]
    broken = GOOD[name] | {"customer_id": " "}  # required.customer_id: a quarantined row with its raw text
    out = conform_records(engine, name, [GOOD[name], broken], checkpoint=checkpoint)
    [frame] = tagged
    raw = [f"_raw_{c}" for c in landing.column_names]
    assert frame.collect_schema().names() == [*spec.columns, "_first_copy", "_rule", *raw]
    by_rule = {r["_rule"]: r for r in rows(frame)}
    assert set(by_rule) == {None, "required.customer_id"}
    assert all(by_rule[None][c] is None for c in raw)  # the valid row's raw values are not carried
    assert {c: by_rule["required.customer_id"][f"_raw_{c}"] for c in landing.column_names} == {
        c: broken.get(c) for c in landing.column_names}
    expected = EXPECTED_GOOD[name] | {"_record_hash": raw_hash(landing, GOOD[name])}
    assert rows(out.valid) == [expected]
    [quarantined] = qrows(out)
    assert (quarantined["rule"], json.loads(quarantined["record"])) == (
        "required.customer_id", {c: broken.get(c) for c in landing.column_names})


def test_quarantine_columns_are_the_declared_text_columns(engine: str) -> None:
    out = conform_records(engine, "silver.orders", [GOOD["silver.orders"] | {"quantity": "lots"}])
    schema = out.quarantined.collect_schema()
    assert all(dtype == nw.String for dtype in schema.dtypes())
    assert list(qrows(out)[0]) == list(QUARANTINE_OUTPUT)


def test_record_round_trips_through_json_with_raw_untrimmed_values(engine: str) -> None:
    nasty = 'Ja"ne \\ O\'Neil\n\ttab \r\x01\x1f é 日本 \\"'
    record = GOOD["silver.customers"] | {"first_name": nasty, "last_name": None, "country": " us ", "email": "not-an-email"}
    out = conform_records(engine, "silver.customers", [record])
    [row] = qrows(out)
    decoded = json.loads(row["record"])
    assert decoded == {c: record.get(c) for c in SILVER_LANDING["silver.customers"].column_names}
    assert list(decoded) == SILVER_LANDING["silver.customers"].column_names
    assert (row["rule"], row["record_hash"]) == ("email.malformed", raw_hash(SILVER_LANDING["silver.customers"], record))


def test_values_are_trimmed_normalised_and_parsed(engine: str) -> None:
    padded = {"order_id": " O1 ", "customer_id": "C1\t", "product_id": " P1", "quantity": " +2 ", "unit_price": " 9.00 ",
              "currency": " eur ", "status": "placed ", "order_ts": " 2026-11-07T10:00:00Z ",
              "updated_at": "2026-11-07T11:00:00Z\n"}
    [row] = rows(conform_records(engine, "silver.orders", [padded]).valid)
    expected = EXPECTED_GOOD["silver.orders"] | {"_record_hash": raw_hash(SILVER_LANDING["silver.orders"], padded)}
    assert row == expected


def test_calendar_and_type_edges(engine: str) -> None:
    base = GOOD["silver.customers"]
    records = [
        base | {"customer_id": "leap", "signup_date": "2024-02-29"},
        base | {"customer_id": "not-leap", "signup_date": "2023-02-29"},
        base | {"customer_id": "century", "signup_date": "1900-02-29"},
        base | {"customer_id": "april31", "signup_date": "2026-04-31"},
        base | {"customer_id": "hour24", "updated_at": "2026-11-01T24:00:00Z"},
        base | {"customer_id": "offset", "updated_at": "2026-11-01T09:30:00+15:00"},  # beyond +14:00
        base | {"customer_id": "year2000", "signup_date": "2000-02-29", "country": None},
    ]
    out = conform_records(engine, "silver.customers", records)
    assert [(r["customer_id"], r["signup_date"]) for r in rows(out.valid, "customer_id")] == [
        ("leap", D(2024, 2, 29)), ("year2000", D(2000, 2, 29))]
    assert [json.loads(q["record"])["customer_id"] + ":" + q["rule"] for q in qrows(out, "record")] == [
        "april31:type.invalid_signup_date", "century:type.invalid_signup_date", "hour24:type.invalid_updated_at",
        "not-leap:type.invalid_signup_date", "offset:type.invalid_updated_at"]


def test_first_failing_rule_in_declared_order_is_recorded(engine: str) -> None:
    # Blank customer_id (required), bad quantity (type), unknown currency: the required rule is declared first.
    record = GOOD["silver.orders"] | {"customer_id": "", "quantity": "many", "currency": "XYZ"}
    out = conform_records(engine, "silver.orders", [record])
    assert [q["rule"] for q in qrows(out)] == ["required.customer_id"]


# ------------------------------------------------------------------------------------------ FX as-of
RATES = [
    ("EUR", D(2026, 11, 6), 0.90, ts(6, 16)),  # Friday
    ("EUR", D(2026, 11, 9), 0.95, ts(9, 16)),  # Monday, first publication ...
    ("EUR", D(2026, 11, 9), 0.92, ts(9, 17)),  # ... republished: the later publication counts
    ("GBP", D(2026, 11, 2), 0.80, ts(2, 16)),  # the only GBP rate
    ("JPY", D(2026, 11, 10), 150.0, ts(10, 16)),  # the only JPY rate, later than the JPY order
]


def _order(order_id: str, currency: str, order_ts: str) -> dict[str, str]:
    return GOOD["silver.orders"] | {"order_id": order_id, "currency": currency, "order_ts": order_ts}


FX_ORDERS = [
    _order("same-day", "EUR", "2026-11-06T15:00:00Z"),
    _order("saturday", "EUR", "2026-11-07T10:00:00Z"),
    _order("sunday-late", "EUR", "2026-11-08T23:59:59Z"),
    _order("monday", "EUR", "2026-11-09T00:00:00Z"),
    _order("window-days-old", "GBP", "2026-11-06T10:00:00Z"),
    _order("window-plus-one", "GBP", "2026-11-07T10:00:00Z"),
    _order("usd-no-rates", "USD", "2026-11-07T10:00:00Z"),
    _order("only-later-rate", "JPY", "2026-11-09T10:00:00Z"),
]


def _fx_valid(out) -> list[tuple]:
    return [(r["order_id"], r["currency"], r["fx_rate"], r["fx_rate_date"], r["order_date"], r["amount_usd"])
            for r in rows(out.valid, "order_id")]


def test_fx_as_of_edges(engine: str) -> None:
    out = conform_records(engine, "silver.orders", FX_ORDERS, refs=order_refs(engine, RATES))
    assert _fx_valid(out) == [
        ("monday", "EUR", 0.92, D(2026, 11, 9), D(2026, 11, 9), 18.0 / 0.92),
        ("same-day", "EUR", 0.90, D(2026, 11, 6), D(2026, 11, 6), 18.0 / 0.90),
        ("saturday", "EUR", 0.90, D(2026, 11, 6), D(2026, 11, 7), 18.0 / 0.90),
        ("sunday-late", "EUR", 0.90, D(2026, 11, 6), D(2026, 11, 8), 18.0 / 0.90),
        ("usd-no-rates", "USD", 1.0, D(2026, 11, 7), D(2026, 11, 7), 18.0),
        ("window-days-old", "GBP", 0.80, D(2026, 11, 2), D(2026, 11, 6), 18.0 / 0.80),
    ]
    assert [(json.loads(q["record"])["order_id"], q["rule"]) for q in qrows(out, "record")] == [
        ("only-later-rate", "fx.no_rate"), ("window-plus-one", "fx.no_rate")]


def test_fx_window_is_a_parameter(engine: str) -> None:
    out = conform_records(engine, "silver.orders", FX_ORDERS, refs=order_refs(engine, RATES), fx_window_days=5)
    assert ("window-plus-one", "GBP", 0.80, D(2026, 11, 2), D(2026, 11, 7), 18.0 / 0.80) in _fx_valid(out)
    narrow = conform_records(engine, "silver.orders", FX_ORDERS, refs=order_refs(engine, RATES), fx_window_days=0)
    assert [r[0] for r in _fx_valid(narrow)] == ["monday", "same-day", "usd-no-rates"]


@pytest.mark.parametrize("name", ["silver.orders", "silver.opportunities"])
def test_the_fx_window_widens_no_plan_the_rates_are_read_once_whatever_its_days(engine: str, name: str) -> None:
    """The as-of join copies each rate to the days it may serve inside one read of the rates: a wider window
    adds no read (each read of a Delta table on Spark resolves its log again, on S3 with requests)."""
    refs = order_refs(engine, RATES) if name == "silver.orders" else {"silver.fx_rates": fx_ref(engine, RATES)}
    plans = [plan_nodes(conform_records(engine, name, [GOOD[name]], refs=refs, fx_window_days=days).valid)
             for days in (0, 7)]
    assert plans[0] == plans[1] > 0


def test_opportunity_amount_uses_the_rate_as_of_the_run_date(engine: str) -> None:
    base = GOOD["silver.opportunities"]
    records = [base | {"opportunity_id": "weekend", "updated_at": "2024-01-08T10:00:00Z", "stage": "closed_won"},
               base | {"opportunity_id": "usd", "currency": "usd", "amount": "250.5", "close_date": None}]
    out = conform_records(engine, "silver.opportunities", records, refs={"silver.fx_rates": fx_ref(engine, RATES)})
    assert [(r["opportunity_id"], r["is_open"], r["currency"], r["amount_usd"], r["close_date"])
            for r in rows(out.valid, "opportunity_id")] == [
        ("usd", True, "USD", 250.5, None), ("weekend", False, "EUR", 1000.0 / 0.90, D(2026, 12, 1))]


# ------------------------------------------------------------------------------------- latest per key
def test_latest_per_key_takes_latest_by_then_largest_record_hash(engine: str) -> None:
    base = GOOD["silver.orders"]
    v1 = base | {"order_id": "O1", "status": "placed", "updated_at": "2026-11-07T10:00:00Z"}
    v2 = base | {"order_id": "O1", "status": "shipped", "updated_at": "2026-11-07T12:00:00Z"}
    tie_a = base | {"order_id": "O2", "status": "shipped", "updated_at": "2026-11-07T12:00:00Z"}
    tie_b = base | {"order_id": "O2", "status": "delivered", "updated_at": "2026-11-07T12:00:00Z"}
    spec = table("silver.orders")
    first = conform_records(engine, "silver.orders", [v2, tie_a, v1, tie_b]).valid
    again = conform_records(engine, "silver.orders", [v2]).valid  # the same record in a later batch
    latest = latest_per_key(nw.concat([first, again]), spec)
    tie_winner = max((tie_a, tie_b), key=lambda r: raw_hash(SILVER_LANDING["silver.orders"], r))
    assert [(r["order_id"], r["status"], r["_record_hash"]) for r in rows(latest, "order_id")] == [
        ("O1", "shipped", raw_hash(SILVER_LANDING["silver.orders"], v2)),
        ("O2", tie_winner["status"], raw_hash(SILVER_LANDING["silver.orders"], tie_winner)),
    ]


def test_latest_per_key_on_a_composite_key(engine: str) -> None:
    base = GOOD["silver.customer_behaviour"]
    records = [base | {"sessions": "1", "extracted_at": "2026-11-07T02:00:00Z"},
               base | {"sessions": "2", "extracted_at": "2026-11-08T02:00:00Z"},
               base | {"activity_date": "2026-11-05", "sessions": "7"}]
    valid = conform_records(engine, "silver.customer_behaviour", records).valid
    latest = latest_per_key(valid, table("silver.customer_behaviour"))
    assert [(r["activity_date"], r["sessions"]) for r in rows(latest, "activity_date")] == [
        (D(2026, 11, 5), 7), (D(2026, 11, 6), 2)]


def _key_hash_of(engine: str, how: str):
    """A stand-in for an engine's 64-bit key hash that collides on purpose: every row alike (``constant``), or
    rows alike whatever their first key (``last_key``: only the last key column is hashed)."""
    if engine == "polars":
        def polars_hash(frame: Any, keys: list[str], out: str) -> Any:
            value = pl.lit(0, dtype=pl.UInt64) if how == "constant" else pl.col(keys[-1]).hash()
            return frame.with_columns(value.alias(out))
        return polars_hash

    def spark_hash(frame: Any, keys: list[str], out: str) -> Any:
        from lakehouse.backends.spark.expressions import _functions

        F = _functions(frame)
        return frame.withColumn(out, F.lit(0).cast("bigint") if how == "constant" else F.xxhash64(F.col(keys[-1])))
    return spark_hash


@pytest.mark.parametrize("last", [False, True])
@pytest.mark.parametrize("key_hash", ["engine", "constant", "last_key"])
def test_one_row_per_key_is_flagged_on_keys_held_once_repeated_tied_or_null(engine: str, last: bool, key_hash: str,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Keys held by one row skip the window; repeated keys, exact ties in the order and keys with a null (nulls
    alike) go through it: either way every key gets exactly one flagged row, the first (or last) in the order.
    The rows are told apart by a 64-bit hash of their keys; where that hash collides (every row alike, or rows
    of different keys alike), the window settles them on the keys, and the flags are the same."""
    if key_hash != "engine":
        module = "polars" if engine == "polars" else "spark"
        monkeypatch.setattr(f"lakehouse.backends.{module}.expressions.key_hash", _key_hash_of(engine, key_hash))
    keys = [("a", 1), ("a", 1), ("a", 1), ("b", 1), ("b", 2), (None, 1), (None, 1), (None, None), ("c", None),
            ("c", None), ("d", 3)]
    order = [2, 1, 3, 5, 5, 1, 4, 9, 7, 7, 0]
    frame = lazy(engine, {"k": [k for k, _ in keys], "j": [j for _, j in keys], "o": order,
                          "row": list(range(len(keys)))}, {"k": pl.String, "j": pl.Int64, "o": pl.Int64, "row": pl.Int64})
    flagged_frame = with_one_per_key_flag(frame, ("k", "j"), ("o",), last=last, out="flag")
    assert flagged_frame.collect_schema().names() == ["k", "j", "o", "row", "flag"]  # no helper column left behind
    got = rows(flagged_frame, "row")
    assert sorted(r["row"] for r in got) == list(range(len(keys)))  # no row lost or repeated
    flagged = Counter((r["k"], r["j"]) for r in got if r["flag"])
    assert flagged == Counter(set(keys))  # one per key, nulls alike
    pick = max if last else min
    for r in got:
        if r["flag"]:
            assert r["o"] == pick(o for k, o in zip(keys, order, strict=True) if k == (r["k"], r["j"]))
    assert all(r["flag"] is False for r in got if not r["flag"])  # False, never null


def test_rows_of_equal_keys_get_equal_key_hashes_nulls_alike(engine: str) -> None:
    """What the one-row-per-key flag relies on: rows with equal keys, nulls included, share their 64-bit hash, on
    each engine (rows with unequal keys mostly do not)."""
    from lakehouse.backends.expressions import with_key_hash

    keys = [("a", 1), ("a", 1), (None, 1), (None, 1), (None, None), (None, None), ("c", None), ("c", None), ("b", 2),
            ("b", 3), ("e", 2)]
    frame = lazy(engine, {"k": [k for k, _ in keys], "j": [j for _, j in keys], "row": list(range(len(keys)))},
                 {"k": pl.String, "j": pl.Int64, "row": pl.Int64})
    got = rows(with_key_hash(frame, ("k", "j"), "h"), "row")
    by_key: dict[tuple, set] = {}
    for r in got:
        by_key.setdefault((r["k"], r["j"]), set()).add(r["h"])
    assert all(len(hashes) == 1 for hashes in by_key.values())  # equal keys, one hash
    assert len({next(iter(h)) for h in by_key.values()}) == len(by_key)  # and these seven keys, seven hashes
    one_key = {r["row"]: r["h"] for r in rows(with_key_hash(frame, ("k",), "h"))}
    assert one_key[2] == one_key[3] == one_key[4] == one_key[5] != one_key[6]  # a null key, alone, hashes alike


def test_the_last_row_per_key_is_kept_for_keys_held_once_repeated_tied_or_null(engine: str) -> None:
    """Keys held by one row are kept as they are (on Polars without the window); repeated keys, exact ties in the
    order and keys with a null (nulls alike) keep the last row in the order: one row per key, none twice."""
    keys = [("a", 1), ("a", 1), ("a", 1), ("b", 1), ("b", 2), (None, 1), (None, 1), (None, None), ("c", None),
            ("c", None), ("d", 3), ("e", 1)]
    order = [2, 1, 3, 5, 5, 1, 4, 9, 7, 7, 0, 6]
    frame = lazy(engine, {"k": [k for k, _ in keys], "j": [j for _, j in keys], "o": order,
                          "row": list(range(len(keys)))}, {"k": pl.String, "j": pl.Int64, "o": pl.Int64, "row": pl.Int64})
    kept = _keep_last(frame, ("k", "j"), ("o",))
    assert kept.collect_schema().names() == ["k", "j", "o", "row"]  # no helper column left behind
    got = rows(kept, "row")
    assert Counter((r["k"], r["j"]) for r in got) == Counter(set(keys))  # one row per key, nulls alike
    newest = {k: max(o for key, o in zip(keys, order, strict=True) if key == k) for k in set(keys)}
    assert all(r["o"] == newest[(r["k"], r["j"])] for r in got)
    held_once = {keys[i]: i for i in (3, 4, 7, 10, 11)}  # ("b", 1), ("b", 2), (None, None), ("d", 3), ("e", 1)
    assert {(r["k"], r["j"]): r["row"] for r in got if (r["k"], r["j"]) in held_once} == held_once
    assert [r["row"] for r in got if r["k"] == "a"] == [2]
    assert [r["row"] for r in got if r["k"] is None and r["j"] == 1] == [6]
    assert [r["row"] for r in got if r["k"] == "c"] in ([8], [9])  # an exact tie keeps one of the two


def test_latest_per_key_needs_keys_and_latest_by() -> None:
    with pytest.raises(ValueError, match="keys and latest_by"):
        latest_per_key(nw.from_native(pl.LazyFrame({"x": [1]})), table("gold.dim_date"))


# ------------------------------------------------------------------------------------------------ PII
def test_hmac_is_stable_and_key_dependent(engine: str) -> None:
    record = GOOD["silver.customers"] | {"email": "  Jane.Doe@Example.COM "}
    one = rows(conform_records(engine, "silver.customers", [record]).valid)
    two = rows(conform_records(engine, "silver.customers", [record]).valid)
    other = rows(conform(
        "silver.customers", bronze(engine, SILVER_LANDING["silver.customers"], [record]), hmac_key=OTHER_KEY).valid)
    assert one == two
    assert one[0]["email_hmac"] == hmac.new(KEY, b"jane.doe@example.com", hashlib.sha256).hexdigest()
    assert one[0]["phone_hmac"] == hmac.new(KEY, b"15550104567", hashlib.sha256).hexdigest()
    assert other[0]["email_hmac"] == hmac_hex(OTHER_KEY, "jane.doe@example.com") != one[0]["email_hmac"]
    assert other[0]["phone_hmac"] != one[0]["phone_hmac"]


@pytest.mark.parametrize("length", [1, 63, 64, 65, 200])
def test_hmac_is_rfc_2104_for_keys_shorter_and_longer_than_the_block(engine: str, length: int) -> None:
    """Both engines build HMAC-SHA256 from their own SHA-256; a key longer than SHA-256's 64-byte block is hashed
    first, a shorter one padded: the digests are those of Python's hmac module, for any text."""
    key = bytes((i * 37 + 11) % 256 for i in range(length))
    emails = ["jane.doe@example.com", "x_y+tag@sub.example.org", "a@b.co"]
    records = [GOOD["silver.customers"] | {"customer_id": f"C{i}", "email": e} for i, e in enumerate(emails)]
    got = rows(conform("silver.customers", bronze(engine, SILVER_LANDING["silver.customers"], records),
                       hmac_key=key).valid, "customer_id")
    assert [r["email_hmac"] for r in got] == [hmac_hex(key, e) for e in emails]
    assert {r["phone_hmac"] for r in got} == {hmac_hex(key, "15550104567")}


def test_masking_and_no_clear_pii_in_silver(engine: str) -> None:
    base = GOOD["silver.customers"]
    records = [
        base | {"customer_id": "a", "email": "Zoe+tag@Mail.Example.org", "phone": "07700 900123"},
        base | {"customer_id": "b", "email": "x@y.io", "phone": "  "},
        base | {"customer_id": "c", "email": "sam@example.com", "phone": "ext. 12"},
    ]
    valid = rows(conform_records(engine, "silver.customers", records).valid, "customer_id")
    assert [(r["customer_id"], r["email_masked"], r["phone_masked"], r["phone_hmac"]) for r in valid] == [
        ("a", "z***@mail.example.org", "***0123", hmac_hex(KEY, "07700900123")),
        ("b", "x***@y.io", None, None),
        ("c", "s***@example.com", "***12", hmac_hex(KEY, "12")),
    ]
    clear = {"zoe+tag@mail.example.org", "Zoe+tag@Mail.Example.org", "07700 900123", "07700900123", "x@y.io"}
    assert not clear & {v for r in valid for v in r.values() if isinstance(v, str)}
    assert not {"email", "phone"} & set(valid[0])


# ------------------------------------------------------------------------------------------ CRM links
def test_link_customers_to_crm_picks_the_latest_contact(engine: str) -> None:
    h = {e: hmac_hex(KEY, e) for e in ("a@x.io", "b@x.io", "c@x.io", "d@x.io")}
    customers = lazy(engine, {"customer_id": ["C1", "C2", "C3", "C4"],
                              "email_hmac": [h["a@x.io"], h["b@x.io"], h["c@x.io"], h["a@x.io"]]},
                     {"customer_id": pl.String, "email_hmac": pl.String})
    contacts = lazy(engine, {
        "contact_id": ["K1", "K2", "K4", "K3", "K9"],
        "account_id": ["A1", "A2", "A4", None, "A9"],
        "email_hmac": [h["a@x.io"], h["a@x.io"], h["b@x.io"], h["b@x.io"], h["d@x.io"]],
        "updated_at": [ts(1), ts(3), ts(2), ts(2), ts(5)],
    }, {"contact_id": pl.String, "account_id": pl.String, "email_hmac": pl.String, "updated_at": pl.Datetime("us", "UTC")})
    links = link_customers_to_crm(customers, contacts)
    assert list(links.collect_schema().names()) == table("silver.customer_crm_links").columns
    assert rows(links, "customer_id") == [
        {"customer_id": "C1", "contact_id": "K2", "account_id": "A2", "matched_on": "email_hmac"},  # latest update
        {"customer_id": "C2", "contact_id": "K3", "account_id": None, "matched_on": "email_hmac"},  # tie: smallest id
        {"customer_id": "C4", "contact_id": "K2", "account_id": "A2", "matched_on": "email_hmac"},
    ]


# --------------------------------------------------------------------------------------------- errors
def test_unknown_table_is_a_clear_error(engine: str) -> None:
    batch = bronze(engine, SILVER_LANDING["silver.orders"], [GOOD["silver.orders"]])
    with pytest.raises(ValueError, match=r"expected a silver table name .*silver\.orders.*got 'silver\.order'"):
        conform("silver.order", batch, hmac_key=KEY)


def test_missing_refs_name_what_was_expected(engine: str) -> None:
    batch = bronze(engine, SILVER_LANDING["silver.orders"], [GOOD["silver.orders"]])
    refs = order_refs(engine)
    del refs["silver.products"]
    with pytest.raises(ValueError, match=r"missing \['silver\.products'\]"):
        conform("silver.orders", batch, refs=refs, hmac_key=KEY)
    with pytest.raises(ValueError, match=r"expected refs \['silver\.fx_rates'\]"):
        conform("silver.opportunities", bronze(engine, SILVER_LANDING["silver.opportunities"], []), hmac_key=KEY)


def test_bad_arguments_are_clear_errors_that_never_show_the_key(engine: str) -> None:
    batch = bronze(engine, SILVER_LANDING["silver.accounts"], [GOOD["silver.accounts"]])
    with pytest.raises(ValueError, match="non-empty bytes"):
        conform("silver.accounts", batch, hmac_key=b"")
    with pytest.raises(ValueError, match="fx_window_days") as info:
        conform("silver.accounts", batch, hmac_key=KEY, fx_window_days=-1)
    assert KEY.decode() not in str(info.value)
    with pytest.raises(ValueError, match=r"expected columns \['domain'\]"):
        conform("silver.accounts", batch.drop("domain"), hmac_key=KEY)


def test_empty_batch_gives_empty_outputs(engine: str) -> None:
    out = conform_records(engine, "silver.orders", [])
    assert (rows(out.valid), qrows(out)) == ([], [])


def test_opportunities_need_the_run_date_to_pick_a_rate(engine: str) -> None:
    with pytest.raises(ValueError, match="expected run_date"):
        conform_records(engine, "silver.opportunities", [GOOD["silver.opportunities"]], run_date=None)


def test_any_iso_4217_currency_converts_and_only_non_codes_are_unknown(engine: str) -> None:
    """CNY, IDR and RON (never generated) convert at their rates; a valid code without a rate waits as
    fx.no_rate; only text that is not an ISO 4217 code is currency.unknown (XXX is ISO's "no currency")."""
    rates = [(c, D(2026, 11, 6), r, ts(6, 16)) for c, r in (("CNY", 7.1), ("IDR", 15800.0), ("RON", 4.6))]
    orders = [_order("cny", "cny", "2026-11-06T15:00:00Z"), _order("idr", "IDR", "2026-11-07T10:00:00Z"),
              _order("ron", "RON", "2026-11-06T10:00:00Z"), _order("kes", "KES", "2026-11-06T10:00:00Z"),
              _order("zzz", "ZZZ", "2026-11-06T10:00:00Z"), _order("xxx", "XXX", "2026-11-06T10:00:00Z")]
    out = conform_records(engine, "silver.orders", orders, refs=order_refs(engine, rates))
    assert [(r["order_id"], r["currency"], r["fx_rate"]) for r in rows(out.valid, "order_id")] == [
        ("cny", "CNY", 7.1), ("idr", "IDR", 15800.0), ("ron", "RON", 4.6)]
    assert [(json.loads(q["record"])["order_id"], q["rule"]) for q in qrows(out, "record")] == [
        ("kes", "fx.no_rate"), ("xxx", "currency.unknown"), ("zzz", "currency.unknown")]
    fx = conform_records(engine, "silver.fx_rates", [GOOD["silver.fx_rates"] | {"quote_currency": c}
                                                     for c in ("IDR", "RON", "ABC")])
    assert sorted(r["quote_currency"] for r in rows(fx.valid, "quote_currency")) == ["IDR", "RON"]


def test_timestamps_in_the_forms_exporters_write_are_read_as_utc(engine: str) -> None:
    """T or space, fractions up to nanoseconds (cut to microseconds), Z, lower-case z, an offset with or
    without a colon or minutes, or no zone (UTC): all parse, to the same instant on every engine."""
    forms = {
        "z": ("2026-11-07T10:00:00Z", ts(7, 10)),
        "millis": ("2026-11-07T09:30:00.123Z", dt.datetime(2026, 11, 7, 9, 30, 0, 123000, tzinfo=dt.UTC)),
        "nanos": ("2026-11-07T09:30:00.123456789Z", dt.datetime(2026, 11, 7, 9, 30, 0, 123456, tzinfo=dt.UTC)),
        "offset": ("2026-11-07T15:00:00+05:30", ts(7, 9, 30)),
        "compact-offset": ("2026-11-07T01:00:00-0800", ts(7, 9)),
        "hour-offset": ("2026-11-07T11:00:00+01", ts(7, 10)),
        "space-z": ("2026-11-07 09:30:00Z", ts(7, 9, 30)),
        "no-zone": ("2026-11-07 09:30:00", ts(7, 9, 30)),
        "lower": ("2026-11-07t09:30:00.5z", dt.datetime(2026, 11, 7, 9, 30, 0, 500000, tzinfo=dt.UTC)),
        "day-change": ("2026-11-07T02:00:00+05:30", ts(6, 20, 30)),
    }
    bad = {"too-far": "2026-11-07T10:00:00+15:00", "slash": "07/11/2026 10:00", "feb-30": "2026-02-30T00:00:00Z",
           "ten-digits": "2026-11-07T10:00:00.1234567890Z"}
    records = [GOOD["silver.orders"] | {"order_id": k, "updated_at": v} for k, (v, _) in forms.items()]
    records += [GOOD["silver.orders"] | {"order_id": k, "updated_at": v} for k, v in bad.items()]
    out = conform_records(engine, "silver.orders", records, run_date=D(2026, 11, 8))
    got = {r["order_id"]: r["updated_at"] for r in rows(out.valid, "order_id")}
    assert got == {k: expected for k, (_, expected) in forms.items()}
    assert sorted((json.loads(q["record"])["order_id"], q["rule"]) for q in qrows(out, "record")) == sorted(
        (k, "type.invalid_updated_at") for k in bad)


def _reference_instant(text: str) -> dt.datetime | None:
    """What a timestamp's text means, by Python's own calendar and arithmetic (not an engine's parser): the
    forms of ``TYPE_PATTERNS['timestamp']``, a fraction cut to microseconds, no zone meaning UTC."""
    import re

    m = re.fullmatch(r"(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?"
                     r"([Zz]|([+-])(\d\d)(?::?(\d\d))?)?", text)
    if m is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    if not 1000 <= year or hour > 23 or minute > 59 or second > 59:
        return None
    try:
        local = dt.datetime(year, month, day, hour, minute, second, int((m.group(7) or "").ljust(6, "0")[:6]))
    except ValueError:  # no such day in the calendar
        return None
    shift = dt.timedelta()
    if m.group(9):
        hours, minutes = int(m.group(10)), int(m.group(11) or 0)
        if hours > 14 or minutes > 59:
            return None
        shift = (1 if m.group(9) == "+" else -1) * dt.timedelta(hours=hours, minutes=minutes)
    return (local - shift).replace(tzinfo=UTC)


def test_every_timestamp_form_gives_the_instant_python_computes(engine: str) -> None:
    """A grid of the forms exporters write (T, t or space; fractions of 1 to 10 digits; Z, z, no zone, and
    offsets of an hour, hours and minutes, with and without a colon, up to +-14 h and past it; the calendar's
    edges, leap days, years 1000 to 9999): every engine reads each text as the instant Python computes, or
    rejects it when Python does."""
    from lakehouse.backends.expressions import with_timestamps

    days = ["2026-11-07", "2024-02-29", "2023-02-29", "2000-02-29", "1900-02-29", "1000-01-01", "0999-12-31",
            "9999-12-31", "1970-01-01", "2026-04-31", "2026-12-31"]
    times = ["00:00:00", "23:59:59", "24:00:00", "12:60:00"]
    fractions = ["", ".5", ".123", ".000001", ".1234567", ".999999999", ".1234567890", "."]
    zones = ["", "Z", "z", "+00", "-00:00", "+05:30", "-0800", "+14", "-14:00", "+1459", "+15:00", "-12:5",
             "+01:60", " +01:00"]
    texts = [f"{d}{sep}{t}{f}{z}" for d in days for sep in ("T", "t", " ") for t in times[:2] for f in fractions[:3]
             for z in zones[:3]]
    texts += [f"2026-11-07T{t}{f}{z}" for t in times for f in fractions for z in zones]
    frame = lazy(engine, {"text": texts}, {"text": pl.String})
    got = rows(with_timestamps(frame, {"text": "at"}, TYPE_PATTERNS["timestamp"]), "text")
    assert len(got) == len(texts)
    wrong = [(r["text"], r["at"], _reference_instant(r["text"])) for r in got if r["at"] != _reference_instant(r["text"])]
    assert wrong == []
    assert sum(r["at"] is not None for r in got) > len(texts) // 3  # most of the grid are instants


def test_implausible_dates_and_times_are_quarantined_before_they_reach_a_dimension(engine: str) -> None:
    """An order dated 9999-12-31 (or before 1990, or days after the run date), a signup in the future: each is
    quarantined as time.implausible; a day of tolerance after the run date passes; a deal may close in the
    future."""
    orders = [GOOD["silver.orders"] | {"order_id": k, "order_ts": v, "currency": "USD"} for k, v in (
        ("year-9999", "9999-12-31T00:00:00Z"), ("before-floor", "1989-12-31T23:59:59Z"),
        ("in-two-days", "2026-11-10T00:00:00Z"), ("tolerated", "2026-11-09T23:59:59Z"),
        ("floor", "1990-01-01T00:00:00Z"))]
    out = conform_records(engine, "silver.orders", orders, lookback_days=None)
    assert sorted(r["order_id"] for r in rows(out.valid)) == ["floor", "tolerated"]
    assert sorted((json.loads(q["record"])["order_id"], q["rule"]) for q in qrows(out, "record")) == [
        ("before-floor", "time.implausible"), ("in-two-days", "time.implausible"), ("year-9999", "time.implausible")]
    customers = [GOOD["silver.customers"] | {"customer_id": "future", "signup_date": "2026-11-12"},
                 GOOD["silver.customers"] | {"customer_id": "today", "signup_date": "2026-11-08"}]
    out = conform_records(engine, "silver.customers", customers)
    assert [r["customer_id"] for r in rows(out.valid)] == ["today"]
    assert [q["rule"] for q in qrows(out)] == ["time.implausible"]
    deals = [GOOD["silver.opportunities"] | {"opportunity_id": "next-year", "close_date": "2027-06-30"},
             GOOD["silver.opportunities"] | {"opportunity_id": "year-2200", "close_date": "2200-01-01"}]
    out = conform_records(engine, "silver.opportunities", deals)
    assert [r["opportunity_id"] for r in rows(out.valid)] == ["next-year"]
    assert [q["rule"] for q in qrows(out)] == ["time.implausible"]
