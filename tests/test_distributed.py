"""Distributed execution: the daily flow on Spark with Sail in local-cluster mode, where Sail's driver splits
each plan into stages and tasks that its workers run and report over RPC, shuffling data between them, leaves
the same tables as the laptop engine (the parity comparison of ``tests/lakes.py``). Every stage runs there:
bronze, silver, the gates, gold, the audit and release, the ledger and lineage."""

from __future__ import annotations

import re

import pytest
from lakes import assert_same_rows, normalised

from lakehouse.contracts.catalog import TABLES

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("sail-cluster")]  # one worker builds the cluster's lake


@pytest.fixture(scope="module")
def cluster_lake(daily_lake):
    return daily_lake("sail-cluster")


@pytest.mark.parametrize("name", sorted(TABLES))
def test_the_daily_flow_on_a_sail_cluster_leaves_the_laptop_engines_tables(cluster_lake, daily_lakes, name):
    left, right = normalised(daily_lakes("polars")["root"], name), normalised(cluster_lake.root, name)
    assert (left is None) == (right is None), f"{name} written by one engine only"
    if left is not None and right is not None:
        assert_same_rows(name, left, right)


def test_the_flow_ran_as_tasks_on_the_workers_with_shuffles_between_them(cluster_lake, sail_cluster):
    _, log = sail_cluster
    text = log.read_text(errors="replace")
    workers = set(re.findall(r"worker (\d+) is available", text))
    done = re.findall(r"ReportTaskStatusRequest \{ driver_id: \d+, job_id: (\d+), stage: (\d+), "
                      r"partition: (\d+), attempt: \d+, status: Succeeded", text)
    assert len(workers) >= 2, "the driver started workers"
    assert len({job for job, _, _ in done}) >= 50, "the flow's queries ran as jobs whose tasks workers reported"
    assert any(int(stage) > 0 for _, stage, _ in done), "jobs of more than one stage: data shuffled between them"
    assert any(int(partition) > 0 for _, _, partition in done), "stages split into several tasks"
    summaries = [s for day in cluster_lake.summaries.values() for s in day]
    assert any(s["table"] == "gold.fact_orders" and s.get("rows_written") for s in summaries)
