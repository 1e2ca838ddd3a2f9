"""The table graph is declared once (each table's ``inputs`` in contracts/catalog.py); the build orders, what
each task reads and which function builds a gold table are derived from it."""

from __future__ import annotations

import ast
import inspect

import pytest

from lakehouse.contracts.catalog import TABLES, build_order, conform_order, table, tables
from lakehouse.tasks import gold as gold_tasks


def test_every_declared_input_is_a_table_and_the_graph_has_no_cycle():
    for spec in tables():
        for name in spec.inputs:
            assert name in TABLES, f"{spec.name} declares an unknown input {name!r}"
    for layer in ("bronze", "silver", "gold", "quarantine"):
        assert sorted(build_order(layer)) == sorted(t.name for t in tables(layer))


@pytest.mark.parametrize("layer", ["silver", "gold"])
def test_the_build_order_puts_every_table_after_its_inputs_and_a_history_after_its_table(layer):
    order = build_order(layer)
    for i, name in enumerate(order):
        before = set(order[:i])
        assert {n for n in table(name).inputs if table(n).layer == layer} <= before, name
        if table(name).history:
            assert table(name).history in order[i + 1:]


def test_the_refine_stage_conforms_every_silver_table_fed_by_bronze_after_the_tables_its_rules_look_up():
    order = conform_order()
    assert sorted(order) == sorted(t.name for t in tables("silver") if t.source)
    for i, name in enumerate(order):
        assert set(table(name).lookups) <= set(order[:i]), name
    assert table("silver.orders").lookups == ("silver.customers", "silver.products", "silver.fx_rates")
    assert table("silver.orders").source == "bronze.snowflake.orders"


def test_the_graph_reaches_a_history_table_through_the_table_whose_conform_writes_it():
    # fact_orders <- dim_customer <- customer_versions, the history silver.customers' conform writes.
    assert {"silver.orders", "silver.order_events", "gold.dim_customer"} == set(table("gold.fact_orders").inputs)
    assert "silver.customer_versions" in table("gold.dim_customer").inputs
    assert table("silver.customers").history == "silver.customer_versions"
    order = build_order("silver")
    assert order.index("silver.customers") < order.index("silver.customer_versions")
    assert "silver.customer_behaviour" not in table("gold.fact_orders").inputs
    assert table("silver.orders").source == "bronze.snowflake.orders"


def test_every_gold_table_has_one_builder_and_the_flow_runs_them_in_build_order(pristine_lake):
    assert set(gold_tasks.BUILDERS) == {t.name for t in tables("gold")}
    # What the daily flow did: its gold tasks' summaries, in the order it ran them, for each day.
    for summaries in pristine_lake["summaries"].values():
        ran = [s["table"] for s in summaries if s.get("stage") == "gold"]
        assert ran == list(build_order("gold"))


@pytest.mark.parametrize("name", sorted(gold_tasks.BUILDERS))
def test_a_builder_reads_only_the_inputs_its_table_declares(name):
    """Each builder asks its ``Inputs`` for tables by name; every name it asks for is declared, and every
    declared input is read (an input nobody reads would make the task's cache key and ledger lie)."""
    tree = ast.parse(inspect.getsource(gold_tasks.BUILDERS[name]))
    read = {c.args[0].value for c in ast.walk(tree) if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)
            and c.func.id == "read" and c.args and isinstance(c.args[0], ast.Constant)}
    assert read == set(table(name).inputs)


def test_reading_a_table_the_declaration_does_not_name_is_an_error():
    read = gold_tasks.Inputs(table("gold.dim_product"), lambda n: n)
    assert read("silver.products") == "silver.products"
    with pytest.raises(KeyError, match=r"declared inputs \['silver.products'\], got 'silver.orders'"):
        read("silver.orders")


def test_the_plan_reads_the_silver_tables_it_joins_and_their_bronze_batches_but_not_the_fact():
    reads = gold_tasks.plan_inputs()
    assert set(reads) == {"silver.orders", "silver.order_events", "silver.customer_versions",
                          "bronze.snowflake.orders", "bronze.kafka.order_events", "bronze.snowflake.customers"}
    assert "gold.fact_orders" not in reads
