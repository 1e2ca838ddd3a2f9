"""What every lakehouse command shares: the consoles, the common options, and turning a bad argument or setting
into one clear message and exit code 2 (never a traceback)."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console

console = Console(width=max(120, Console().width))
err = Console(stderr=True)

EnvOpt = Annotated[str | None, typer.Option("--env", help="environment: deployments/<env>.toml (default local)")]
LakeOpt = Annotated[str | None, typer.Option("--lake-root", help="lake folder or s3://bucket/prefix")]
LandingOpt = Annotated[str | None, typer.Option("--landing", help="landing folder")]
BackendOpt = Annotated[str | None, typer.Option("--backend", help="engine: polars (laptop) or spark")]
AllowMissingOpt = Annotated[list[str] | None, typer.Option(
    "--allow-missing", help="an entity delivered daily that may be missing this time, e.g. redshift.customer_behaviour "
                            "(repeat for more)")]
RemoteOpt = Annotated[str | None, typer.Option("--spark-remote", help="Spark Connect URL sc://host:port (spark engine)")]
MasterOpt = Annotated[str | None, typer.Option(
    "--spark-master", help="classic Spark master, e.g. yarn or local[2] (spark engine; default: embedded Sail)")]


def fail(message: str) -> None:
    from rich.markup import escape

    from lakehouse.flows.display import plain

    err.print(f"[bold red]error:[/] {escape(plain(message))}")  # a message may name a [settings.table] or a file
    raise typer.Exit(code=2)


def parse_date(value: str, option: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        fail(f"expected {option} as YYYY-MM-DD (e.g. 2026-11-01), got {value!r}")
        raise  # unreachable


def lake_of(settings: Any) -> Any:
    """The settings' lake; an ``s3://`` root whose bucket does not answer is one clear error (exit 2), unless
    its credentials come from a prefect-aws block (the daily flow loads it and checks the root then)."""
    from lakehouse.backends.lake import Lake, LakeNotWritableError

    lake = Lake(settings.lake_root)
    if getattr(settings, "aws_credentials_block", None):  # the flow loads those credentials, then checks
        return lake
    try:
        lake.check_reachable()
    except LakeNotWritableError as exc:
        fail(str(exc))
    return lake


def run_lock_of(settings: Any) -> Any:
    from lakehouse.backends.run_lock import RunLock

    return RunLock.of(settings)


def settings_for(env: str | None, **overrides: Any):
    from lakehouse.deployments.settings import SettingsError, load_settings

    try:
        return load_settings(env, **overrides)
    except SettingsError as exc:
        fail(str(exc))
        raise


def exit_now(code: int | str | None) -> NoReturn:
    """End a finished command's process with ``code`` (as ``sys.exit`` takes it) without Python's teardown.

    Once a command has done its work, the interpreter's teardown of everything it loaded (Prefect's modules,
    Polars' and delta-rs's runtimes) takes 0.3-0.8 s more, for nothing: a command's writes are committed before
    it returns. This does what a normal exit does that matters, in the same order (the remaining non-daemon
    threads are joined, then the exit handlers run: Prefect drains its log and event workers to the server,
    logging flushes its handlers), flushes the standard streams, and ends the process.
    """
    import atexit
    import os
    import sys
    import threading

    if isinstance(code, str):  # sys.exit("message"): the message on stderr, status 1
        print(code, file=sys.stderr)
        code = 1
    threading._shutdown()  # type: ignore[attr-defined]  # what the interpreter calls first at exit
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`lakehouse tables | head`): nothing more to deliver
            pass
    os._exit(code or 0)
