"""``lakehouse emr``: ship the code to EMR Serverless, print the IAM policies, run the daily flow's stages there."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from lakehouse.flows.command_line import (
    console,
    fail,
    parse_date,
    settings_for,
)

emr_app = typer.Typer(help="EMR Serverless: ship the code, print the IAM policies, run the daily flow's stages there.",
                      no_args_is_help=True)
EmrEnvOpt = Annotated[str, typer.Option("--env", help="environment: deployments/<env>.toml")]


@emr_app.command("ship")
def emr_ship(env: EmrEnvOpt = "emr") -> None:
    """Build the code archive and upload it with the entry point to emr.code_uri (skipped if already there)."""
    from lakehouse.deployments.emr import package
    from lakehouse.deployments.emr.jobs import EmrJobError, aws_client
    from lakehouse.deployments.settings import SettingsError

    try:
        emr = settings_for(env).emr.require()
        bundle = package.build()
        shipped = package.ship(bundle, emr.code_uri, aws_client("s3", emr.region))
    except (SettingsError, EmrJobError) as exc:
        fail(str(exc))
        raise
    console.print(f"code {shipped.digest}: {len(bundle.files)} files, {len(bundle.archive) / 1024:.0f} KiB; "
                  f"{shipped.uploaded} object(s) uploaded")
    console.print(f"archive    {shipped.archive_uri}\nentrypoint {shipped.entrypoint_uri}")


@emr_app.command("policy")
def emr_policy(
    which: Annotated[str, typer.Argument(help="execution (the job runtime role) or submitter (the Prefect worker)")],
    env: EmrEnvOpt = "emr",
) -> None:
    """Print an IAM policy scoped to the environment's lake, landing, code and log prefixes."""

    from lakehouse.deployments.emr import iam
    from lakehouse.deployments.settings import SettingsError

    if which not in iam.POLICIES:
        fail(f"expected a policy among {sorted(iam.POLICIES)}, got {which!r}")
    try:
        print(json.dumps(iam.render(settings_for(env), which), indent=2))  # type: ignore[arg-type]
    except SettingsError as exc:
        fail(str(exc))


@emr_app.command("run")
def emr_run(
    run_date: Annotated[str, typer.Option("--date", help="run date, YYYY-MM-DD")],
    stage: Annotated[list[str] | None, typer.Option("--stage", help="ingest, refine or publish (repeat; default all)")] = None,
    env: EmrEnvOpt = "emr",
) -> None:
    """Run the daily flow's stages for one date as EMR Serverless job runs, waiting for each."""
    from lakehouse.deployments.settings import SettingsError
    from lakehouse.flows.daily import STAGES
    from lakehouse.flows.emr import emr_daily_lakehouse

    day = parse_date(run_date, "--date")
    unknown = [s for s in stage or [] if s not in STAGES]
    if unknown:
        fail(f"expected --stage among {list(STAGES)}, got {unknown}")
    try:
        settings_for(env).emr.require()
    except SettingsError as exc:
        fail(str(exc))
    state = emr_daily_lakehouse(run_date=day, env=env, stages=stage or None, return_state=True)
    if not state.is_completed():
        fail(f"{state.type.value.lower()}: {state.message}")
    for done in state.result():
        console.print(f"{done['stage']:8} EMR job run {done['job_run_id']}: {done['seconds']:.0f} s")
