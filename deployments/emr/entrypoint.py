"""The spark-submit entry point of an EMR Serverless job run: one stage of the daily flow, on the Spark engine,
for one run date.

    entrypoint.py --stage refine --date 2026-11-01 --run-id <prefect flow run id> [--env emr]
                  [--lake-root s3://...] [--landing-root ...] [--code-dir lakehouse]

It ships next to the code archive (``deployments/emr/package.py``). Spark extracts the archive into the
driver's working directory (``spark.archives=<archive>#lakehouse``, the folder ``--code-dir`` names: the job
submitter, ``deployments/emr/jobs.py``, passes it); this file puts that folder first on
``sys.path`` and runs the same stage flow the laptop runs (``flows.daily.STAGES``). The Spark session is the
one the environment's settings name, else the one spark-submit configured (EMR's, with Delta).

Exit status 0 when the stage wrote its tables (a JSON summary is the last line of stdout); otherwise the
error and its traceback are on stderr, which is the driver log the submitting flow points to.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, date, datetime
from pathlib import Path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="entrypoint.py", description=__doc__.splitlines()[0])
    parser.add_argument("--stage", required=True, help="ingest, refine or publish")
    parser.add_argument("--date", required=True, type=date.fromisoformat, help="run date, YYYY-MM-DD")
    parser.add_argument("--run-id", required=True, help="the submitting Prefect flow run's id (lineage columns)")
    parser.add_argument("--env", default="emr", help="settings environment: deployments/<env>.toml")
    parser.add_argument("--lake-root", help="lake root (default: the environment's)")
    parser.add_argument("--landing-root", help="landing root (default: the environment's)")
    parser.add_argument("--code-dir", help="the folder of the driver's working directory the code archive is "
                                           "extracted to (default: the code is importable already)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    code = Path.cwd() / args.code_dir if args.code_dir else None
    if code is not None and code.is_dir():
        sys.path.insert(0, str(code))

    from lakehouse import flows
    from lakehouse.backends.spark.session import SUBMITTED_MASTER
    from lakehouse.deployments.settings import load_settings
    from lakehouse.flows.daily import STAGES, require_deliveries
    from lakehouse.tasks.context import RunContext

    if args.stage not in STAGES:
        print(f"expected --stage among {sorted(STAGES)}, got {args.stage!r}", file=sys.stderr)
        return 2
    print(f"lakehouse code: {Path(flows.__file__).resolve().parent.parent}", flush=True)
    overrides = {k: v for k, v in {"backend": "spark", "lake_root": args.lake_root,
                                   "landing_root": args.landing_root}.items() if v}
    spark = load_settings(args.env, **overrides).spark
    if not spark.remote and not spark.master:
        overrides["spark_master"] = SUBMITTED_MASTER
    ctx = RunContext(env=args.env, run_date=args.date, run_id=args.run_id, started_at=datetime.now(UTC),
                     overrides=overrides)
    ctx.lake().check_writable()
    if args.stage == "ingest":  # the first stage: a missing daily delivery stops the run before any write
        require_deliveries(ctx, [], lambda msg, *a: print("warning: " + msg % a, file=sys.stderr, flush=True))
    summaries = STAGES[args.stage](ctx)
    print(json.dumps({"stage": args.stage, "run_date": args.date.isoformat(), "tables": summaries}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
