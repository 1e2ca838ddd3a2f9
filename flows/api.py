"""The Python API: read a table of the lake, and run a day of the pipeline, without the CLI.

    from lakehouse.flows.api import read, run_day

    customers = read("gold.customer_360", lake_root="lake").collect()      # the current gold release
    before = read("gold.customer_360", lake_root="lake", as_of="gold-000003")  # an earlier release
    run_day("2026-11-03", lake_root="lake", landing_root="landing")

Gold is read at a released version only (what the last audited run released, or the release ``as_of`` names),
never at a version a failed audit left behind; bronze and silver at their latest version. Settings come from
the environment's ``deployments/<env>.toml`` (``env``, default ``local``) with the arguments on top, as for
the CLI.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import polars as pl


@dataclass(frozen=True)
class Resolved:
    """Which version of a table a reader reads: the table, its lake, the version, and the gold release that
    named it (None for bronze and silver)."""

    spec: Any
    lake: Any
    version: int
    release: Any = None

    def scan(self) -> pl.LazyFrame:
        import polars as pl

        return pl.scan_delta(self.lake.uri(self.spec), version=self.version,
                             storage_options=self.lake.storage_options or None)


def resolve(name: str, *, lake_root: str | None = None, env: str | None = None,
            as_of: str | date | None = None) -> Resolved:
    """The version :func:`read` reads (same arguments and errors)."""
    from lakehouse.backends.lake import Lake
    from lakehouse.contracts.catalog import table
    from lakehouse.deployments.settings import load_settings

    spec = table(name)
    lake = Lake(load_settings(env, lake_root=lake_root).lake_root)
    if spec.layer == "gold":
        release = _release(lake, name, as_of)
        return Resolved(spec, lake, release.versions[name], release)
    if as_of is not None:
        msg = f"expected as_of only for gold tables (they are released), got as_of={as_of!r} for {name!r}"
        raise ValueError(msg)
    version = lake.version(spec)
    if version is None:
        msg = (f"expected table {name!r} to exist under {lake.root!r}; it was never written: run "
               "'lakehouse run --date D' first")
        raise LookupError(msg)
    return Resolved(spec, lake, version)


def read(name: str, *, lake_root: str | None = None, env: str | None = None,
         as_of: str | date | None = None) -> pl.LazyFrame:
    """Table ``name`` (``layer.table``, e.g. ``gold.customer_360``) as a Polars LazyFrame.

    Gold: at the current release's version, or with ``as_of`` at a release's (its id, ``gold-000003``) or at
    the release current at the end of a run date (a ``date`` or ISO text: the latest release a run of that
    date or an earlier one made). Other layers: the latest version; ``as_of`` is refused there (they have no
    releases). Raises KeyError for an unknown table, LookupError when the table or release is not there.
    """
    return resolve(name, lake_root=lake_root, env=env, as_of=as_of).scan()


def _release(lake: Any, name: str, as_of: str | date | None) -> Any:
    from lakehouse.backends.releases import NotReleasedError, Releases

    releases = Releases(lake)
    if as_of is None:
        releases.version_of(name)  # the clear errors: no release, or the table not in it
        return releases.current()
    history = releases.history()
    if isinstance(as_of, str) and as_of.startswith("gold-"):
        chosen = [r for r in history if r.release_id == as_of]
        if not chosen:
            known = ", ".join(r.release_id for r in history[-10:]) or "none"
            msg = f"expected a gold release id among the recent ones ({known}), got {as_of!r}"
            raise NotReleasedError(msg)
    else:
        day = _as_date(as_of)
        chosen = [r for r in history if r.run_date <= day]
        if not chosen:
            first = history[0].run_date.isoformat() if history else "none yet"
            msg = f"expected a gold release made by a run of {day} or earlier; the first is of {first}"
            raise NotReleasedError(msg)
    release = chosen[-1]
    if name not in release.versions:
        msg = f"expected {name!r} in gold release {release.release_id}, it has {sorted(release.versions)}"
        raise NotReleasedError(msg)
    return release


def _as_date(value: str | date) -> date:
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(value)
    except ValueError:
        msg = f"expected as_of as a release id (gold-000003) or a date (2026-11-02), got {value!r}"
        raise ValueError(msg) from None


def run_day(day: str | date, *, env: str | None = None, lake_root: str | None = None,
            landing_root: str | None = None, backend: str | None = None, force: bool = False,
            **flow_options: Any) -> list[dict[str, Any]]:
    """Run the daily flow for ``day`` as a Prefect flow run, as ``lakehouse run --date`` does: against the
    configured Prefect API, or the local server (started once in the background and reused). Returns the
    run's task summaries; raises what the run raised (a failed gate, a locked lake, ...).
    ``flow_options`` are the flow's other parameters (``spark_remote``, ``allow_missing``, ...)."""
    from lakehouse.deployments.settings import load_settings
    from lakehouse.flows.daily import daily_lakehouse
    from lakehouse.flows.server_cli import prefect_api

    env = load_settings(env).env  # the named environment, $LAKEHOUSE_ENV, else local; a clear error if unknown
    with prefect_api():
        return daily_lakehouse(run_date=_as_date(day), env=env, lake_root=lake_root,
                               landing_root=landing_root, backend=backend, force=force, **flow_options)
