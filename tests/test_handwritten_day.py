"""A day nobody here generated: hand-written landing files in the dialects real systems send, run through the
daily flow on both engines, and gold checked against figures computed here in plain Python.

The files: typed Parquet (timestamps with a zone, without one, and in Europe/Berlin; decimals of scale 3; int32),
RFC 3339 timestamps with offsets and fractions (a T or a space), ten ISO 4217 currencies of which three (IDR, RON,
KWD) the sample generator never uses, and an FX feed without fixings on Christmas Day (a Friday) and the weekend
after it: orders of those days convert at the last fixing before them (Thursday's).
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from lakes import normalised

from lakehouse.contracts.catalog import TABLES

RUN = date(2026, 12, 28)  # a Monday; Friday 12-25 is a bank holiday, 12-26/27 a weekend
FIXINGS = [date(2026, 12, d) for d in (21, 22, 23, 24, 28)]
# Units of each currency per 1 USD, per fixing day (a made-up drift per day, so the day used shows).
LEVELS = {"EUR": 0.95, "GBP": 0.8, "JPY": 157.0, "CNY": 7.3, "INR": 85.0, "BRL": 6.1, "IDR": 16200.0,
          "RON": 4.75, "KWD": 0.3075}


def _rate(currency: str, day: date) -> float:
    return 1.0 if currency == "USD" else round(LEVELS[currency] * (1 + 0.001 * day.day), 6)


def _fixing_for(day: date) -> date:
    return max(d for d in FIXINGS if d <= day)


# (order_id, customer, product, quantity, unit price, currency, order time UTC, status)
ORDERS = [
    ("O1", "C1", "P1", 2, "19.990", "USD", datetime(2026, 12, 25, 9, 30), "placed"),
    ("O2", "C1", "P2", 1, "120.500", "EUR", datetime(2026, 12, 25, 23, 59, 59), "placed"),
    ("O3", "C2", "P1", 3, "2500.000", "JPY", datetime(2026, 12, 26, 0, 0, 1), "placed"),
    ("O4", "C2", "P3", 1, "899.900", "CNY", datetime(2026, 12, 26, 12, 0), "shipped"),
    ("O5", "C3", "P2", 4, "1499.000", "INR", datetime(2026, 12, 27, 8, 15), "placed"),
    ("O6", "C3", "P3", 2, "350.250", "BRL", datetime(2026, 12, 27, 20, 45), "placed"),
    ("O7", "C4", "P1", 1, "1250000.000", "IDR", datetime(2026, 12, 28, 1, 5), "placed"),
    ("O8", "C4", "P2", 5, "42.100", "RON", datetime(2026, 12, 28, 3, 0), "placed"),
    ("O9", "C5", "P3", 1, "15.125", "KWD", datetime(2026, 12, 28, 6, 30), "placed"),
    ("O10", "C5", "P1", 2, "30.000", "GBP", datetime(2026, 12, 28, 7, 0), "placed"),
    ("O11", "C6", "P2", 1, "75.000", "USD", datetime(2026, 12, 26, 10, 0), "placed"),
]
CANCELLED = {"O6"}  # by an event after the extract
DELIVERED = {"O4"}  # an update event after the extract's "shipped"
CURRENCIES = {o[5] for o in ORDERS}
CUSTOMERS = [f"C{i}" for i in range(1, 7)]


def _write_landing(root: Path) -> None:
    def folder(source: str, entity: str) -> Path:
        path = root / source / entity / RUN.isoformat()
        path.mkdir(parents=True, exist_ok=True)
        return path

    utc = pa.timestamp("us", tz="UTC")
    # Customers: a date column, and a timestamp without a zone (UTC by the landing contract), in nanoseconds.
    pq.write_table(pa.table({
        "customer_id": CUSTOMERS,
        "email": [f"person{i}@example.com" for i in range(1, 7)],
        "phone": ["+1 555 0100", None, "+44 20 7946 0000", None, None, "+49 30 1234567"],
        "first_name": ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald"],
        "last_name": ["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth"],
        "country": ["GB", "US", "GB", "NL", "US", "US"],
        "signup_date": pa.array([date(2026, 1, 10 + i) for i in range(6)], pa.date32()),
        "updated_at": pa.array([datetime(2026, 12, 20, 10, i) for i in range(6)], pa.timestamp("ns")),
    }), folder("snowflake", "customers") / "customers.parquet")
    # Products: a decimal of scale 2 and a timestamp in Europe/Berlin milliseconds.
    pq.write_table(pa.table({
        "product_id": ["P1", "P2", "P3"], "sku": ["SKU-1", "SKU-2", "SKU-3"],
        "product_name": ["Kettle", "Lamp", "Chair"], "category": ["Home", "Home", "Furniture"],
        "list_price_usd": pa.array([Decimal("20.00"), Decimal("130.00"), Decimal("150.00")], pa.decimal128(10, 2)),
        # 08:00 UTC, i.e. 09:00 in Berlin (built from the UTC value: pyarrow's conversion of zoned Python
        # datetimes changes once pandas is imported)
        "updated_at": pa.array([datetime(2026, 12, 1, 8, 0)] * 3, pa.timestamp("ms")).cast(
            pa.timestamp("ms", tz="Europe/Berlin")),
    }), folder("snowflake", "products") / "products.parquet")
    # Orders in two typed files: decimals of scale 3, int32 quantities, UTC microseconds.
    half = len(ORDERS) // 2
    for name, part in (("orders-0001.parquet", ORDERS[:half]), ("orders-0002.parquet", ORDERS[half:])):
        pq.write_table(pa.table({
            "order_id": [o[0] for o in part], "customer_id": [o[1] for o in part], "product_id": [o[2] for o in part],
            "quantity": pa.array([o[3] for o in part], pa.int32()),
            "unit_price": pa.array([Decimal(o[4]) for o in part], pa.decimal128(18, 3)),
            "currency": [o[5] for o in part], "status": [o[7] for o in part],
            "order_ts": pa.array([o[6] for o in part], utc), "updated_at": pa.array([o[6] for o in part], utc),
        }), folder("snowflake", "orders") / name)
    # Events: fractions and offsets (+05:30 is the same instant as the UTC time).
    events = []
    for i, o in enumerate(ORDERS):
        local = (o[6] + timedelta(hours=5, minutes=30)).strftime("%Y-%m-%dT%H:%M:%S.250+05:30")
        events.append({"event_id": f"E{i}", "order_id": o[0], "event_type": "created", "status": "placed",
                       "event_ts": local})
    late = (RUN.isoformat() + " 09:00:00.123456789Z")
    events += [{"event_id": "E-c", "order_id": "O6", "event_type": "cancelled", "status": "cancelled", "event_ts": late},
               {"event_id": "E-d", "order_id": "O4", "event_type": "updated", "status": "delivered", "event_ts": late}]
    (folder("kafka", "order_events") / "batch-0000.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    # FX: fixings only on business days (none on 12-25, 12-26, 12-27); the first file carries the history.
    fx = [{"rate_date": d.isoformat(), "base_currency": "USD", "quote_currency": c, "rate": str(_rate(c, d)),
           "published_at": f"{d.isoformat()}T16:00:00.5Z"} for d in FIXINGS for c in LEVELS]
    (folder("fx", "rates") / "rates.jsonl").write_text("".join(json.dumps(r) + "\n" for r in fx))
    # CRM: local time with an offset, a space instead of the T.
    (folder("crm", "accounts") / "accounts.csv").write_text(
        "account_id,account_name,domain,industry,owner_name,country,updated_at\n"
        "A1,Analytical Engines Ltd,engines.example,Manufacturing,Sam Rivera,GB,2026-12-27 18:00:00-05:00\n")
    (folder("crm", "contacts") / "contacts.csv").write_text(
        "contact_id,account_id,first_name,last_name,email,phone,lifecycle_stage,updated_at\n"
        "CT1,A1,Ada,Lovelace,Person1@Example.com,,customer,2026-12-27T18:00:00.5-05:00\n")
    (folder("crm", "opportunities") / "opportunities.csv").write_text(
        "opportunity_id,account_id,opportunity_name,stage,amount,currency,close_date,owner_name,updated_at\n"
        "D1,A1,Big deal,proposal,1000.000,KWD,2027-02-01,Sam Rivera,2026-12-27T23:00:00+01:00\n"
        "D2,A1,Won deal,closed_won,5000,RON,2026-12-20,Sam Rivera,2026-12-27T23:00:00Z\n")
    (folder("redshift", "customer_behaviour") / "behaviour.csv").write_text(
        "customer_id,activity_date,sessions,page_views,add_to_cart,time_on_site_s,extracted_at\n"
        "C1,2026-12-27,3,12,1,600,2026-12-28 02:00:00Z\n"
        "C2,2026-12-27,1,4,0,90,2026-12-28 02:00:00.000+00:00\n")


def _expected() -> dict[str, dict]:
    """Gold computed here from the orders above: per order, per product and day, per customer."""
    orders = {}
    for oid, cust, prod, qty, price, cur, ts, status in ORDERS:
        amount = qty * float(price)
        final = "cancelled" if oid in CANCELLED else "delivered" if oid in DELIVERED else status
        orders[oid] = {"customer_id": cust, "product_id": prod, "order_date": ts.date(), "quantity": qty,
                       "fx_rate": _rate(cur, _fixing_for(ts.date())), "amount_usd": amount / _rate(cur, _fixing_for(
                           ts.date())), "status": final}
    perf: dict[tuple, dict] = {}
    for o in orders.values():
        p = perf.setdefault((o["order_date"], o["product_id"]), {"orders": 0, "units": 0, "revenue_usd": 0.0})
        p["orders"] += 1
        if o["status"] != "cancelled":
            p["units"] += o["quantity"]
            p["revenue_usd"] += o["amount_usd"]
    customers = {c: {"lifetime_revenue_usd": 0.0, "order_count": 0, "cancelled_order_count": 0} for c in CUSTOMERS}
    for o in orders.values():
        c = customers[o["customer_id"]]
        if o["status"] == "cancelled":
            c["cancelled_order_count"] += 1
        else:
            c["order_count"] += 1
            c["lifetime_revenue_usd"] += o["amount_usd"]
    pipeline = 1000.0 / _rate("KWD", RUN)  # D1 is open (proposal), valued at the run date's rate; D2 is won
    return {"orders": orders, "perf": perf, "customers": customers, "pipeline": pipeline}


@pytest.mark.parametrize("engine", ["polars", "sail"])
def test_a_handwritten_day_in_every_dialect_matches_an_independent_computation(engine, prefect_harness, tmp_path,
                                                                             request):
    from lakehouse.flows.daily import daily_lakehouse

    assert {"IDR", "RON", "KWD"} <= CURRENCIES and len(CURRENCIES) == 10
    from lakehouse.backends.sources.sample import SAMPLE_CURRENCIES
    assert not {"IDR", "RON", "KWD"} & set(SAMPLE_CURRENCIES), "three currencies the generator never uses"
    landing, root = tmp_path / "landing", tmp_path / "lake"
    _write_landing(landing)
    kwargs = {} if engine == "polars" else {"backend": "spark", "spark_remote": request.getfixturevalue("sail_url")}
    summaries = daily_lakehouse(run_date=RUN, lake_root=str(root), landing_root=str(landing), **kwargs)
    assert not [s for s in summaries if s.get("quarantined")], [(s["table"], s["rules"]) for s in summaries if s.get("quarantined")]
    assert not [s for s in summaries if s.get("refused")]
    for name, spec in TABLES.items():
        if spec.layer == "quarantine":
            rows = normalised(root, name)
            assert rows is None or rows.height == 0, (name, rows)

    want = _expected()
    fact = normalised(root, "gold.fact_orders")
    assert fact is not None and fact.height == len(ORDERS)
    for row in fact.iter_rows(named=True):
        o = want["orders"][row["order_id"]]
        assert (row["customer_id"], row["product_id"], row["order_date"], row["quantity"], row["status"]) == (
            o["customer_id"], o["product_id"], o["order_date"], o["quantity"], o["status"]), row
        assert row["fx_rate"] == pytest.approx(o["fx_rate"], rel=1e-12), row
        assert row["amount_usd"] == pytest.approx(o["amount_usd"], rel=1e-9), row
        assert row["is_cancelled"] == (o["status"] == "cancelled")
    perf = normalised(root, "gold.product_performance")
    got = {(r["order_date"], r["product_id"]): r for r in perf.iter_rows(named=True)}
    assert set(got) == set(want["perf"])
    for key, p in want["perf"].items():
        assert (got[key]["orders"], got[key]["units"]) == (p["orders"], p["units"]), key
        assert got[key]["revenue_usd"] == pytest.approx(round(p["revenue_usd"], 2), abs=0.005), key
    c360 = {r["customer_id"]: r for r in normalised(root, "gold.customer_360").iter_rows(named=True)}
    for cid, c in want["customers"].items():
        assert (c360[cid]["order_count"], c360[cid]["cancelled_order_count"]) == (c["order_count"],
                                                                                   c["cancelled_order_count"]), cid
        assert c360[cid]["lifetime_revenue_usd"] == pytest.approx(round(c["lifetime_revenue_usd"], 2), abs=0.005)
    assert c360["C1"]["crm_account_id"] == "A1" and c360["C1"]["open_pipeline_usd"] == pytest.approx(
        round(want["pipeline"], 2), abs=0.005)
    assert c360["C1"]["sessions"] == 3 and c360["C2"]["page_views"] == 4
    days = normalised(root, "gold.dim_date")
    assert days.select("date", "is_weekend").rows() == [
        (date(2026, 12, d), d in (26, 27)) for d in range(25, 29)]
    products = normalised(root, "gold.dim_product")
    assert products.filter(pl.col("product_id") == "P1")["updated_at"].to_list() == [
        datetime(2026, 12, 1, 8, 0, tzinfo=UTC)], "09:00 in Berlin is 08:00 UTC"
