"""The tree stays ruff-clean (style rule 10)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_reports_nothing():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", str(ROOT)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_layers_import_one_way():
    """The import-linter contracts of pyproject.toml: contracts <- settings <- backends <- tasks <- flows <- CLI and
    entry points; the two engine packages never import each other; transforms import no engine, lake or Prefect."""
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--config", str(ROOT / "pyproject.toml"), "--no-cache"], cwd=ROOT,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_no_private_name_is_imported_across_modules():
    import re

    pattern = re.compile(r"^\s*from lakehouse\.[\w.]+ import .*\b_[a-z]\w*", re.MULTILINE)
    offenders = [f"{p.relative_to(ROOT)}: {m.group(0).strip()}"
                 for pkg in ("flows", "tasks", "backends", "contracts", "deployments", "bench")
                 for p in sorted((ROOT / pkg).rglob("*.py")) for m in pattern.finditer(p.read_text())]
    assert offenders == []
