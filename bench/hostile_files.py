"""Benchmark: what hostile landing files cost the shared landing reader (``backends/landing.py``).

    .venv/bin/python bench/hostile_files.py

Each case is written to a temporary folder, then read in a fresh process (so each peak RSS is its own): a CSV
record with a 256 MiB field, a JSON line of 256 MiB, a 200,000-column CSV header, a JSON line nested 5000 deep,
a gzip file of 256 MiB of short rows (8.7 million), and a valid file for scale. It prints the outcome (rows,
quarantine rules, refusal), the seconds and the reading process's peak RSS above its start.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEADER = b"account_id,account_name,domain,industry,owner_name,country,updated_at\n"
ROW = b"A2,ok,,,,,2026-11-01T00:00:00Z\n"
MIB = 1 << 20


def _write(folder: Path) -> dict[str, tuple[str, Path]]:
    cases: dict[str, tuple[str, Path]] = {}
    big = folder / "field.csv"
    with big.open("wb") as f:
        f.write(HEADER + b"A1,")
        for _ in range(256):
            f.write(b"x" * MIB)
        f.write(b",,,,,2026-11-01T00:00:00Z\n" + ROW)
    cases["CSV record with a 256 MiB field"] = ("crm.accounts", big)
    line = folder / "line.jsonl"
    with line.open("wb") as f:
        f.write(b'{"rate_date": "')
        for _ in range(256):
            f.write(b"x" * MIB)
        f.write(b'"}\n{"rate_date": "2026-11-01"}\n')
    cases["JSON line of 256 MiB"] = ("fx.rates", line)
    wide = folder / "wide.csv"
    wide.write_bytes(",".join(f"c{i}" for i in range(200_000)).encode() + b"\n1\n")
    cases["CSV header of 200,000 columns"] = ("crm.accounts", wide)
    deep = folder / "deep.jsonl"
    deep.write_bytes(b'{"a":' * 5000 + b"1" + b"}" * 5000 + b"\n")
    cases["JSON line nested 5000 deep"] = ("fx.rates", deep)
    bomb = folder / "bomb.csv.gz"
    with gzip.open(bomb, "wb", compresslevel=9) as f:
        f.write(HEADER)
        for _ in range(256):
            f.write(ROW * (MIB // len(ROW)))
    cases["gzip CSV of 256 MiB of rows"] = ("crm.accounts", bomb)
    valid = folder / "valid.csv"
    valid.write_bytes(HEADER + ROW * 100_000)
    cases["valid CSV, 100,000 rows"] = ("crm.accounts", valid)
    return cases


_READ = """
import json, resource, sys, time
from pathlib import Path
sys.path.insert(0, {root!r})
from lakehouse.backends import landing
from lakehouse.contracts.landing import landing_entity
start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
read = landing.read_files(landing_entity({entity!r}), [(Path({path!r}), "f")])
seconds = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - start
print(json.dumps({{"rows": read.rows.num_rows, "rules": sorted(set(read.rejects.column("rule").to_pylist())),
                  "refused": read.refused.column("problem").to_pylist(), "seconds": seconds, "peak_mib": peak / 1024}}))
"""


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cases = _write(Path(tmp))
        print(f"{'case':44} {'size MiB':>9} {'seconds':>8} {'peak RSS MiB':>13}  outcome")
        for name, (entity, path) in cases.items():
            code = _READ.format(root=str(ROOT), entity=entity, path=str(path))
            out = json.loads(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                                            text=True).stdout)
            outcome = (f"refused {out['refused']}" if out["refused"] else
                       f"{out['rows']:,} rows" + (f", quarantined {out['rules']}" if out["rules"] else ""))
            print(f"{name:44} {path.stat().st_size / 2**20:9.1f} {out['seconds']:8.2f} {out['peak_mib']:13.0f}  "
                  f"{outcome}")


if __name__ == "__main__":
    main()
