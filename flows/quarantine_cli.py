"""``lakehouse quarantine``: quarantined rows by rule, the rows themselves, and replaying them after a fix;
the landing files refused whole beside them."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from lakehouse.flows.command_line import (
    BackendOpt,
    EnvOpt,
    LakeOpt,
    RemoteOpt,
    console,
    fail,
    lake_of,
    settings_for,
)


def print_quarantine_by_rule(settings: Any) -> None:
    """Every quarantine table's rows by rule (with how many a replay accepted since), then the refused files."""
    import narwhals as nw

    from lakehouse.backends import get_backend
    from lakehouse.backends.logs import replay_log
    from lakehouse.contracts.catalog import tables as all_tables

    engine = get_backend(settings.backend, lake_of(settings), settings.spark)
    lake = lake_of(settings)
    from lakehouse.flows.display import terminal

    t = Table(title="quarantined rows by rule (replayed: accepted by a later replay)")
    for col in ("quarantine table", "rule", "rows", "run dates", "replayed"):
        t.add_column(col, justify="right" if col in ("rows", "replayed") else "left")
    for spec in all_tables("quarantine"):
        if not engine.exists(spec):
            continue
        silver_name = f"silver.{spec.entity.removeprefix('silver.')}" if spec.entity.startswith("silver.") else None
        log = replay_log(lake, silver_name) if silver_name else None
        frame = engine.scan(spec).select("rule", "record_hash", "run_date")
        if log is not None and log.exists():  # the rows a later replay accepted, marked by the engine (a join)
            accepted = engine.scan_log(log).select("record_hash").unique().with_columns(
                nw.lit(1).cast(nw.Int64()).alias("_replayed"))
            frame = frame.join(accepted, on="record_hash", how="left")
        else:
            frame = frame.with_columns(nw.lit(None).cast(nw.Int64()).alias("_replayed"))
        # A row per rule comes to this process, however many rows the quarantine holds.
        by_rule = engine.to_arrow(frame.group_by("rule").agg(
            nw.len().alias("rows"), nw.col("run_date").min().alias("first"), nw.col("run_date").max().alias("last"),
            nw.col("_replayed").fill_null(0).sum().alias("replayed"))).to_pylist()
        for r in sorted(by_rule, key=lambda r: r["rule"]):
            span = str(r["first"]) if r["first"] == r["last"] else f"{r['first']}..{r['last']}"
            t.add_row(spec.name, terminal(r["rule"]), f"{r['rows']:,}", span,
                      f"{r['replayed']:,}" if silver_name else "")
    console.print(t)
    _refused_files(engine, lake)


def _refused_files(engine, lake) -> None:
    from lakehouse.backends.logs import refused_log
    from lakehouse.contracts.catalog import bronze_for
    from lakehouse.contracts.landing import LANDING_ENTITIES
    from lakehouse.flows.display import terminal
    from lakehouse.tasks.transforms.bronze import ingested_files

    t = Table(title="landing files refused (not ingested; fix the file and run its date again)")
    for col in ("file", "problem", "times refused", "last run date", "ingested since", "reason"):
        t.add_column(col, overflow="fold")
    shown = 0
    for entity in LANDING_ENTITIES:
        refusals = refused_log(lake, entity.source, entity.entity).rows()
        if not refusals:
            continue
        spec = bronze_for(entity)
        now_in = (set(engine.to_arrow(ingested_files(engine.scan(spec))).column("_source_file").to_pylist())
                  if engine.exists(spec) else set())
        by_file: dict[str, list[dict]] = {}
        for r in refusals:
            by_file.setdefault(r["source_file"], []).append(r)
        for f, runs in sorted(by_file.items()):
            last = max(runs, key=lambda r: r["refused_at"])
            t.add_row(terminal(f), last["problem"], str(len(runs)), str(last["run_date"]),
                      "yes" if f in now_in else "no", terminal(last["reason"]))
            shown += 1
    if shown:
        console.print(t)


quarantine_app = typer.Typer(help="Quarantined rows: list them by rule, show them, replay them after a fix.",
                             no_args_is_help=True)
RuleOpt = Annotated[str | None, typer.Option("--rule", help="only this rule id, e.g. ref.unknown_customer")]


def _quarantine_spec(name: str):
    from lakehouse.contracts.catalog import quarantine_for, table

    try:
        spec = table(name)
        return spec if spec.layer == "quarantine" else quarantine_for(spec)
    except KeyError as exc:
        fail(f"expected a silver, bronze or quarantine table name, got {name!r}: {exc.args[0]}")
        raise


@quarantine_app.command("list")
def quarantine_list(env: EnvOpt = None, lake_root: LakeOpt = None) -> None:
    """Every quarantine table: rows per rule, the run dates they came from, how many a replay accepted."""
    print_quarantine_by_rule(settings_for(env, lake_root=lake_root))


@quarantine_app.command("show")
def quarantine_show(
    name: Annotated[str, typer.Argument(help="silver.orders, bronze.kafka.order_events or quarantine.silver.orders")],
    rule: RuleOpt = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="rows to print at most")] = 20,
    env: EnvOpt = None,
    lake_root: LakeOpt = None,
) -> None:
    """Quarantined rows of one table: rule, run date, source file, reason and the raw record."""
    import narwhals as nw

    from lakehouse.backends import get_backend

    spec = _quarantine_spec(name)
    settings = settings_for(env, lake_root=lake_root)
    engine = get_backend(settings.backend, lake_of(settings), settings.spark)
    if not engine.exists(spec):
        fail(f"expected quarantined rows in {spec.name} under {settings.lake_root!r}, it was never written")
    rows = engine.scan(spec)
    if rule:
        present = sorted(engine.to_arrow(rows.select("rule").unique()).column("rule").to_pylist())  # a few ids
        if rule not in present:
            fail(f"expected a rule with rows in {spec.name}: {', '.join(present) or 'none (it is empty)'}; "
                 f"got {rule!r} (docs/rules.md lists every rule)")
        rows = rows.filter(nw.col("rule") == rule)
    data = engine.to_arrow(rows.select("rule", "run_date", "source_file", "reason", "record")
                           .sort("run_date", "rule", "source_file", "record").head(limit)).to_pylist()
    from lakehouse.flows.display import plain, terminal

    t = Table(title=Text(f"{spec.name}" + (f", rule {plain(rule)}" if rule else "") + f": first {len(data)} rows"),
              show_lines=True)
    for col in ("rule", "run date", "source file", "reason", "record"):
        t.add_column(col, overflow="fold")
    for r in data:
        t.add_row(*(terminal(r[c]) for c in ("rule", "run_date", "source_file", "reason", "record")))
    console.print(t)


@quarantine_app.command("replay")
def quarantine_replay(
    name: Annotated[str, typer.Argument(help="the silver table whose quarantined rows to replay, e.g. silver.orders")],
    rule: RuleOpt = None,
    env: EnvOpt = None,
    lake_root: LakeOpt = None,
    backend: BackendOpt = None,
    spark_remote: RemoteOpt = None,
) -> None:
    """After fixing data or a rule: send quarantined rows through silver again (each accepted row once), then
    rebuild, audit and release gold."""
    from lakehouse.flows.quarantine import replay_quarantine
    from lakehouse.tasks.replay import ReplayError, replayable

    table_name = name.replace("quarantine.silver.", "silver.")
    try:
        replayable(table_name)
    except (ReplayError, KeyError) as exc:
        fail(str(exc.args[0]))
    settings = settings_for(env, lake_root=lake_root, backend=backend, spark_remote=spark_remote)
    try:
        summaries = replay_quarantine(table_name=table_name, rule=rule, env=settings.env, backend=backend,
                                      lake_root=lake_root, spark_remote=spark_remote)
    except ReplayError as exc:
        fail(str(exc))
        raise
    done = summaries[0]
    still = ", ".join(f"{k}: {v}" for k, v in sorted(done["still_quarantined"].items())) or "none"
    console.print(f"{table_name}: {done['pending']:,} quarantined row(s) pending replay; {done.get('rows_in', 0):,} "
                  f"bronze row(s) re-checked, {done.get('accepted', 0):,} accepted into silver, still failing: {still}")
    console.print(f"gold: {summaries[-1]['table']} released" if len(summaries) > 1
                  else "gold: unchanged (no row was accepted)")
