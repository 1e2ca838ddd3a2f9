"""The sample-data generator: determinism, the landing contract, volumes, and every dirt kind recounted from files."""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from lakehouse.backends.sources.sample import (
    DIRT_RATES,
    MANIFEST_NAME,
    RENAMED_COLUMN,
    SAMPLE_CURRENCIES,
    GenerationReport,
    SampleSpan,
    append,
    format_id,
    generate,
    read_span,
)
from lakehouse.contracts.landing import (
    ACCOUNTS,
    BEHAVIOUR,
    CONTACTS,
    CUSTOMERS,
    DEAL_STAGES,
    FX_RATES,
    LANDING_ENTITIES,
    OPPORTUNITIES,
    ORDER_EVENT_TYPES,
    ORDER_EVENTS,
    ORDER_STATUSES,
    ORDERS,
    PRODUCTS,
    LandingEntity,
)

EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
TS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
START = date(2026, 10, 30)  # a Friday: the span covers a weekend without FX rates
DAYS = 4


@dataclass
class Landing:
    """Every delivery of one generation, read back independently of the generator."""

    report: GenerationReport
    tables: dict[str, dict[str, pl.DataFrame]]  # entity -> day -> rows (JSON lines: the lines that parse)
    bad_lines: dict[str, int]  # entity -> lines that fail json.loads
    files: dict[str, dict[str, list[Path]]]  # entity -> day -> files

    def all(self, entity: LandingEntity) -> pl.DataFrame:
        frames = [f.select(entity.column_names) for f in self.tables[entity.name].values()
                  if set(entity.column_names) <= set(f.columns)]
        return pl.concat(frames)


def _read(root: Path, report: GenerationReport, days: set[str] | None = None) -> Landing:
    """The deliveries under ``root`` (only the day folders in ``days`` when given)."""
    tables: dict[str, dict[str, pl.DataFrame]] = {}
    files: dict[str, dict[str, list[Path]]] = {}
    bad: Counter[str] = Counter()
    for e in LANDING_ENTITIES:
        tables[e.name], files[e.name] = {}, {}
        for folder in sorted((root / e.source / e.entity).iterdir()):
            if days is not None and folder.name not in days:
                continue
            paths = sorted(folder.iterdir())
            files[e.name][folder.name] = paths
            if e.format == "jsonl":
                rows = []
                for path in paths:
                    for line in path.read_text().splitlines():
                        try:
                            rows.append(json.loads(line))
                        except json.JSONDecodeError:
                            bad[e.name] += 1
                frame = pl.DataFrame(rows, schema=dict.fromkeys(e.column_names, pl.String))
            elif e.format == "csv":
                frame = pl.concat([pl.read_csv(p, infer_schema=False) for p in paths])
            else:
                frame = pl.concat([_as_text(pl.read_parquet(p)) for p in paths])
            tables[e.name][folder.name] = frame
    return Landing(report, tables, dict(bad), files)


def _as_text(frame: pl.DataFrame) -> pl.DataFrame:
    """A typed Parquet extract's values as the text the landing format documents (UTC timestamps with Z)."""
    return frame.with_columns(
        pl.col(c).dt.strftime("%Y-%m-%dT%H:%M:%SZ") if isinstance(t, pl.Datetime) else pl.col(c).cast(pl.String)
        for c, t in frame.schema.items())


@pytest.fixture(scope="module")
def landing(tmp_path_factory) -> Landing:
    root = tmp_path_factory.mktemp("landing")
    report = generate(root, days=DAYS, scale=0.03, seed=7, start=START)
    return _read(root, report)


def _days(n: int, start: date = START) -> list[str]:
    return [(start + timedelta(days=i)).isoformat() for i in range(n)]


# ------------------------------------------------------------------------------------------ determinism
def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_arguments_give_identical_bytes_and_another_seed_differs(tmp_path):
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        generate(tmp_path / name, days=3, scale=0.01, seed=seed)
    a, b, c = (_snapshot(tmp_path / n) for n in "abc")
    assert len(a) == 9 * 3 + 3 + 1  # one file per entity and day, a second kafka batch per day, the record
    assert a == b
    assert a.keys() == c.keys()
    differing = [k for k in a if a[k] != c[k]]
    assert "snowflake/orders/2026-11-01/orders.parquet" in differing
    assert "kafka/order_events/2026-11-03/batch-0001.jsonl" in differing


# ------------------------------------------------------------------------------------------ layout and contract
def test_every_entity_and_day_has_its_files(landing):
    names = {"crm.accounts": "accounts_export.csv", "crm.contacts": "contacts_export.csv",
             "crm.opportunities": "opportunities_export.csv", "snowflake.customers": "customers.parquet",
             "snowflake.products": "products.parquet", "snowflake.orders": "orders.parquet",
             "redshift.customer_behaviour": "customer_behaviour.csv", "fx.rates": "rates.jsonl"}
    weekdays = [d for d in _days(DAYS) if d == START.isoformat() or date.fromisoformat(d).weekday() < 5]
    not_sundays = [d for d in _days(DAYS) if d == START.isoformat() or date.fromisoformat(d).weekday() != 6]
    quiet = {"snowflake.products": weekdays, "fx.rates": not_sundays}  # slow sources send nothing those days
    for e in LANDING_ENTITIES:
        assert list(landing.files[e.name]) == quiet.get(e.name, _days(DAYS)), e.name
        for day, paths in landing.files[e.name].items():
            if e.name == ORDER_EVENTS.name:
                assert len(paths) >= 2
                assert [p.name for p in paths] == [f"batch-{i:04d}.jsonl" for i in range(len(paths))]
            else:
                assert [p.name for p in paths] == [names[e.name]], (e.name, day)
    written = sorted(p for days in landing.files.values() for paths in days.values() for p in paths)
    assert sorted(landing.report.files) == written
    assert {n: r.files for n, r in landing.report.entities.items()} == {
        n: sum(len(p) for p in d.values()) for n, d in landing.files.items()}


def test_columns_are_the_declared_ones_in_order_except_one_renamed_file(landing):
    renamed = []
    for e in LANDING_ENTITIES:
        for paths in landing.files[e.name].values():
            for path in paths:
                if e.format == "csv":
                    header = path.read_text().splitlines()[0].split(",")
                elif e.format == "parquet":
                    schema = pl.read_parquet_schema(path)
                    # a typed unload: text, integers, decimals, dates and UTC timestamps as the contract declares
                    types = {c.name: c.type for c in e.columns}
                    expected = {"string": pl.String, "integer": pl.Int64, "decimal": pl.Decimal(18, 2),
                                "date": pl.Date, "timestamp": pl.Datetime("us", "UTC")}
                    assert {c: t for c, t in schema.items()} == {c: expected[types[c]] for c in schema}, path
                    header = list(schema)
                else:
                    keys = [list(json.loads(x)) for x in path.read_text().splitlines() if x.endswith("}")]
                    assert all(k == e.column_names for k in keys), path
                    continue
                if header != e.column_names:
                    renamed.append((path, header))
    entity, column, renamed_to = RENAMED_COLUMN
    assert len(renamed) == 1
    path, header = renamed[0]
    assert path == landing.report.renamed_column.path
    assert path.parts[-4:] == ("redshift", "customer_behaviour", _days(DAYS)[-1], "customer_behaviour.csv")
    assert header == [renamed_to if c == column else c for c in BEHAVIOUR.column_names]
    assert landing.report.entities[entity].dirt["renamed_column"] == 1


def test_no_renamed_column_for_a_single_day(tmp_path):
    report = generate(tmp_path, days=1, scale=0.01)
    assert report.renamed_column is None
    header = (tmp_path / "redshift/customer_behaviour/2026-11-01/customer_behaviour.csv").read_text().split("\n")[0]
    assert header.split(",") == BEHAVIOUR.column_names


def test_values_follow_the_contract_formats(landing):
    for e in LANDING_ENTITIES:
        frame = landing.all(e)
        for col in e.columns:
            values = frame.get_column(col.name).drop_nulls().str.strip_chars().to_list()
            if col.type == "timestamp" and e.source == "crm":  # the CRM's local time, milliseconds, offset
                assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}-05:00", v) for v in values), e.name
            elif col.type == "timestamp":
                assert all(TS.match(v) for v in values), (e.name, col.name)
            elif col.type == "date":
                assert all(DATE.match(v) for v in values), (e.name, col.name)
            elif col.type == "decimal":
                assert all(re.fullmatch(r"-?\d+\.\d+", v) for v in values), (e.name, col.name)
    orders = landing.all(ORDERS)
    assert set(orders.get_column("status")) <= set(ORDER_STATUSES)
    events = landing.all(ORDER_EVENTS)
    assert set(events.get_column("event_type")) == set(ORDER_EVENT_TYPES)
    assert set(landing.all(OPPORTUNITIES).get_column("stage")) <= set(DEAL_STAGES)
    assert orders.get_column("order_id").str.contains(r"^O\d{9}$").all()
    assert landing.all(CUSTOMERS).get_column("customer_id").str.contains(r"^C\d{7}$").all()
    assert landing.all(PRODUCTS).get_column("product_id").str.contains(r"^P\d{5}$").all()
    assert events.get_column("event_id").str.contains(r"^E\d{10}$").all()
    assert format_id("order_id", 7) == "O000000007"
    money = orders.get_column("unit_price").drop_nulls()
    assert money.str.contains(r"^-?\d+\.\d{2}$").all()


# ------------------------------------------------------------------------------------------ volumes
def test_volumes_scale_with_scale(tmp_path):
    small = generate(tmp_path / "s", days=2, scale=0.02)
    large = generate(tmp_path / "l", days=2, scale=0.04)
    for name in ("snowflake.orders", "kafka.order_events", "snowflake.customers", "redshift.customer_behaviour"):
        ratio = large.entities[name].rows / small.entities[name].rows
        assert 1.8 < ratio < 2.2, (name, ratio)
    assert small.volumes["orders"] == 2_000 and large.volumes["orders"] == 4_000
    orders = pl.read_parquet(tmp_path / "l/snowflake/orders/*/orders.parquet")
    assert 4_000 <= orders.height <= 4_000 * 1.05  # + late updates and duplicates


def test_tiny_scale_keeps_minimum_volumes(tmp_path):
    report = generate(tmp_path, days=2, scale=0.001)
    assert report.volumes["products"] == 20 and report.volumes["customers"] == 20
    products = pl.read_parquet(tmp_path / "snowflake/products/2026-11-01/products.parquet")
    assert products.height == 20


def test_customers_and_products_load_on_day_one_orders_spread_evenly(landing):
    day1, *later = _days(DAYS)
    customers = landing.tables[CUSTOMERS.name]
    assert customers[day1].height > 3 * max(customers[d].height for d in later)
    assert all(customers[d].height > 0 for d in later)  # sign-ups and updates every day
    products = landing.tables[PRODUCTS.name]
    assert products[day1].height == landing.report.volumes["products"]
    new_orders = [landing.tables[ORDERS.name][d].filter(pl.col("order_ts").str.starts_with(d)).height
                  for d in _days(DAYS)]
    assert max(new_orders) - min(new_orders) <= 0.05 * max(new_orders)


def test_behaviour_is_one_row_per_active_customer_per_day(landing):
    for day, frame in landing.tables[BEHAVIOUR.name].items():
        known = {c for d, f in landing.tables[CUSTOMERS.name].items() if d <= day for c in f["customer_id"]}
        distinct = frame.unique()
        assert distinct.get_column("customer_id").is_unique().all()
        assert set(distinct.get_column("activity_date")) == {day}
        assert 0.2 < distinct.height / len(known) < 0.4
        assert set(distinct.get_column("customer_id")) <= known


def test_crm_ratios_and_contacts_match_customers_by_email(landing):
    v = landing.report.volumes
    assert v["accounts"] == round(v["customers"] / 4)
    assert v["contacts"] == round(v["accounts"] * 1.5) and v["opportunities"] == round(v["accounts"] / 2)
    emails = {e.strip().lower() for e in landing.all(CUSTOMERS).get_column("email").drop_nulls()}
    contacts = landing.all(CONTACTS).unique("contact_id")
    contact_emails = contacts.get_column("email").drop_nulls().to_list()
    matched = [e for e in contact_emails if e.strip().lower() in emails]
    assert len(matched) >= 0.6 * contacts.height
    assert any(e != e.strip() for e in matched) and any(e != e.lower() for e in matched)


# ------------------------------------------------------------------------------------------ orders and events
def test_orders_events_and_late_updates_are_consistent(landing):
    orders = landing.all(ORDERS).filter(pl.col("order_ts").is_not_null())
    assert (orders.get_column("updated_at") >= orders.get_column("order_ts")).all()
    events = landing.all(ORDER_EVENTS)
    created = events.filter(pl.col("event_type") == "created")
    assert set(created.get_column("status")) == {"placed"}
    # every order gets a `created` event in the batches of its order day
    for day in _days(DAYS):
        placed = landing.tables[ORDERS.name][day].filter(pl.col("order_ts").str.starts_with(day))
        got = landing.tables[ORDER_EVENTS.name][day].filter(pl.col("event_type") == "created")
        assert set(placed.get_column("order_id")) == set(got.get_column("order_id"))
    first_ts = dict(orders.select("order_id", "order_ts").iter_rows())
    for order_id, ts in events.select("order_id", "event_ts").iter_rows():
        assert ts >= first_ts[order_id]
    kinds = Counter(events.unique("event_id").get_column("event_type"))
    assert 0.2 < kinds["updated"] / kinds["created"] < 0.4
    assert 0.02 < kinds["cancelled"] / kinds["created"] < 0.08
    # late updates: earlier days' orders re-sent with a later updated_at and a changed status
    late = [f.filter(~pl.col("order_ts").str.starts_with(d)) for d, f in landing.tables[ORDERS.name].items()]
    late_rows = pl.concat(late).unique()
    assert late_rows.height == landing.report.entities[ORDERS.name].late_updates > 0
    assert set(late_rows.get_column("status")) <= {"shipped", "delivered", "cancelled"}
    for day, frame in zip(_days(DAYS), late, strict=True):
        assert frame.get_column("updated_at").str.starts_with(day).all()
        lag = frame.select((pl.lit(date.fromisoformat(day)) - pl.col("order_ts").str.slice(0, 10).str.to_date())
                           .dt.total_days()).to_series()
        assert lag.is_between(1, 3).all()
    assert orders.filter(pl.col("order_ts").str.slice(0, 10).str.to_date().dt.weekday() >= 6).height > 0  # weekend


def test_fx_rates_are_business_days_with_history_in_the_first_file(landing):
    rates = landing.all(FX_RATES)
    assert set(rates.get_column("base_currency")) == {"USD"}
    quotes = set(SAMPLE_CURRENCIES) - {"USD"}
    assert set(rates.get_column("quote_currency")) == quotes
    days = rates.get_column("rate_date").str.to_date()
    assert (days.dt.weekday() <= 5).all()  # Monday=1 .. Friday=5
    first = landing.tables[FX_RATES.name][START.isoformat()]
    history = first.get_column("rate_date").str.to_date()
    assert history.min() >= START - timedelta(days=10) and history.min() < START - timedelta(days=7)
    for day, frame in landing.tables[FX_RATES.name].items():
        weekday = date.fromisoformat(day).weekday()
        if weekday >= 5:  # Saturday: an empty "no fixings" file (Sunday: none, see the files test)
            assert weekday == 5 and frame.height == 0
        elif day != START.isoformat():
            assert frame.get_column("rate_date").to_list() == [day] * len(quotes)
    levels = dict(rates.group_by("quote_currency").agg(pl.col("rate").cast(pl.Float64).mean()).iter_rows())
    for cur, level in {"EUR": 0.92, "JPY": 150, "INR": 83, "GBP": 0.79}.items():
        assert abs(levels[cur] / level - 1) < 0.05


def test_every_clean_order_has_a_rate_within_four_days_before(landing):
    rates = landing.all(FX_RATES).select(
        "quote_currency", pl.col("rate_date").str.to_date(), pl.col("rate").cast(pl.Float64))
    orders = landing.all(ORDERS).filter(
        pl.col("currency").is_in(SAMPLE_CURRENCIES) & (pl.col("currency") != "USD")
    ).select("order_id", "currency", day=pl.col("order_ts").str.slice(0, 10).str.to_date())
    assert orders.height > 0
    matched = orders.sort("day").join_asof(
        rates.sort("rate_date"), left_on="day", right_on="rate_date", by_left="currency",
        by_right="quote_currency", strategy="backward", check_sortedness=False)
    lag = (matched.get_column("day") - matched.get_column("rate_date")).dt.total_days()
    assert lag.null_count() == 0
    assert lag.max() <= 4
    weekend = matched.filter(pl.col("day").dt.weekday() >= 6)
    assert weekend.height > 0 and (weekend.get_column("rate_date").dt.weekday() == 5).all()


# ------------------------------------------------------------------------------------------ dirt, recounted
def _dirt_in_files(landing: Landing, issued: dict[str, set[str]]) -> dict[str, dict[str, int]]:
    """Every dirt kind recounted from the files, per entity; ``issued`` holds every customer and product id of
    the folder (an unknown reference is one outside it)."""
    found: dict[str, dict[str, int]] = {e.name: {} for e in LANDING_ENTITIES}
    for e in LANDING_ENTITIES:
        frames = [f for f in landing.tables[e.name].values() if f.height]
        if "duplicate" in DIRT_RATES[e.name]:
            found[e.name]["duplicate"] = sum(f.height - f.unique().height for f in frames)
        if "null_required" in DIRT_RATES[e.name]:
            required = [c.name for c in e.columns if c.required]
            found[e.name]["null_required"] = sum(
                f.select(pl.col(c).is_null().sum() for c in required if c in f.columns).sum_horizontal().item()
                for f in frames)
        if "malformed_json" in DIRT_RATES[e.name]:
            found[e.name]["malformed_json"] = landing.bad_lines.get(e.name, 0)
    for e in (CUSTOMERS, CONTACTS):
        emails = landing.all(e).get_column("email").drop_nulls().to_list()
        found[e.name]["malformed_email"] = sum(not EMAIL.match(x.strip()) for x in emails)
    for e in (ORDERS, OPPORTUNITIES):
        found[e.name]["unknown_currency"] = landing.all(e).filter(~pl.col("currency").is_in(SAMPLE_CURRENCIES)).height
    orders = landing.all(ORDERS)
    qty, price = orders.get_column("quantity").cast(pl.Int64), orders.get_column("unit_price").cast(pl.Float64)
    found[ORDERS.name]["amount_out_of_range"] = (((qty < 1) | (qty > 1000)).fill_null(False) | (price < 0)).sum()
    for col, kind in (("customer_id", "unknown_customer"), ("product_id", "unknown_product")):
        found[ORDERS.name][kind] = sum(r not in issued[col] for r in orders.get_column(col).drop_nulls().to_list())
    return found


def _issued(landing: Landing) -> dict[str, set[str]]:
    return {"customer_id": set(landing.all(CUSTOMERS).get_column("customer_id")),
            "product_id": set(landing.all(PRODUCTS).get_column("product_id"))}


def test_every_dirt_kind_recounted_from_the_files_matches_the_report_and_occurs(landing):
    found = _dirt_in_files(landing, _issued(landing))
    for e in LANDING_ENTITIES:
        reported = {k: n for k, n in landing.report.entities[e.name].dirt.items() if k != "renamed_column"}
        assert found[e.name] == reported, e.name
        assert all(n >= 1 for n in reported.values()), (e.name, reported)  # every configured kind occurs


def test_amounts_out_of_range_are_the_only_quantities_outside_one_to_ten(landing):
    orders = landing.all(ORDERS)
    qty = orders.get_column("quantity").cast(pl.Int64)
    bad = ((qty < 1) | (qty > 1000)).fill_null(False) | (orders.get_column("unit_price").cast(pl.Float64) < 0)
    clean = qty.filter(~bad).drop_nulls()
    assert clean.min() >= 1 and clean.max() <= 10


def test_unknown_ids_come_from_a_range_no_id_is_issued_from(landing):
    orders, issued = landing.all(ORDERS), _issued(landing)
    for col, width in (("customer_id", 7), ("product_id", 5)):
        unknown = [r for r in orders.get_column(col).drop_nulls().to_list() if r not in issued[col]]
        assert unknown and all(int(r.lstrip("CP")) >= 9 * 10 ** width for r in unknown), col


def test_rows_in_the_report_are_the_rows_in_the_files(landing):
    for e in LANDING_ENTITIES:
        rows = sum(f.height for f in landing.tables[e.name].values()) + landing.bad_lines.get(e.name, 0)
        assert rows == landing.report.entities[e.name].rows, e.name


# ------------------------------------------------------------------------------------------ growing by a day
PLANNED, ADDED = 2, 3  # Friday and Saturday generated, then Sunday to Tuesday appended


@dataclass
class Grown:
    root: Path
    before: dict[str, bytes]  # the folder's files before the append
    report: GenerationReport  # what the append wrote
    everything: Landing  # every day, read back
    added: Landing  # the appended days only


@pytest.fixture(scope="module")
def grown(tmp_path_factory) -> Grown:
    root = tmp_path_factory.mktemp("grown")
    generate(root, days=PLANNED, scale=0.1, seed=7, start=START)
    before = _snapshot(root)
    report = append(root, days=ADDED)
    return Grown(root, before, report, _read(root, report),
                 _read(root, report, days=set(_days(PLANNED + ADDED)[PLANNED:])))


def _first_seen(landing: Landing, entity: LandingEntity, key: str) -> dict[str, set[str]]:
    """Per day, the ``key`` values no earlier day's file holds (new records, not re-sends)."""
    seen: set[str] = set()
    out = {}
    for day, frame in sorted(landing.tables[entity.name].items()):
        ids = set(frame.get_column(key).drop_nulls())
        out[day], seen = ids - seen, seen | ids
    return out


def _number(value: str) -> int:
    return int(value.lstrip("ACDEOPT"))


def test_append_writes_the_next_days_and_leaves_the_earlier_ones_as_they_were(grown):
    after = _snapshot(grown.root)
    new_days = _days(PLANNED + ADDED)[PLANNED:]
    assert {k: v for k, v in after.items() if k in grown.before and k != MANIFEST_NAME} == {
        k: v for k, v in grown.before.items() if k != MANIFEST_NAME}
    added = sorted(k for k in after if k not in grown.before)
    assert added and all(Path(k).parts[2] in new_days for k in added)
    assert sorted(str(p.relative_to(grown.root)) for p in grown.report.files) == added
    assert grown.report.start == START + timedelta(days=PLANNED) and grown.report.days == ADDED
    assert read_span(grown.root) == SampleSpan(start=START, plan_days=PLANNED, days=PLANNED + ADDED, scale=0.1,
                                               seed=7)
    assert read_span(grown.root).next_day == START + timedelta(days=PLANNED + ADDED)


def test_appending_day_by_day_gives_the_same_files_as_appending_them_at_once(grown, tmp_path):
    generate(tmp_path, days=PLANNED, scale=0.1, seed=7, start=START)
    for _ in range(ADDED):
        append(tmp_path, days=1)
    assert _snapshot(tmp_path) == _snapshot(grown.root)


def test_generate_and_append_to_s3_write_the_files_a_folder_gets(grown, aws, monkeypatch):
    """``s3://`` as the out folder (moto): the same objects, byte for byte, as ``grown``'s folder, the span
    recorded there, the report naming the objects."""
    import boto3

    from lakehouse.backends.storage import S3Path

    monkeypatch.setenv("AWS_ALLOW_HTTP", "true")
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="generated-landing")
    out = "s3://generated-landing/landing"
    generate(out, days=PLANNED, scale=0.1, seed=7, start=START)
    report = append(out, days=ADDED)
    objects = {o["Key"].removeprefix("landing/"): s3.get_object(Bucket="generated-landing", Key=o["Key"])["Body"].read()
               for page in s3.get_paginator("list_objects_v2").paginate(Bucket="generated-landing", Prefix="landing/")
               for o in page.get("Contents", [])}
    assert objects == _snapshot(grown.root)
    assert read_span(out) == read_span(grown.root)
    assert sorted(str(p) for p in report.files) == sorted(f"{out}/{p.relative_to(grown.root).as_posix()}"
                                                          for p in grown.report.files)
    assert all(isinstance(p, S3Path) for p in report.files)


def test_appended_days_continue_the_ids_at_the_rate_of_the_last_planned_day(grown):
    days = _days(PLANNED + ADDED)
    for entity, key in ((CUSTOMERS, "customer_id"), (ORDERS, "order_id"), (ACCOUNTS, "account_id"),
                        (CONTACTS, "contact_id"), (OPPORTUNITIES, "opportunity_id")):
        new = _first_seen(grown.everything, entity, key)
        last_planned = len(new[days[PLANNED - 1]])
        for i, day in enumerate(days[PLANNED:], start=PLANNED):
            numbers = sorted(_number(x) for x in new[day])
            earlier = max(_number(x) for d in days[:i] for x in new[d])
            # the next ids, with no gap, as many as the last planned day signed up / placed
            assert numbers == list(range(earlier + 1, earlier + 1 + last_planned)), (entity.name, day)
    events = _first_seen(grown.everything, ORDER_EVENTS, "event_id")
    numbers = sorted(_number(x) for d in days for x in events[d])
    assert numbers == list(range(1, len(numbers) + 1))  # event ids run on from the planned days, no gap


def test_appended_days_bring_the_late_updates_and_events_of_earlier_orders(grown):
    days = _days(PLANNED + ADDED)
    placed = {o: d for d, ids in _first_seen(grown.everything, ORDERS, "order_id").items() for o in ids}
    late = 0
    for day in days[PLANNED:]:
        resent = grown.added.tables[ORDERS.name][day].filter(~pl.col("order_ts").str.starts_with(day)).unique()
        assert resent.get_column("updated_at").str.starts_with(day).all()
        assert set(resent.get_column("status")) <= {"shipped", "delivered", "cancelled"}
        assert all(placed[o] < day for o in resent.get_column("order_id"))
        late += resent.height
    assert late == grown.report.entities[ORDERS.name].late_updates > 0
    later_events = grown.added.all(ORDER_EVENTS).filter(pl.col("event_type") != "created")
    planned_orders = {o for o, d in placed.items() if d in days[:PLANNED]}
    assert set(later_events.get_column("order_id")) & planned_orders  # events of orders placed before the append


def test_appended_days_keep_the_quiet_days_and_no_renamed_column(grown):
    files = grown.added.files
    sunday, monday = _days(PLANNED + ADDED)[PLANNED:PLANNED + 2]
    assert sunday not in files[PRODUCTS.name] and monday in files[PRODUCTS.name]
    assert sunday not in files[FX_RATES.name] and monday in files[FX_RATES.name]
    assert grown.report.renamed_column is None
    for paths in files[BEHAVIOUR.name].values():
        assert paths[0].read_text().splitlines()[0].split(",") == BEHAVIOUR.column_names


def test_appended_dirt_recounted_from_the_files_matches_the_report(grown):
    found = _dirt_in_files(grown.added, _issued(grown.everything))
    for e in LANDING_ENTITIES:
        reported = {k: n for k, n in grown.report.entities[e.name].dirt.items() if k != "renamed_column"}
        assert found[e.name] == reported, e.name
    assert sum(n for e in found.values() for n in e.values()) > 0
    for e in LANDING_ENTITIES:
        rows = sum(f.height for f in grown.added.tables[e.name].values()) + grown.added.bad_lines.get(e.name, 0)
        assert rows == grown.report.entities[e.name].rows, e.name


def test_append_needs_a_generated_folder_and_a_day_count(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"expected a landing folder written by .*{MANIFEST_NAME}"):
        append(tmp_path)
    generate(tmp_path, days=1, scale=0.01)
    with pytest.raises(ValueError, match="expected days as an integer >= 1"):
        append(tmp_path, days=0)
    (tmp_path / MANIFEST_NAME).write_text("{}")
    with pytest.raises(ValueError, match="expected .* to hold start, plan_days, days, scale and seed"):
        append(tmp_path)


def test_a_day_appended_to_a_one_day_generation_is_a_day_of_sign_ups_not_a_second_initial_load(tmp_path):
    generate(tmp_path, days=1, scale=0.1, seed=3)
    report = append(tmp_path)
    assert report.entities[CUSTOMERS.name].rows < 0.1 * 1_000  # a week's span's later day: ~3% of customers
    assert report.entities[ORDERS.name].rows >= 10_000  # a day of orders is the day's volume


# ------------------------------------------------------------------------------------------ API
def test_progress_is_reported_per_entity_and_day(tmp_path):
    calls: list[tuple[str, int, int]] = []
    generate(tmp_path, days=2, scale=0.01, progress=lambda step, done, total: calls.append((step, done, total)))
    assert [c[1] for c in calls] == list(range(1, 19)) and {c[2] for c in calls} == {18}
    assert calls[0][0] == "crm.accounts 2026-11-01" and calls[-1][0] == "kafka.order_events 2026-11-02"


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"days": 0}, ValueError), ({"days": 2, "scale": 0}, ValueError), ({"days": 2, "scale": float("nan")}, ValueError),
    ({"days": 2, "start": datetime(2026, 11, 1)}, TypeError),
])
def test_bad_arguments_say_what_was_expected(tmp_path, kwargs, error):
    with pytest.raises(error, match="expected"):
        generate(tmp_path, **kwargs)
