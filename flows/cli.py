"""``lakehouse``: generate sample data, run the daily flow, look at tables."""

from __future__ import annotations

import contextlib
import os
import sys
from datetime import date, datetime, timedelta
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

# Prefect's local server must not phone home: nothing this tool runs reaches a network beyond loopback.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from lakehouse.flows.command_line import (
    AllowMissingOpt,
    BackendOpt,
    EnvOpt,
    LakeOpt,
    LandingOpt,
    MasterOpt,
    RemoteOpt,
    console,
    err,
    exit_now,
    fail,
    lake_of,
    parse_date,
    run_lock_of,
    settings_for,
)
from lakehouse.flows.emr_cli import emr_app
from lakehouse.flows.quarantine_cli import print_quarantine_by_rule, quarantine_app
from lakehouse.flows.server_cli import running, server_app
from lakehouse.flows.sources_cli import sources_app

app = typer.Typer(help="Project A lakehouse: the daily pipeline on Polars + delta-rs (laptop) or Spark + Delta.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
@app.command()
def generate(
    days: Annotated[int | None, typer.Option(min=1, max=366, help=(
        "number of days of data [default: 7]; with --append the days to add [default: 1]"))] = None,
    scale: Annotated[float | None, typer.Option(min=0.001, max=100.0, help=(
        "1 ≈ 100k orders, 10k customers over the days [default: 1]"))] = None,
    seed: Annotated[int | None, typer.Option(help="random seed: same seed, same files [default: 42]")] = None,
    start: Annotated[str | None, typer.Option(help="first day, YYYY-MM-DD [default: 2026-11-01]")] = None,
    out: Annotated[str, typer.Option(help="landing folder to write, or s3://bucket/prefix")] = "./landing",
    append: Annotated[bool, typer.Option("--append", help=(
        "add the day(s) after the last one in --out, continuing its data (ids, late updates, dirt rates); "
        "earlier days are left as they are"))] = False,
) -> None:
    """Write deterministic sample landing files for all five sources (with documented dirt)."""
    if append:
        given = [name for name, value in (("--scale", scale), ("--seed", seed), ("--start", start)) if value is not None]
        if given:
            fail(f"expected no {', '.join(given)} with --append: the new days continue the scale, seed and start "
                 f"that {out} records; drop {', '.join(given)}")
        _append(days=1 if days is None else days, out=out)
        return
    _generate(days=7 if days is None else days, scale=1.0 if scale is None else scale,
              seed=42 if seed is None else seed,
              start=parse_date("2026-11-01" if start is None else start, "--start"), out=out)


def _generate(*, days: int, scale: float, seed: int, start: date, out: str | Path) -> None:
    from lakehouse.backends.sources.sample import generate as generate_files

    _check_out(out)
    result = _with_progress("generating", lambda report: generate_files(
        out, days=days, scale=scale, seed=seed, start=start, progress=report))
    console.print(f"wrote {len(result.files)} files for {days} day(s) from {start} into [bold]{result.out.resolve()}[/]")


def _check_out(out: str | Path) -> None:
    """An ``s3://`` landing root's bucket answers, or a clear error before anything is generated."""
    from lakehouse.backends.storage import UnreachableRootError, check_bucket

    try:
        check_bucket(str(out), "landing root", "create the bucket or pass another --out")
    except UnreachableRootError as exc:
        fail(str(exc))


def _append(*, days: int, out: str) -> None:
    from lakehouse.backends.sources.sample import append as append_files

    _check_out(out)
    try:
        result = _with_progress("appending", lambda report: append_files(out, days=days, progress=report))
    except (FileNotFoundError, ValueError) as exc:  # no record of a generation in ``out``, or an unreadable one
        fail(str(exc))
    first, last = result.start, result.start + timedelta(days=result.days - 1)
    span, command = ((str(first), f"lakehouse run --date {first}") if days == 1 else
                     (f"{first} .. {last}", f"lakehouse backfill --from {first} --to {last}"))
    console.print(f"wrote {len(result.files)} files for {span} into [bold]{result.out.resolve()}[/]; run it: {command}")


def _with_progress(verb: str, write: Any) -> Any:
    """``write(report)`` with a progress bar that ``report(step, done, total)`` moves."""
    with _progress() as progress:
        bar = progress.add_task(verb, total=None)

        def report(step: str, done: int, total: int) -> None:
            progress.update(bar, description=f"{verb} {step}", completed=done, total=total)

        return write(report)


@app.command()
def run(
    run_date: Annotated[str, typer.Option("--date", help="run date, YYYY-MM-DD")],
    backend: BackendOpt = None,
    env: EnvOpt = None,
    lake_root: LakeOpt = None,
    landing: LandingOpt = None,
    spark_remote: RemoteOpt = None,
    spark_master: MasterOpt = None,
    allow_missing: AllowMissingOpt = None,
) -> None:
    """Run the daily flow (bronze → silver → gold) for one date."""
    day = parse_date(run_date, "--date")
    _run_days([day], env=env, backend=backend, lake_root=lake_root, landing=landing, spark_remote=spark_remote,
              spark_master=spark_master, allow_missing=allow_missing)


@app.command()
def backfill(
    date_from: Annotated[str, typer.Option("--from", help="first date, YYYY-MM-DD")],
    date_to: Annotated[str, typer.Option("--to", help="last date, YYYY-MM-DD (inclusive)")],
    force: Annotated[bool, typer.Option("--force", help="run dates already done again, recomputing every task")] = False,
    backend: BackendOpt = None,
    env: EnvOpt = None,
    lake_root: LakeOpt = None,
    landing: LandingOpt = None,
    spark_remote: RemoteOpt = None,
    allow_missing: AllowMissingOpt = None,
) -> None:
    """Run the daily flow for every date of a range, in order; dates already done are skipped unless --force (a
    date run without an entity allowed missing runs again once its delivery has come)."""
    first, last = parse_date(date_from, "--from"), parse_date(date_to, "--to")
    settings = settings_for(env, backend=backend, lake_root=lake_root, landing_root=landing, spark_remote=spark_remote)
    from lakehouse.flows.backfill import BackfillRangeError, backfill_plan, run_backfill

    try:
        plan = backfill_plan(settings, first, last, force=force)
    except BackfillRangeError as exc:
        fail(str(exc))
    skipped = [d for d, skip in plan if skip]
    if skipped:
        console.print(f"{len(skipped)} date(s) already done, skipped (--force runs them again): "
                      f"{', '.join(str(d) for d in skipped)}")
    with _progress() as progress:
        bar = progress.add_task(f"backfill {first} .. {last}", total=len(plan))

        def step(i: int, total: int, day: date, status: str) -> None:
            if status == "running":
                progress.update(bar, description=f"backfill: {day}")
            else:
                progress.update(bar, completed=i)

        report = run_backfill(plan, lambda day: _run_days(
            [day], env=env, backend=backend, lake_root=lake_root, landing=landing, spark_remote=spark_remote,
            force=force, allow_missing=allow_missing), step)
        ran = sum(r["status"] == "ran" for r in report)
        progress.update(bar, description=f"backfill {first} .. {last}: {ran} ran, {len(skipped)} skipped")


@app.command()
def demo(
    days: Annotated[int, typer.Option(min=1, max=31, help="number of days to generate and run")] = 3,
    scale: Annotated[float, typer.Option(min=0.001, max=100.0, help="1 ≈ 100k orders, 10k customers")] = 1.0,
    start: Annotated[str, typer.Option(help="first day, YYYY-MM-DD")] = "2026-11-01",
    seed: Annotated[int, typer.Option(help="random seed: same seed, same files")] = 42,
    lake_root: LakeOpt = None,
    landing: LandingOpt = None,
) -> None:
    """Generate sample data, run the daily flow for each day, and print what landed where."""
    first = parse_date(start, "--start")
    settings = settings_for(None, lake_root=lake_root, landing_root=landing)
    _generate(days=days, scale=scale, seed=seed, start=first, out=Path(settings.landing_root))
    _run_days([first + timedelta(days=i) for i in range(days)], env=None, backend=None, lake_root=lake_root,
              landing=landing)
    tables(env=None, lake_root=lake_root)
    print_quarantine_by_rule(settings)
    console.print(f"\nlake: [bold]{Path(settings.lake_root).resolve()}[/]   landing: [bold]{Path(settings.landing_root).resolve()}[/]")
    server = running()
    if server is not None:
        console.print(f"Prefect UI: [bold]{server.ui}[/] (flow 'daily-lakehouse', artifact 'daily-lakehouse-summary'); "
                      "the local server keeps running for the next command: 'lakehouse server stop' stops it.")


def _run_days(days: list[date], *, env: str | None, backend: str | None, lake_root: str | None,
              landing: str | None, spark_remote: str | None = None, spark_master: str | None = None,
              force: bool = False, allow_missing: list[str] | None = None) -> None:
    settings = settings_for(env, backend=backend, lake_root=lake_root, landing_root=landing, spark_remote=spark_remote,
                         spark_master=spark_master)
    from lakehouse.backends.lake import LakeNotWritableError
    from lakehouse.deployments.settings import SettingsError, known_entities
    from lakehouse.tasks.context import LandingNotFoundError, require_landing

    try:
        known_entities(allow_missing or [])
    except ValueError as exc:
        fail(f"--allow-missing: {exc}")
    try:
        settings.require_hmac_key()
        lake = lake_of(settings)  # an s3:// root is checked there (once), unless a credentials block reaches it
        if lake.is_local:
            lake.check_writable()
        require_landing(settings.landing_root)
    except (SettingsError, LakeNotWritableError, LandingNotFoundError) as exc:
        fail(str(exc))
    from lakehouse.flows.display import quiet_tracebacks
    from lakehouse.flows.server_cli import PrefectServerError, prefect_api

    quiet_tracebacks()
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(prefect_api())
        except PrefectServerError as exc:
            err.print(f"[bold red]error:[/] {exc}")
            raise typer.Exit(code=1) from None
        _run_each(days, settings.env, backend=backend, lake_root=lake_root, landing=landing, spark_remote=spark_remote,
                  spark_master=spark_master, force=force, allow_missing=allow_missing)


def _run_each(days: list[date], env: str, **options: Any) -> None:
    from lakehouse.backends.lake import LakeNotWritableError
    from lakehouse.backends.run_lock import LakeLockedError
    from lakehouse.flows.daily import daily_lakehouse, prompt_heartbeats
    from lakehouse.tasks.context import LandingNotFoundError

    for i, day in enumerate(days, 1):
        console.rule(f"[bold]daily-lakehouse {day}[/] ({i}/{len(days)})")
        started = datetime.now()
        try:
            with prompt_heartbeats():  # the run's end does not wait for Prefect's heartbeat thread
                summaries = daily_lakehouse(run_date=day, env=env, backend=options["backend"],
                                            lake_root=options["lake_root"], landing_root=options["landing"],
                                            spark_remote=options["spark_remote"],
                                            spark_master=options["spark_master"], force=options["force"],
                                            allow_missing=options["allow_missing"])
        except (LakeNotWritableError, LandingNotFoundError, LakeLockedError) as exc:
            fail(str(exc))
            raise
        except Exception as exc:  # noqa: BLE001 - one message a person can act on; the traceback goes to DEBUG
            _run_failed(day, exc)
        _print_summaries(day, summaries, (datetime.now() - started).total_seconds())


def _run_failed(day: date, exc: Exception) -> None:
    """A failed run as one message: what failed and what to do; the traceback goes to the DEBUG log."""
    import logging

    from rich.markup import escape

    from lakehouse.flows.display import plain

    logging.getLogger("prefect.lakehouse").debug("run of %s failed", day, exc_info=exc)
    from lakehouse.backends.landing import MissingDeliveryError
    from lakehouse.tasks.gates import GateFailedError
    from lakehouse.tasks.quarantine import AccountingError
    from lakehouse.tasks.release import AuditFailedError

    if isinstance(exc, MissingDeliveryError):  # the message says what to do
        err.print(f"[bold red]error:[/] run of {day} stopped: {escape(plain(str(exc)))}")
        raise typer.Exit(code=1)
    known = isinstance(exc, GateFailedError | AuditFailedError | AccountingError)
    what = plain(str(exc)) if known else f"{type(exc).__name__}: {plain(str(exc))[:500]}"
    err.print(f"[bold red]error:[/] run of {day} failed: {escape(what)}")
    err.print("what to do: see the failed stage in the Prefect UI and 'lakehouse quarantine list' (rows and files "
              f"refused), fix the data, rule or file, then run 'lakehouse run --date {day}' again (docs/runbooks.md)"
              + ("" if known else "; PREFECT_LOGGING_LEVEL=DEBUG prints the full traceback"))
    raise typer.Exit(code=1)


def _print_summaries(day: date, summaries: list[dict[str, Any]], seconds: float) -> None:
    t = Table(title=f"run {day}: {seconds:.1f} s", show_lines=False)
    for col in ("stage", "table", "rows in", "accepted", "quarantined", "written", "version"):
        t.add_column(col, justify="right" if col not in ("stage", "table") else "left", no_wrap=True)
    for s in summaries:
        t.add_row(s["stage"], s["table"], str(s.get("rows_in", "")), str(s.get("accepted", "")),
                  str(s.get("quarantined", "")), str(s.get("rows_written", "")), str(s.get("version", "")))
    console.print(t)
    from lakehouse.flows.display import terminal

    for s in summaries:
        for f in s.get("refused", []):
            err.print(Text.assemble(("refused ", "bold red"), terminal(f), f" ({s['table']}): nothing of it was "
                                    "ingested; 'lakehouse quarantine list' says why: fix the file and run the date "
                                    "again"))


@app.command()
def tables(env: EnvOpt = None, lake_root: LakeOpt = None) -> None:
    """Every table: layer, rows, Delta version, last write."""
    from lakehouse.contracts.catalog import TABLES

    settings = settings_for(env, lake_root=lake_root)
    from lakehouse.backends.releases import Releases

    lake = lake_of(settings)
    engines: list[Any] = []

    def rows(spec: Any, version: int | None) -> str:
        """From the Delta log's file statistics; a table without them is counted by the engine."""
        n = lake.row_count(spec, version)
        if n is None:
            if not engines:
                from lakehouse.backends import get_backend

                engines.append(get_backend(settings.backend, lake, settings.spark))
            n = engines[0].count(engines[0].scan(spec, version=version))
        return f"{n:,}"

    release = Releases(lake).current()
    released = release.versions if release else {}
    lines: list[tuple[str, ...]] = []
    for spec in TABLES.values():
        version = lake.version(spec)
        if version is None:
            lines.append((spec.layer, spec.name, "-", "-", "-", "never written"))
            continue
        last = lake.history(spec, limit=1)
        when = ""
        if last:
            ts = last[0].get("timestamp")
            when = datetime.fromtimestamp(ts / 1000).isoformat(timespec="seconds") if ts else ""
            when = f"{when} {last[0].get('operation', '')}".strip()
        if spec.layer == "gold":  # rows as readers see them: at the released version
            rel = released.get(spec.name)
            lines.append((spec.layer, spec.name, rows(spec, rel) if rel is not None else "-", str(version),
                          "-" if rel is None else str(rel), when))
        else:
            lines.append((spec.layer, spec.name, rows(spec, None), str(version), "", when))
    t = Table(title=f"tables in {settings.lake_root}"
              + (f" (gold: release {release.release_id} of {release.run_date})" if release else " (no gold release)"))
    for i, col in enumerate(("layer", "table", "rows", "version", "released", "last write")):
        numeric = col in ("rows", "version", "released")
        # figures are never cut: a narrow terminal shortens the names and the last write instead
        t.add_column(col, justify="right" if numeric else "left", no_wrap=numeric, overflow="ellipsis",
                     min_width=max(len(col), *(len(line[i]) for line in lines)) if numeric else None)
    for line in lines:
        t.add_row(*line)
    console.print(t)


app.add_typer(quarantine_app, name="quarantine")


class Format(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


@app.command()
def show(
    name: Annotated[str, typer.Argument(help="table name, e.g. gold.fact_orders")],
    limit: Annotated[int, typer.Option(min=1, max=100_000, help="rows to print at most")] = 10,
    columns: Annotated[str | None, typer.Option(help="comma-separated columns to print, e.g. order_id,amount_usd")] = None,
    where: Annotated[list[str] | None, typer.Option(
        help="a filter COLUMN<op>VALUE (=, !=, <, <=, >, >=), e.g. country=DE; repeat to AND several")] = None,
    order_by: Annotated[list[str] | None, typer.Option(
        help="COLUMN or COLUMN:desc; repeat for ties (default: the table's keys, then every column)")] = None,
    as_of: Annotated[str | None, typer.Option(help="gold only: a release id (gold-000003) or a run date")] = None,
    output: Annotated[Format, typer.Option("--format", help="table (fits the terminal), csv or json lines")] = Format.table,
    env: EnvOpt = None,
    lake_root: LakeOpt = None,
) -> None:
    """Print rows of a table (gold at its released version), ordered by key unless --order-by says otherwise."""
    import shutil

    from lakehouse.contracts.catalog import table
    from lakehouse.flows.api import resolve
    from lakehouse.flows.display import browse, render

    try:
        spec = table(name)
    except KeyError as exc:
        fail(str(exc.args[0]))
        raise
    settings = settings_for(env, lake_root=lake_root)
    lake_of(settings)  # an s3:// root that does not answer is one clear error
    try:
        found = resolve(name, lake_root=settings.lake_root, env=settings.env, as_of=as_of)
        rows = browse(found.scan(), columns=[c.strip() for c in columns.split(",") if c.strip()] if columns else None,
                      where=where or [], order_by=order_by or list(spec.keys), limit=limit)
    except (LookupError, ValueError) as exc:
        fail(str(exc.args[0]))
        raise
    if output is not Format.table:
        sys.stdout.write(render(rows, output.value, 0))
        return
    note = f", release {found.release.release_id}" if found.release else ""
    console.print(f"[bold]{name}[/] (first {rows.height} rows, version {found.version}{note})")
    print(render(rows, "table", shutil.get_terminal_size((120, 24)).columns))


@app.command()
def releases(env: EnvOpt = None, lake_root: LakeOpt = None,
             limit: Annotated[int, typer.Option(min=1, help="releases to list, newest first")] = 10) -> None:
    """The gold releases, newest first: id, run date, run id, when, and the version of each table."""
    from lakehouse.backends.releases import Releases

    settings = settings_for(env, lake_root=lake_root)
    history = Releases(lake_of(settings)).history()
    if not history:
        fail(f"expected gold releases under {settings.lake_root!r}, found none: run 'lakehouse run --date D' first")
    t = Table(title=f"gold releases in {settings.lake_root} (the first row is current)")
    for col in ("release", "run date", "released at", "run id", "versions"):
        t.add_column(col)
    for r in reversed(history[-limit:]):
        t.add_row(r.release_id, str(r.run_date), r.released_at.isoformat(timespec="seconds"), r.run_id,
                  ", ".join(f"{k.removeprefix('gold.')}={v}" for k, v in r.versions.items()))
    console.print(t)


@app.command()
def vacuum(
    env: EnvOpt = None,
    lake_root: LakeOpt = None,
    retention_hours: Annotated[float | None, typer.Option(
        "--retention-hours", min=0, help="keep files replaced less than this many hours ago "
        "(default: the environment's vacuum_retention_hours, 168)")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="list what would be deleted; delete nothing")] = False,
) -> None:
    """Delete the data files no kept version of the lake's tables reads: files replaced more than the retention
    ago, except those of the current gold release, of releases made within the retention, and of the versions
    the next incremental build reads (flows/vacuum.py). Waits for a running daily run (the lake's run lock)."""
    from lakehouse.backends.run_lock import LakeLockedError
    from lakehouse.flows.vacuum import existing_tables, held_vacuum

    settings = settings_for(env, lake_root=lake_root)
    hours = settings.vacuum_retention_hours if retention_hours is None else retention_hours
    names = [s.name for s in existing_tables(lake_of(settings))]
    if not names:
        fail(f"expected tables under {settings.lake_root!r}, found none: nothing to vacuum")
    t = Table(title=f"{'dry run: would delete' if dry_run else 'deleted'} in {settings.lake_root} "
                    f"(files replaced more than {hours:g} h ago)")
    for col, justify in (("table", "left"), ("files", "right"), ("MiB", "right"), ("versions kept", "left")):
        t.add_column(col, justify=justify)  # type: ignore[arg-type]
    with _progress() as progress:
        bar = progress.add_task("vacuum", total=len(names))

        def done(v) -> None:
            progress.update(bar, advance=1, description=v.table)
            if v.files:
                t.add_row(v.table, f"{v.files:,}", f"{v.bytes / 2**20:,.1f}", ", ".join(map(str, v.kept_versions)))

        try:
            results = held_vacuum(
                run_lock_of(settings), retention_hours=hours, dry_run=dry_run,
                run_id=f"vacuum-{datetime.now().strftime('%Y%m%dT%H%M%S')}",
                wait_seconds=settings.run_lock_wait_seconds, on_table=done, on_wait=err.print)
        except LakeLockedError as exc:
            fail(str(exc))
    console.print(t)
    for v in results:
        if v.unreadable_versions:
            err.print(f"{v.table}: version(s) {', '.join(map(str, v.unreadable_versions))} can no longer be read "
                      "(delta-rs cleaned up their log), so their files were not kept")
    files, freed = sum(v.files for v in results), sum(v.bytes for v in results)
    console.print(f"{'would delete' if dry_run else 'deleted'} {files:,} file(s), {freed / 2**20:,.1f} MiB, "
                  f"in {sum(1 for v in results if v.files)} of {len(results)} table(s)")


@app.command()
def status(env: EnvOpt = None, lake_root: LakeOpt = None,
           limit: Annotated[int, typer.Option(min=1, help="how many recent runs to show")] = 10) -> None:
    """Recent runs from the run ledger (status, tasks, rows, failed tasks) and each table's freshness: the
    run and date that last wrote it, its version, and how long ago."""
    from lakehouse.backends.logs import lake_log
    from lakehouse.contracts.catalog import TABLES
    from lakehouse.tasks.ledger import freshness, read_ledger, runs_overview

    settings = settings_for(env, lake_root=lake_root)
    lake = lake_of(settings)
    console.print(_lock_line(settings), soft_wrap=True)
    rows = read_ledger(lake)
    if not rows:
        fail(f"expected a run ledger at {lake_log(lake, 'ledger').uri!r}, found none: run "
              "'lakehouse run --date D' first")
    t = Table(title=f"recent runs in {settings.lake_root} (newest first)")
    for col in ("run id", "flow", "run date", "status", "started", "took", "tasks", "rows written", "quarantined",
                "engine", "failed tasks"):
        t.add_column(col, no_wrap=col != "failed tasks")
    lock = run_lock_of(settings)
    held = lock.read()
    holder = held.body.get("run_id") if held is not None and held.body is not None else None
    for r in runs_overview(rows)[:limit]:
        took = (r["ended_at"] - r["started_at"]).total_seconds()
        state = "[green]completed[/]" if r["status"] == "completed" else "[red]failed[/]"
        if r["run_id"] == holder:  # its tasks so far: running, or killed (see the lock above)
            state = ("[red]died: its lock is stale[/]" if lock.is_stale(held) else "[yellow]holds the run lock[/]")
        t.add_row(r["run_id"], r["flow"], str(r["run_date"]), state,
                  r["started_at"].strftime("%Y-%m-%d %H:%M:%S"), f"{took:.1f} s", str(r["tasks"]),
                  f"{r['rows_written']:,}", f"{r['rows_quarantined']:,}", r["engine"], ", ".join(r["failed_tasks"]))
    wide = Console(width=max(170, console.width))  # full run ids: 'prefect flow-run retry <id>' takes them
    wide.print(t)
    now = datetime.now().astimezone()
    fresh = freshness(rows)
    f = Table(title="table freshness (latest completed write in the ledger)")
    for col in ("table", "run date", "version", "rows written", "written at", "age"):
        f.add_column(col, no_wrap=True)
    for spec in TABLES.values():
        if spec.layer == "quarantine":
            continue
        w = fresh.get(spec.name)
        if w is None:  # a table no task of its own writes (silver.customer_versions): its Delta log says when
            last = lake.history(spec, limit=1) if lake.version(spec) is not None else []
            if not last:
                f.add_row(spec.name, "-", "-", "-", "never written", "-")
                continue
            at = datetime.fromtimestamp(last[0]["timestamp"] / 1000).astimezone()
            f.add_row(spec.name, "-", str(last[0]["version"]), "-", at.strftime("%Y-%m-%d %H:%M:%S"),
                      _age((now - at).total_seconds()))
            continue
        age = now - w["ended_at"]
        f.add_row(spec.name, str(w["run_date"]), str(w["version"]), f"{w['rows_out'] or 0:,}",
                  w["ended_at"].strftime("%Y-%m-%d %H:%M:%S"), _age(age.total_seconds()))
    wide.print(f)


def _lock_line(settings) -> str:
    """The lake's run lock for people: free, or its holder, since when, its lease's expiry, live or stale."""
    lock = run_lock_of(settings)
    found = lock.read()
    if found is None:
        return "run lock: free"
    state = ("[red]stale[/] (its run stopped renewing it: 'lakehouse unlock' clears it, the next run takes it "
             "over)" if lock.is_stale(found) else "[green]live[/]")
    return f"run lock: held by {found.describe(lock.lease_seconds)}: {state}"


@app.command()
def unlock(
    env: EnvOpt = None,
    lake_root: LakeOpt = None,
    force: Annotated[bool, typer.Option("--force", help="clear the lock even though its lease is live (only when "
                                        "you know its run is dead: a live run would go on writing beside the next)")]
    = False,
) -> None:
    """Clear the lake's run lock when its lease ran out (the run holding it died). A live lease is refused
    without --force. A stale lock is also taken over by the next run by itself; this clears it now."""
    from lakehouse.backends.run_lock import LakeLockedError

    settings = settings_for(env, lake_root=lake_root)
    lock = run_lock_of(settings)
    try:
        cleared = lock.unlock(force=force)
    except LakeLockedError as exc:
        fail(str(exc))
    if cleared is None:
        console.print(f"no run lock held on {settings.lake_root}: nothing to clear")
        return
    console.print(f"cleared the run lock of {cleared.describe(lock.lease_seconds)}", soft_wrap=True)


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


@app.command()
def report(
    run_date: Annotated[str, typer.Option("--date", help="run date, YYYY-MM-DD")],
    out: Annotated[Path | None, typer.Option("--out", help="HTML file to write (default: report-<date>.html)")] = None,
    env: EnvOpt = None,
    lake_root: LakeOpt = None,
) -> None:
    """Write one self-contained HTML page about a run date: rows per layer and table, quarantine by rule, and
    quality trends over the recent run dates, from the run ledger and the quarantine tables."""
    from lakehouse.flows.report import render

    day = parse_date(run_date, "--date")
    settings = settings_for(env, lake_root=lake_root)
    try:
        page = render(lake_of(settings), day)
    except LookupError as exc:
        fail(str(exc))
    target = out or Path(f"report-{day.isoformat()}.html")
    target.write_text(page, encoding="utf-8")
    console.print(f"wrote {target} ({len(page):,} bytes)")


@app.command()
def rollback(
    to: Annotated[str, typer.Option("--to", help="the gold release id to make current again, e.g. gold-000003")],
    env: EnvOpt = None,
    lake_root: LakeOpt = None,
) -> None:
    """Make an earlier gold release current again: a new release with that release's table versions (readers
    and the next Snowflake publish see them; the log keeps everything, so a rollback can itself be undone)."""
    from lakehouse.backends.releases import NotReleasedError, Releases

    settings = settings_for(env, lake_root=lake_root)
    releases = Releases(lake_of(settings))
    try:
        made = releases.rollback(to, run_id=f"rollback-{datetime.now().strftime('%Y%m%dT%H%M%S')}")
    except (NotReleasedError, ValueError) as exc:
        fail(str(exc))
    console.print(f"released {made.release_id} with the versions of {to} (run date {made.run_date}): "
                  + ", ".join(f"{k.removeprefix('gold.')}={v}" for k, v in made.versions.items()))


@app.command()
def publish(
    to: Annotated[str, typer.Option("--to", help="where to publish gold: snowflake")],
    release: Annotated[str | None, typer.Option("--release", help="gold release id (default: the current one)")] = None,
    env: EnvOpt = None,
    lake_root: LakeOpt = None,
) -> None:
    """Publish a gold release to Snowflake: each table at its released version, staged in bulk and merged by
    key with a load-audit row; tables of the release already published are skipped."""
    if to != "snowflake":
        fail(f"expected --to snowflake, got {to!r}")
    settings = settings_for(env, lake_root=lake_root)
    from lakehouse.flows.snowflake_publish import ReleaseNotFoundError, choose_release, publish_snowflake

    try:
        settings.snowflake.require()
        chosen = choose_release(settings, release)
    except (ReleaseNotFoundError, ValueError) as exc:
        fail(str(exc))
    state = publish_snowflake(env=settings.env, lake_root=lake_root, release_id=chosen.release_id, return_state=True)
    if not state.is_completed():
        fail(f"publish of {chosen.release_id} to Snowflake failed: {state.message}")
    t = Table(title=f"{chosen.release_id} → Snowflake {settings.snowflake.database}.{settings.snowflake.schema_}")
    for col in ("table", "status", "rows staged", "inserted", "updated", "deleted", "seconds"):
        t.add_column(col)
    for s in state.result():
        t.add_row(s["table"], s["status"], *(str(s.get(k, "")) for k in ("rows_staged", "inserted", "updated",
                                                                          "deleted", "seconds")))
    console.print(t)


app.add_typer(sources_app, name="sources")
app.add_typer(server_app, name="server")
app.add_typer(emr_app, name="emr")


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=err, transient=False)


def main() -> None:
    """The ``lakehouse`` command (pyproject.toml's script): the app, then a quick end of the process."""
    try:
        app()
    except SystemExit as done:
        exit_now(done.code)
    exit_now(0)


if __name__ == "__main__":
    main()
