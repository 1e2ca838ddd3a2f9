"""pytest fixtures for testing a change to the pipeline the way the project tests its own (``docs/testing.md``).

Load them from your ``conftest.py``::

    pytest_plugins = ["lakehouse.testing.plugin"]

- ``prefect_harness``: one temporary Prefect server (SQLite) for the session; flows run against it.
- ``sail_url`` / ``sail_session``: Sail's Spark Connect server on loopback for the session (the spark extra),
  stopped by its process id; a SparkSession on it. ``sail_cluster`` / ``sail_cluster_url``: the same in Sail's
  local-cluster mode (driver and workers over RPC), to see a plan run distributed; ``sail_cluster`` also gives
  the server's log.
- ``lakehouse_engine``: runs a test once per engine (``polars``, ``sail``); build frames there with
  :func:`lakehouse.testing.frame`.
- ``sample_landing(days=2, scale=0.03, seed=7, start=...)``: generated landing files, made once per test run
  (pytest-xdist's workers share them: copy before changing).
- ``daily_lake(engine="polars", days=2, ...)``: a lake the daily flow built over those days on an engine,
  built once per test run and argument set (the workers share the build; each gets a copy of ``root``), with a
  copy as each day left it (copy it before writing to it).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import TypeVar

import pytest

from lakehouse.testing import engines
from lakehouse.testing.lakes import DEFAULT_START, BuiltLake, run_days
from lakehouse.testing.servers import start_sail, stop

T = TypeVar("T")

#: The fixture giving each Spark engine's server address.
REMOTES = {"sail": "sail_url", "sail-cluster": "sail_cluster_url"}

# A test session's Prefect settings: no analytics, a patient start-up on a busy machine, quiet logs.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect server (SQLite) for every flow test of the session. A flow called in the test's
    process sends no heartbeat: Prefect's heartbeat thread sleeps in one-second steps and a flow's end waits for
    it, which cost a day of the daily flow at the tests' scale about a second (4.2-4.5 s instead of 5.3-6.4 s).
    (``lakehouse run`` sends its run's heartbeat itself, ``flows/daily.py: prompt_heartbeats``; a deployment's
    run in a worker's process keeps Prefect's.)"""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120), \
            temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield


@pytest.fixture(scope="session")
def sail_url(tmp_path_factory):
    """A Sail Spark Connect server process on loopback for the whole session, stopped by its process id."""
    try:
        proc, url = start_sail(tmp_path_factory.mktemp("sail"))
    except RuntimeError as exc:
        pytest.fail(str(exc))
    yield url
    from lakehouse.backends.spark.session import stop_sessions

    stop_sessions()  # while the server still runs: a client left open retries against a dead server at exit
    stop(proc)


@pytest.fixture(scope="session")
def sail_cluster(tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """A Sail server in ``local-cluster`` mode (driver and workers talking over RPC on loopback) for the session,
    stopped by its process id: its ``sc://`` address and its log, where the driver records every task status a
    worker reports."""
    workdir = tmp_path_factory.mktemp("sail-cluster")
    try:
        proc, url = start_sail(workdir, mode="local-cluster")
    except RuntimeError as exc:
        pytest.fail(str(exc))
    yield url, workdir / "sail.log"
    from lakehouse.backends.spark.session import stop_sessions

    stop_sessions()
    stop(proc)


@pytest.fixture(scope="session")
def sail_cluster_url(sail_cluster) -> str:
    """The ``sc://`` address of the session's local-cluster Sail server."""
    return sail_cluster[0]


@pytest.fixture(scope="session")
def sail_session(sail_url):
    """A SparkSession on the session's Sail server."""
    from lakehouse.backends.spark.session import session_for
    from lakehouse.deployments.settings import SparkSettings

    spark, _ = session_for(SparkSettings(remote=sail_url))
    yield spark
    spark.stop()  # while the server still runs: a client left open retries against a dead server at exit


def use_engine(request: pytest.FixtureRequest, name: str) -> str:
    """Start ``name``'s session once per test session (from the ``<name>_session`` fixture) and return
    ``name``, so :func:`lakehouse.testing.frame` builds frames there."""
    if name != "polars" and name not in engines.SESSIONS:
        engines.SESSIONS[name] = request.getfixturevalue(f"{name}_session")
    return name


@pytest.fixture(params=engines.DELTA_ENGINES)
def lakehouse_engine(request) -> str:
    """The name of the engine this run of the test uses (``polars``, then ``sail``)."""
    return use_engine(request, request.param)


def shared_once(tmp_path_factory: pytest.TempPathFactory, name: str, make: Callable[[Path], T]) -> T:
    """``make(folder)`` once per test run: with pytest-xdist, the first worker to ask builds it in a folder all
    workers see (the parent of their temporary folders) under a file lock, and the others wait and load the
    result it recorded (pickled); without xdist, once per session. ``name`` names the folder; what a failed
    build left there is removed before the next worker builds again."""
    import pickle
    import shutil

    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    folder, done = shared / name, shared / f"{name}.pickle"
    with FileLock(str(shared / f"{name}.lock")):
        if done.exists():
            return pickle.loads(done.read_bytes())
        shutil.rmtree(folder, ignore_errors=True)
        value = make(folder)
        done.write_bytes(pickle.dumps(value))
        return value


@pytest.fixture(scope="session")
def sample_landing(tmp_path_factory) -> Callable[..., Path]:
    """``sample_landing(days=2, scale=0.03, seed=7, start=2026-11-01)``: a landing folder of generated files
    (the sample sources' days ``start`` .. ``start + days - 1``), made once per test run per argument set and
    shared by the run's xdist workers: read it, or copy it before changing it."""
    from lakehouse.backends.sources.sample import generate

    def make(days: int = 2, scale: float = 0.03, seed: int = 7, start: date = DEFAULT_START) -> Path:
        def build(out: Path) -> Path:
            generate(out, days=days, scale=scale, seed=seed, start=start)
            return out

        return shared_once(tmp_path_factory, f"landing-{days}-{scale}-{seed}-{start}", build)

    return make


@pytest.fixture(scope="session")
def daily_lake(prefect_harness, sample_landing, tmp_path_factory, request) -> Callable[..., BuiltLake]:
    """``daily_lake(engine="polars", days=2, scale=0.03, seed=7, start=2026-11-01)``: the lake the daily flow
    built over ``sample_landing(days, scale, seed, start)`` on ``engine`` (``polars``, ``sail``, or
    ``sail-cluster``: Sail in local-cluster mode), one run per day, with a copy of the lake as each day's run
    left it (``after(day)``). It is built once per test run per argument set (the xdist workers share the
    build); each session gets its own copy of ``root``, so tests of one session share it: copy ``root`` before
    writing to it. ``written_at`` is where the runs wrote it (lineage events and the ledger name those paths)."""
    import dataclasses
    import shutil

    copies: dict[tuple, BuiltLake] = {}

    def build(engine: str = "polars", days: int = 2, scale: float = 0.03, seed: int = 7,
              start: date = DEFAULT_START) -> BuiltLake:
        key = (engine, days, scale, seed, start)
        if key not in copies:
            remote = None if engine == "polars" else request.getfixturevalue(REMOTES[engine])
            landing = sample_landing(days=days, scale=scale, seed=seed, start=start)
            lake = shared_once(tmp_path_factory, f"lake-{engine}-{days}-{scale}-{seed}-{start}",
                               lambda folder: run_days(engine, folder / "lake", landing, days=days, start=start,
                                                       spark_remote=remote, snapshots=True))
            root = tmp_path_factory.mktemp(f"lake-{engine}") / "lake"
            shutil.copytree(lake.root, root)
            copies[key] = dataclasses.replace(lake, root=root, spark_remote=remote)
        return copies[key]

    return build
