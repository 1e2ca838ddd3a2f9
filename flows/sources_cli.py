"""``lakehouse sources``: where each entity comes from, whether its connector answers, and what it would fetch."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Annotated, Any

import typer
from rich.table import Table

from lakehouse.flows.command_line import EnvOpt, LakeOpt, LandingOpt

sources_app = typer.Typer(help="Source connectors: check connections, see what a run would fetch, extract by hand.",
                          no_args_is_help=True)

DateOpt = Annotated[str | None, typer.Option("--date", help="run date YYYY-MM-DD (default: today, UTC)")]


def _date(value: str | None) -> date:
    from lakehouse.flows.command_line import parse_date

    return parse_date(value, "--date") if value else datetime.now(UTC).date()


def check_sources(settings: Any, run_date: date) -> list[dict[str, Any]]:
    """One row per landing entity: its source, where it reads, the window a run of ``run_date`` would fetch,
    how many records (or files) that is, and ``ok`` (False with the error when a connection fails)."""
    from lakehouse.backends.sources import connector_for
    from lakehouse.backends.sources.extract import ExtractLog
    from lakehouse.contracts.landing import LANDING_ENTITIES
    from lakehouse.flows.command_line import lake_of

    rows = []
    lake = lake_of(settings)
    for entity in LANDING_ENTITIES:
        row: dict[str, Any] = {"entity": entity.name, "source": settings.sources.kind(entity.name), "delivery": "pulled"}
        if row["source"] == "files":
            from lakehouse.backends.landing import list_folder, missing_deliveries
            from lakehouse.backends.storage import root_path

            root = root_path(settings.landing_root)
            folder = entity.folder(root, run_date)
            listed = list_folder(entity, folder, root)
            refused = f", {len(listed.refused)} refused by name" if listed.refused else ""
            fetch = f"{len(listed.files)} file(s){refused}"
            row.update({"from": str(folder), "window": "-", "delivery": entity.delivery, "ok": True})
            missing = missing_deliveries([entity], root, run_date)
            if missing and entity.name in settings.sources.allow_missing:
                fetch += " (allowed missing: sources.allow_missing)"
            elif missing:
                row.update(ok=False, error=f"no delivery for {run_date} ({folder}: {missing[0].found}); a run of the "
                                           f"date stops unless it allows it missing (--allow-missing {entity.name})")
            elif not listed.files:
                fetch += " (none expected: delivered when changed)"
            rows.append({**row, "would_fetch": fetch})
            continue
        try:
            connector = connector_for(entity, settings)
            first = date.fromisoformat(settings.sources.first_from) if settings.sources.first_from else None
            plan = ExtractLog(lake, entity).plan(run_date, windowed=connector.windowed,
                                                 lookback_days=settings.lookback_days, first_from=first,
                                                 now=datetime.now(UTC))
            window, cursor = plan.window, plan.cursor
            note = "already extracted" if plan.done else ("resumes" if plan.resuming else "")
            count = connector.pending(window, cursor) if window is not None else 0
            shown = window.describe() if window is not None and connector.windowed else (cursor or "-")
            unit = {"fx": "day(s)", "kafka": "message(s)"}.get(entity.source, "record(s)")
            rows.append({**row, "from": connector.describe(), "window": shown,
                         "would_fetch": f"{count} {unit}" + (f" ({note})" if note else ""), "ok": True})
        except Exception as exc:  # noqa: BLE001 - each connection is checked and reported, none stops the others
            rows.append({**row, "from": "", "window": "", "would_fetch": "", "ok": False,
                         "error": f"{type(exc).__name__}: {exc}"})
    return rows


@sources_app.command("check")
def sources_check(env: EnvOpt = None,
                  lake_root: LakeOpt = None,
                  landing: LandingOpt = None,
                  run_date: DateOpt = None) -> None:
    """Test each connector's connection and say what a run of the date would fetch; name each entity delivered
    daily whose file for the date is missing (exit 1 if a connection fails or a delivery is missing)."""
    from rich.markup import escape

    from lakehouse.flows.command_line import console, err, settings_for

    settings = settings_for(env, lake_root=lake_root, landing_root=landing)
    day = _date(run_date)
    rows = check_sources(settings, day)
    table = Table(title=f"sources for a run of {day}")
    for column in ("entity", "source", "delivery", "from", "window", "would fetch", "status"):
        table.add_column(column)
    for r in rows:
        status = "[green]ok[/]" if r["ok"] else "[red]failed[/] (below)"
        table.add_row(r["entity"], r["source"], r["delivery"], escape(r["from"]), r["window"], r["would_fetch"], status)
    console.print(table)
    for r in rows:
        if not r["ok"]:
            err.print(f"[bold red]error:[/] {r['entity']}: {escape(r['error'])}", soft_wrap=True)
    if not all(r["ok"] for r in rows):
        raise typer.Exit(code=1)


@sources_app.command("extract")
def sources_extract(entity: Annotated[str, typer.Argument(help="entity, e.g. snowflake.orders")],
                    run_date: DateOpt = None,
                    env: EnvOpt = None,
                    lake_root: LakeOpt = None,
                    landing: LandingOpt = None) -> None:
    """Pull one entity for a date into landing files now (what the daily flow does before bronze); resumes an
    extract that died midway, fetches nothing for a date already extracted."""
    from lakehouse.contracts.landing import landing_entity
    from lakehouse.flows.command_line import console, fail, settings_for
    from lakehouse.tasks.context import LandingNotFoundError, RunContext
    from lakehouse.tasks.extract import extract_entity

    try:
        landing_entity(entity)
    except KeyError as exc:
        fail(str(exc.args[0]))
    overrides = {k: v for k, v in {"lake_root": lake_root, "landing_root": landing}.items() if v is not None}
    settings = settings_for(env, **overrides)
    ctx = RunContext(env=settings.env, run_date=_date(run_date), run_id=f"cli-{uuid.uuid4().hex[:12]}",
                     started_at=datetime.now(UTC), overrides=overrides)
    from lakehouse.backends.sources.extract import SourceError
    from lakehouse.deployments.secrets import SecretNotFoundError
    from lakehouse.deployments.settings import SettingsError

    try:
        summary = extract_entity.fn(ctx, entity)
    except (SettingsError, SecretNotFoundError, SourceError, LandingNotFoundError) as exc:
        fail(str(exc))
        raise
    console.print(f"{entity} {ctx.run_date}: {summary['rows_written']} rows in {summary['files']} file(s)"
                  + (f", {summary['dropped_known']} already landed" if summary["dropped_known"] else "")
                  + (" (already extracted)" if summary["skipped"] else "")
                  + (" (resumed)" if summary["resumed"] else ""))
