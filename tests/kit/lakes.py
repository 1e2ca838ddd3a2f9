"""Building a lake in a test: the daily flow run over consecutive days of a landing folder on one engine."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

DEFAULT_START = date(2026, 11, 1)


@dataclass(frozen=True)
class BuiltLake:
    """A lake the daily flow built: where it is, what it read, each day's run summaries, and a copy of the lake
    as each day's run left it (:meth:`after`; nothing writes to those)."""

    engine: str
    root: Path
    landing: Path
    days: list[date]
    summaries: dict[date, Any] = field(default_factory=dict)
    spark_remote: str | None = None
    snapshots: dict[date, Path] = field(default_factory=dict)
    written_at: Path | None = None  # where the runs wrote the lake, when ``root`` is a copy
    # each day's flow run's Prefect artifacts (key -> data), read back from the server the run reported to (a
    # shared lake's runs reported to the building worker's server, which other workers cannot ask)
    artifacts: dict[date, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.written_at is None:
            object.__setattr__(self, "written_at", self.root)

    def after(self, day: date) -> Path:
        """A copy of the lake as ``day``'s run left it (copy it again before writing to it)."""
        if day not in self.snapshots:
            msg = f"expected one of the lake's days {[d.isoformat() for d in self.days]}, got {day}"
            raise KeyError(msg)
        return self.snapshots[day]

    def table(self, name: str):
        """Table ``name`` (e.g. ``gold.customer_360``) at its latest version, as a Polars DataFrame."""
        import polars as pl

        from lakehouse.contracts.catalog import table

        return pl.read_delta(str(self.root / table(name).path))


def run_days(engine: str, root: Path, landing: Path, *, days: int, start: date = DEFAULT_START,
             spark_remote: str | None = None, snapshots: bool = False) -> BuiltLake:
    """Run the daily flow for ``days`` consecutive dates from ``start`` on ``engine`` (``polars``, or ``sail`` /
    ``sail-cluster`` with ``spark_remote``), writing the lake at ``root`` from ``landing``; with ``snapshots``,
    copy the lake after each day's run beside ``root`` (``<root>-after-<date>``). Needs a Prefect API (the
    ``prefect_harness`` fixture, or a server)."""
    import shutil

    from lakehouse.flows.daily import daily_lakehouse

    if engine not in ("polars", "sail", "sail-cluster"):
        msg = f"expected engine 'polars', 'sail' or 'sail-cluster', got {engine!r}"
        raise ValueError(msg)
    if engine != "polars" and not spark_remote:
        msg = f"engine {engine!r} needs spark_remote (the sail_url or sail_cluster_url fixture's sc:// address)"
        raise ValueError(msg)
    kwargs = {"backend": "spark", "spark_remote": spark_remote} if engine != "polars" else {}
    dates = [start + timedelta(days=i) for i in range(days)]
    summaries, copies, artifacts = {}, {}, {}
    root = Path(root)
    for day in dates:
        state = daily_lakehouse(run_date=day, lake_root=str(root), landing_root=str(landing), return_state=True,
                                **kwargs)
        summaries[day] = state.result()
        artifacts[day] = flow_run_artifacts(state.state_details.flow_run_id)
        if snapshots:
            copies[day] = root.with_name(f"{root.name}-after-{day.isoformat()}")
            shutil.copytree(root, copies[day])
    return BuiltLake(engine, root, Path(landing), dates, summaries, spark_remote, copies, artifacts=artifacts)


def flow_run_artifacts(flow_run_id: Any) -> dict[str, Any]:
    """The artifacts flow run ``flow_run_id`` created, by key, as the Prefect API returns them."""
    import anyio
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    async def read() -> list:
        async with get_client() as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))

    return {a.key: a.data for a in anyio.run(read) if a.key}
