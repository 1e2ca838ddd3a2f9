"""The reference pages generated from the declarations: the landing format (docs/landing.md), the gold column
dictionary (docs/gold.md) and the engines' declared gaps (docs/engines.md). Each page keeps its hand-written
introduction; everything after its ``GENERATED`` marker is rendered here. ``make docs`` writes them;
tests/test_docs.py fails when a page and the declarations drift apart.

    python -m lakehouse.flows.reference [--check]
"""

from __future__ import annotations

import sys
from pathlib import Path

MARKER = "<!-- generated from the declarations by `make docs` (python -m lakehouse.flows.reference): edit those, not below -->"
DOCS = Path(__file__).resolve().parents[1] / "docs"


def landing_reference() -> str:
    from lakehouse.contracts.landing import LANDING_ENTITIES

    parts = []
    for e in LANDING_ENTITIES:
        rows = "\n".join(f"| `{c.name}` | {c.type} | {'yes' if c.required else 'no'} | {c.meaning} |" for c in e.columns)
        parts.append(f"## `{e.source}/{e.entity}` ({e.format})\n\n{e.description}\n\n"
                     f"| column | type | required | meaning |\n|---|---|---|---|\n{rows}\n")
    return "\n".join(parts)


def gold_reference() -> str:
    from lakehouse.contracts.catalog import GOLD_COLUMN_DOCS, build_order, table

    parts = []
    for name in build_order("gold"):
        spec = table(name)
        rows = "\n".join(f"| `{c}` | {GOLD_COLUMN_DOCS[name][c]} |" for c in spec.columns)
        facts = (f"Keys: {', '.join(f'`{k}`' for k in spec.keys)}. Built from: "
                 f"{', '.join(f'`{i}`' for i in spec.inputs)}."
                 + (f" Partitioned by {', '.join(f'`{p}`' for p in spec.partition_by)}." if spec.partition_by else ""))
        parts.append(f"## `{name}`\n\n{spec.description}\n{facts}\n\n| column | meaning |\n|---|---|\n{rows}\n")
    return "\n".join(parts)


def engines_reference() -> str:
    from lakehouse.backends.polars.engine import PolarsDeltaEngine
    from lakehouse.backends.spark.engine import GAPS, GAPS_ALL_KINDS

    gaps = [*PolarsDeltaEngine.gaps, *(g for kind in GAPS.values() for g in kind), *GAPS_ALL_KINDS]
    rows = "\n".join(f"| {g.engine} | `{g.operation}` | {g.effect} | {g.instead} |" for g in gaps)
    return f"| engine | operation | what happens instead | when it matters |\n|---|---|---|---|\n{rows}\n"


PAGES = {"landing.md": landing_reference, "gold.md": gold_reference, "engines.md": engines_reference}


def rendered(page: str) -> str:
    """``page`` as the declarations say it should read: its introduction, the marker, the generated part."""
    text = (DOCS / page).read_text()
    intro = text.split(MARKER)[0].rstrip("\n")
    return f"{intro}\n\n{MARKER}\n\n{PAGES[page]()}"


def main(argv: list[str]) -> int:
    stale = [page for page in PAGES if (DOCS / page).read_text() != rendered(page)]
    if "--check" in argv:
        for page in stale:
            print(f"docs/{page} differs from the declarations: run make docs", file=sys.stderr)
        return 1 if stale else 0
    for page in stale:
        (DOCS / page).write_text(rendered(page))
        print(f"wrote docs/{page}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
