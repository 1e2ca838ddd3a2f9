"""The docs tell the truth about the code: every landing column, gold column and rule is documented, and README
stays a front door."""

from __future__ import annotations

from pathlib import Path

from lakehouse.contracts.catalog import GOLD_COLUMN_DOCS, tables
from lakehouse.contracts.landing import LANDING_ENTITIES

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
LANDING = (ROOT / "docs" / "landing.md").read_text()
GOLD = (ROOT / "docs" / "gold.md").read_text()


def test_readme_shows_the_two_commands_first():
    first_code = README.split("```")[1]
    assert "make demo" in first_code and "make test" in first_code


def test_readme_is_a_front_door():
    assert len(README.splitlines()) <= 300
    for page in ("docs/landing.md", "docs/gold.md", "docs/rules.md", "docs/performance.md"):
        assert page in README and (ROOT / page).is_file()


def test_docs_document_every_landing_column():
    for entity in LANDING_ENTITIES:
        section = LANDING.split(f"## `{entity.source}/{entity.entity}` ({entity.format})")[1].split("## ")[0]
        for column in entity.columns:
            assert f"| `{column.name}` | {column.type} | {'yes' if column.required else 'no'} |" in section


def test_docs_document_every_gold_column():
    for spec in tables("gold"):
        assert list(GOLD_COLUMN_DOCS[spec.name]) == spec.columns
        section = GOLD.split(f"## `{spec.name}`")[1].split("## ")[0]
        for column, meaning in GOLD_COLUMN_DOCS[spec.name].items():
            assert f"| `{column}` | {meaning} |" in section


def test_docs_document_every_landing_refusal_and_record_rule():
    from lakehouse.contracts.landing import FILE_RULES, RECORD_RULES

    section = LANDING.split("## `")[0]
    for rule, meaning in {**FILE_RULES, **RECORD_RULES}.items():
        assert f"| `{rule}` | {meaning} |" in section


def test_docs_rules_lists_every_declared_rule_with_its_meaning():
    from lakehouse.contracts.landing import FILE_RULES, RECORD_RULES
    from lakehouse.contracts.rules import ROW_RULES

    page = (ROOT / "docs" / "rules.md").read_text()
    for rule, meaning in {**FILE_RULES, **RECORD_RULES}.items():
        assert f"| `{rule}` |" in page and f"| {meaning} |" in page
    for table, rules in ROW_RULES.items():
        for rule in rules:
            row = next(line for line in page.splitlines()
                       if line.startswith(f"| `{rule.id}` | silver") and line.endswith(f"| {rule.reason} |"))
            assert table.removeprefix("silver.") in row.split("|")[3].strip().split(", "), (rule.id, table)


def test_the_generated_reference_pages_match_the_declarations():
    """docs/landing.md, docs/gold.md and docs/engines.md below their marker are rendered from the declarations
    (python -m flows.reference); a change to a declaration without make docs fails here."""
    from lakehouse.flows.reference import PAGES, rendered

    for page in PAGES:
        assert (ROOT / "docs" / page).read_text() == rendered(page), f"docs/{page} drifted: run make docs"


def test_a_changed_declaration_shows_as_drift(monkeypatch):
    from lakehouse.contracts import catalog
    from lakehouse.flows.reference import rendered

    before = rendered("gold.md")
    docs = {**catalog.GOLD_COLUMN_DOCS, "gold.dim_date": {**catalog.GOLD_COLUMN_DOCS["gold.dim_date"],
                                                         "date": "A calendar day (changed)."}}
    monkeypatch.setattr(catalog, "GOLD_COLUMN_DOCS", docs)
    after = rendered("gold.md")
    assert after != before and "| `date` | A calendar day (changed). |" in after


def test_the_testing_guide_quotes_its_tests():
    """docs/testing.md's Python examples are tests/test_testing_kit.py's (each paragraph of a block verbatim)."""
    guide = (ROOT / "docs" / "testing.md").read_text()
    kit_tests = (ROOT / "tests" / "test_testing_kit.py").read_text()
    blocks = [b.split("\n", 1)[1] for b in guide.split("```")[1::2] if b.startswith("python\n")]
    assert len(blocks) >= 3
    pieces = [p.strip() for b in blocks[1:] for p in b.split("\n\n\n")]
    for piece in pieces:
        assert piece in kit_tests, piece
    assert 'pytest_plugins = ["lakehouse.testing.plugin"]' in (ROOT / "tests" / "conftest.py").read_text()
