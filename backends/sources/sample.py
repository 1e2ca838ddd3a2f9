"""Deterministic sample landing data for every entity of ``contracts.landing``, with documented dirt.

``generate(out, days=7, scale=1)`` writes ``out/<source>/<entity>/<YYYY-MM-DD>/<file>`` for each day and each
landing entity, in the declared format and with exactly the declared columns. The same (days, scale, seed,
start) always gives byte-identical files: every random draw comes from a ``random.Random`` stream named after
what it is for (``"orders"``, ``"customers/3"``), and files are written with fixed settings.

Dirt (duplicates, nulls, malformed e-mails, bad amounts, unknown currencies and ids, malformed JSON lines, one
renamed column) is injected at the rates in ``DIRT_RATES`` and every injected row is counted in the returned
``GenerationReport``, so tests and docs can state what the pipeline must catch. See ``docs/sample-data.md``.
"""

from __future__ import annotations

import bisect
import itertools
import json
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from pathlib import Path

import polars as pl
import pyarrow as pa

from lakehouse.backends.sources.landing_writer import write_landing_file
from lakehouse.backends.storage import AnyPath, local_copy, root_path
from lakehouse.contracts.landing import (
    ACCOUNTS,
    BEHAVIOUR,
    CONTACTS,
    CUSTOMERS,
    DEAL_STAGES,
    FX_RATES,
    LANDING_ENTITIES,
    OPEN_DEAL_STAGES,
    OPPORTUNITIES,
    ORDER_EVENTS,
    ORDERS,
    PRODUCTS,
    LandingEntity,
)

# ---------------------------------------------------------------------------------------------- knobs
#: id column -> (prefix, digits): customers C0000001, products P00001, orders O000000001, ...
ID_FORMATS: dict[str, tuple[str, int]] = {
    "customer_id": ("C", 7),
    "product_id": ("P", 5),
    "order_id": ("O", 9),
    "account_id": ("A", 6),
    "contact_id": ("CT", 6),
    "opportunity_id": ("D", 6),
    "event_id": ("E", 10),
}

#: Totals over the whole span at scale 1 (proportional to ``scale``; never below ``MIN_VOLUMES``).
VOLUMES_AT_SCALE_1: dict[str, int] = {"orders": 100_000, "customers": 10_000, "products": 1_000}
MIN_VOLUMES: dict[str, int] = {"orders": 20, "customers": 20, "products": 20}
MIN_ORDERS_PER_DAY = 5
ACCOUNTS_PER_CUSTOMER = 0.25
CONTACTS_PER_ACCOUNT = 1.5
OPPORTUNITIES_PER_ACCOUNT = 0.5
CONTACTS_SHARING_CUSTOMER_EMAIL = 0.8
INITIAL_LOAD_SHARE = 0.8  # of customers/CRM records on day 1 when days > 1; the rest sign up day by day
LATER_DAY_REFERENCE_SPAN = 7  # a day appended to a one-day span gets the sign-ups of a week's span's later days
ACTIVE_CUSTOMER_SHARE = 0.30  # of known customers with a behaviour row per day
USD_ORDER_SHARE = 0.5
ORDER_UPDATE_RATE = 0.30  # orders with an `updated` event (shipped/delivered)
ORDER_CANCEL_RATE = 0.05  # orders with a `cancelled` event
SAME_DAY_EVENT_SHARE = {"updated": 0.85, "cancelled": 0.6}  # the rest happen 1-3 days later
LATE_UPDATE_RATE = 0.02  # of a day's new orders: earlier orders re-sent in the day's extract (not dirt)
UPDATE_RATES = {"customers": 0.01, "products": 0.005, "accounts": 0.02, "contacts": 0.02, "opportunities": 0.05}
EVENTS_PER_BATCH = 5_000
MIN_BATCHES_PER_DAY = 2
FX_HISTORY_DAYS = 10  # calendar days before `start` whose business-day rates ride in the first fx file
FX_DAILY_VOLATILITY = 0.004
FX_LEVELS: dict[str, float] = {
    "EUR": 0.92, "GBP": 0.79, "JPY": 150.0, "CAD": 1.36, "AUD": 1.52, "CHF": 0.88, "SEK": 10.5,
    "NOK": 10.7, "DKK": 6.9, "PLN": 4.0, "MXN": 17.0, "BRL": 5.0, "INR": 83.0, "SGD": 1.34, "CNY": 7.2,
    "ZAR": 18.5,
}

#: Dialects real exporters write: the Snowflake extracts are typed Parquet (timestamps, decimals, integers), the
#: CRM exports its local time with an offset and milliseconds.
TYPED_PARQUET: tuple[str, ...] = ("snowflake.customers", "snowflake.products", "snowflake.orders")
CRM_UTC_OFFSET_HOURS = -5
#: Slow sources on weekends (the first day always carries its full load): products do not change (no file: a
#: quiet day); the FX vendor publishes no fixings, sending an empty file on Saturday and nothing on Sunday.

#: Share of the rows of each delivery that carry each kind of dirt. Counts per (entity, kind) are carried
#: over from day to day and start at one, so every configured kind appears at least once per generation.
DIRT_RATES: dict[str, dict[str, float]] = {
    "crm.accounts": {"duplicate": 0.005},
    "crm.contacts": {"duplicate": 0.005, "null_required": 0.005, "malformed_email": 0.005},
    "crm.opportunities": {"duplicate": 0.005, "unknown_currency": 0.01},
    "snowflake.customers": {"duplicate": 0.01, "null_required": 0.005, "malformed_email": 0.005},
    "snowflake.products": {},
    "snowflake.orders": {
        "duplicate": 0.01, "null_required": 0.005, "amount_out_of_range": 0.003, "unknown_currency": 0.002,
        "unknown_customer": 0.003, "unknown_product": 0.003,
    },
    "redshift.customer_behaviour": {"duplicate": 0.01},
    "fx.rates": {"malformed_json": 0.01},
    "kafka.order_events": {"duplicate": 0.005, "malformed_json": 0.001},
}
#: Required columns that ``null_required`` blanks, per entity.
NULLED_COLUMNS: dict[str, tuple[str, ...]] = {
    "crm.contacts": ("email",),
    "snowflake.customers": ("email",),
    "snowflake.orders": ("customer_id", "quantity"),
}
#: Exactly one file per generation (the last day's, when days >= 2) has this column renamed.
RENAMED_COLUMN: tuple[str, str, str] = ("redshift.customer_behaviour", "page_views", "pageviews")
#: Dirt kind -> the downstream rule id that should quarantine it.
DIRT_RULES: dict[str, str] = {
    "duplicate": "duplicate.exact",
    "null_required": "required.<column>",
    "malformed_email": "email.malformed",
    "amount_out_of_range": "amount.out_of_range",
    "unknown_currency": "currency.unknown",
    "unknown_customer": "ref.unknown_customer",
    "unknown_product": "ref.unknown_product",
    "malformed_json": "parse.malformed_json",
    "renamed_column": "schema.missing_column",
}
# The currencies of generated orders and FX rates (any ISO 4217 code is accepted; these are the ones generated).
SAMPLE_CURRENCIES: tuple[str, ...] = (
    "USD", "EUR", "GBP", "JPY", "CAD", "AUD", "CHF", "SEK", "NOK", "DKK", "PLN", "MXN", "BRL", "INR", "SGD",
    "CNY", "ZAR",
)
UNKNOWN_CURRENCIES: tuple[str, ...] = ("XXX", "ZZZ", "QQQ", "ABC")  # not currencies: XXX is ISO's "no currency"

# Row-level kinds, applied to disjoint rows in this order; duplicates are then copied from untouched rows.
_ROW_KINDS = ("null_required", "malformed_email", "amount_out_of_range", "unknown_currency", "unknown_customer",
              "unknown_product")
_DAY = 86_400
_TS_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_FILE_NAMES = {
    "crm.accounts": "accounts_export.csv",
    "crm.contacts": "contacts_export.csv",
    "crm.opportunities": "opportunities_export.csv",
    "snowflake.customers": "customers.parquet",
    "snowflake.products": "products.parquet",
    "snowflake.orders": "orders.parquet",
    "redshift.customer_behaviour": "customer_behaviour.csv",
    "fx.rates": "rates.jsonl",
}
_BATCH_FILE = "batch-{:04d}.jsonl"

_FIRST_NAMES = (
    "Emma", "Liam", "Olivia", "Noah", "Ava", "Lucas", "Mia", "Leon", "Sofia", "Mateo", "Hannah", "Elias",
    "Chloe", "Hugo", "Lena", "Arjun", "Priya", "Yuki", "Kenji", "Aisha", "Omar", "Lars", "Ingrid", "Marta",
    "Pablo", "Camila", "Diego", "Chen", "Wei", "Fatima", "Jonas", "Freya", "Oscar", "Nora", "Ethan", "Grace",
    "Samuel", "Zoe", "Daniel", "Clara",
)
_LAST_NAMES = (
    "Smith", "Johnson", "Garcia", "Muller", "Schmidt", "Rossi", "Dubois", "Silva", "Santos", "Kowalski",
    "Nowak", "Andersson", "Johansson", "Nielsen", "Hansen", "Tanaka", "Sato", "Kim", "Lee", "Patel", "Sharma",
    "Singh", "Khan", "Brown", "Wilson", "Taylor", "Martin", "Lopez", "Gonzalez", "Fischer", "Weber", "Meyer",
    "Novak", "Costa", "Ferreira", "Yamamoto", "Wang", "Li", "Zhang", "Murphy",
)
# country, weight, calling code
_COUNTRIES = (
    ("US", 35, "1"), ("GB", 8, "44"), ("DE", 8, "49"), ("FR", 6, "33"), ("CA", 5, "1"), ("AU", 4, "61"),
    ("JP", 4, "81"), ("BR", 4, "55"), ("IN", 4, "91"), ("MX", 3, "52"), ("ES", 3, "34"), ("IT", 3, "39"),
    ("NL", 3, "31"), ("SE", 2, "46"), ("PL", 2, "48"), ("CH", 2, "41"), ("SG", 2, "65"), ("NO", 1, "47"),
    ("DK", 1, "45"),
)
_EMAIL_DOMAINS = ("gmail.com", "outlook.com", "yahoo.com", "icloud.com", "proton.me", "gmx.de", "web.de",
                  "hotmail.co.uk")
_CATEGORIES = {
    "Electronics": ("Headphones", "Charger", "Speaker", "Keyboard", "Monitor", "Webcam"),
    "Home": ("Lamp", "Blanket", "Vase", "Cushion", "Rug", "Clock"),
    "Kitchen": ("Kettle", "Pan", "Knife Set", "Blender", "Mug", "Toaster"),
    "Sports": ("Yoga Mat", "Dumbbell", "Water Bottle", "Running Shoes", "Backpack", "Tent"),
    "Beauty": ("Face Cream", "Shampoo", "Perfume", "Lip Balm", "Serum", "Brush"),
    "Toys": ("Puzzle", "Building Set", "Plush Bear", "Board Game", "Kite", "Robot"),
    "Books": ("Novel", "Cookbook", "Atlas", "Notebook", "Biography", "Comic"),
    "Office": ("Desk Chair", "Pen Set", "Planner", "Stapler", "Desk Mat", "Shelf"),
}
_ADJECTIVES = ("Classic", "Smart", "Eco", "Pro", "Compact", "Deluxe", "Urban", "Essential", "Premium", "Nordic")
_COMPANY_A = ("Blue", "North", "Silver", "Bright", "Green", "Iron", "Summit", "Harbor", "Pioneer", "Crimson",
              "Golden", "Atlas")
_COMPANY_B = ("rock", "field", "river", "stone", "peak", "bridge", "wave", "leaf", "star", "forge", "pine", "bay")
_COMPANY_KIND = ("Logistics", "Analytics", "Foods", "Systems", "Labs", "Retail", "Health", "Energy", "Media",
                 "Capital")
_LEGAL_FORMS = ("Inc.", "Ltd", "GmbH", "LLC", "S.A.", "AB", "B.V.")
_INDUSTRIES = ("Software", "Retail", "Manufacturing", "Healthcare", "Financial Services", "Logistics", "Media",
               "Education", "Energy", "Hospitality")
_SALES_REPS = ("Alex Morgan", "Sam Rivera", "Jordan Lee", "Taylor Brooks", "Casey Kim", "Robin Novak",
               "Jamie Clarke", "Morgan Diaz")
_LIFECYCLE_STAGES = ("subscriber", "lead", "marketingqualifiedlead", "salesqualifiedlead", "opportunity",
                     "customer", "evangelist")
_STAGE_WEIGHTS = (20, 20, 15, 10, 20, 15)  # DEAL_STAGES order
_DEAL_CURRENCIES = ("USD", "EUR", "GBP", "CAD", "AUD", "CHF", "SEK", "SGD")
_DEAL_CURRENCY_WEIGHTS = (70, 10, 6, 4, 4, 2, 2, 2)
_GARBAGE_LINES = ("ping", "Connection reset by peer", "<html><body>502 Bad Gateway</body></html>",
                  "-- heartbeat --")


# ---------------------------------------------------------------------------------------------- report
@dataclass(frozen=True)
class RenamedColumn:
    """The one delivery whose header carries ``renamed_to`` instead of the declared ``column``."""

    entity: str
    path: Path
    column: str
    renamed_to: str


@dataclass
class EntityReport:
    """What was written for one landing entity over the whole generation.

    ``rows`` counts data rows (CSV/Parquet) or lines (JSON lines), duplicates and malformed lines included.
    ``late_updates`` counts re-sent versions of earlier records (later ``updated_at``): not dirt, they merge.
    """

    rows: int = 0
    files: int = 0
    late_updates: int = 0
    dirt: dict[str, int] = field(default_factory=dict)


@dataclass
class GenerationReport:
    """Everything one ``generate`` call wrote, with the count of every injected dirt kind per entity."""

    out: AnyPath
    start: date
    days: int
    scale: float
    seed: int
    volumes: dict[str, int]
    entities: dict[str, EntityReport]
    files: list[AnyPath]
    renamed_column: RenamedColumn | None = None

    def dirt_total(self, kind: str) -> int:
        """Rows (or lines, or files for ``renamed_column``) of one dirt kind over all entities."""
        return sum(e.dirt.get(kind, 0) for e in self.entities.values())


# ---------------------------------------------------------------------------------------------- public API
#: The file in the landing folder's root that records what ``generate`` and ``append`` wrote there.
MANIFEST_NAME = "_sample_generation.json"


@dataclass(frozen=True)
class SampleSpan:
    """What a landing folder holds: ``days`` days from ``start``, the volumes planned over ``plan_days``."""

    start: date
    plan_days: int
    days: int
    scale: float
    seed: int

    @property
    def next_day(self) -> date:
        """The first day ``append`` would write."""
        return self.start + timedelta(days=self.days)


def generate(
    out: Path | str,
    *,
    days: int,
    scale: float = 1.0,
    seed: int = 42,
    start: date = date(2026, 11, 1),
    progress: Callable[[str, int, int], None] | None = None,
) -> GenerationReport:
    """Write landing files for ``start`` .. ``start + days - 1`` into ``out`` and report what was written.

    Deterministic: the same arguments give byte-identical files. ``scale`` 1 is about 100k orders, 10k customers
    and 1k products over the whole span. ``progress(step, done, total)`` is called once per entity and day.
    Existing files of the same names in the day folders written are replaced. ``out/_sample_generation.json``
    records the span, so ``append`` can add the next days. ``out`` may be ``s3://bucket/prefix``: the files are
    written to a local temporary folder, then uploaded, the span's record last.
    """
    target = root_path(out)
    with local_copy(target) as folder:
        gen = _Generator(folder, days=days, scale=scale, seed=seed, start=start)
        report = gen.run(progress)
        _write_span(folder, SampleSpan(start=start, plan_days=days, days=days, scale=gen.scale, seed=seed))
    return _uploaded(report, folder, target)


def append(
    out: Path | str, *, days: int = 1, progress: Callable[[str, int, int], None] | None = None,
) -> GenerationReport:
    """Add the ``days`` days after the last one ``generate``/``append`` wrote into ``out``, leaving earlier days
    untouched.

    The new days continue the folder's data: new customers, CRM records and orders get the next ids, orders of
    earlier days get their late updates and events, and every dirt kind keeps its rate (the renamed column of
    the generated span is not repeated). Appending twice one day gives the same files as appending two days.
    The report counts what the new days hold.
    """
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        msg = f"expected days as an integer >= 1 (the days to add), got {days!r}; pass e.g. days=1"
        raise ValueError(msg)
    target = root_path(out)
    span = read_span(target)
    with local_copy(target, keep=(MANIFEST_NAME,)) as folder:
        gen = _Generator(folder, days=span.days + days, scale=span.scale, seed=span.seed, start=span.start,
                         plan_days=span.plan_days)
        report = gen.run(progress, first_day=span.days)
        _write_span(folder, SampleSpan(start=span.start, plan_days=span.plan_days, days=span.days + days,
                                       scale=span.scale, seed=span.seed))
    return _uploaded(report, folder, target)


def _uploaded(report: GenerationReport, written: Path, target: AnyPath) -> GenerationReport:
    """``report`` naming the files where they now lie (under ``target``, when they were written elsewhere)."""
    if written == target:
        return report
    return replace(report, out=target, files=[target / p.relative_to(written).as_posix() for p in report.files])


def read_span(out: AnyPath | str) -> SampleSpan:
    """The span ``generate``/``append`` recorded in ``out``; a clear error when there is none."""
    path = root_path(out) / MANIFEST_NAME
    if not path.is_file():
        msg = (f"expected a landing folder written by `lakehouse generate` (it records its days, scale and seed "
               f"in {MANIFEST_NAME}), found no {path}; generate the first days with `lakehouse generate --out {out}`")
        raise FileNotFoundError(msg)
    try:
        raw = json.loads(path.read_text())
        return SampleSpan(start=date.fromisoformat(raw["start"]), plan_days=int(raw["plan_days"]),
                          days=int(raw["days"]), scale=float(raw["scale"]), seed=int(raw["seed"]))
    except (ValueError, KeyError, TypeError) as exc:
        msg = (f"expected {path} to hold start, plan_days, days, scale and seed as `lakehouse generate` writes "
               f"them, could not read it ({exc}); generate the folder again")
        raise ValueError(msg) from exc


def _write_span(out: Path, span: SampleSpan) -> None:
    """Record the span after its files are written: a generation cut short leaves the previous record."""
    text = json.dumps({"start": span.start.isoformat(), "plan_days": span.plan_days, "days": span.days,
                       "scale": span.scale, "seed": span.seed}, sort_keys=True, indent=2) + "\n"
    tmp = out / (MANIFEST_NAME + ".tmp")
    tmp.write_text(text)
    tmp.replace(out / MANIFEST_NAME)


def format_id(column: str, number: int) -> str:
    """The id ``number`` (1-based) formatted as ``column`` values are (``format_id("order_id", 7)``)."""
    prefix, width = ID_FORMATS[column]
    return f"{prefix}{number:0{width}d}"


# ---------------------------------------------------------------------------------------------- randomness
class _Rng:
    """A named random stream. Vectorised draws turn ``Random.randbytes`` into a column, so no numpy is needed."""

    def __init__(self, seed: int, stream: str) -> None:
        self.py = random.Random(f"{seed}/{stream}")

    def uniform(self, n: int) -> pl.Series:
        """``n`` floats in [0, 1) with 53 random bits each."""
        if n <= 0:
            return pl.Series("u", [], dtype=pl.Float64)
        raw = pa.Array.from_buffers(pa.uint64(), n, [None, pa.py_buffer(self.py.randbytes(8 * n))])
        return ((pl.from_arrow(raw) // 2048).cast(pl.Float64) * 2.0**-53).alias("u")

    def ints(self, lo: int, hi: int, n: int) -> pl.Series:
        """``n`` integers in [lo, hi)."""
        return ((self.uniform(n) * (hi - lo)).floor().cast(pl.Int64) + lo).alias("i")

    def index(self, k: int, n: int, weights: Sequence[float] | None = None) -> pl.Series:
        """``n`` indices into a list of ``k`` values, uniform or weighted."""
        u = self.uniform(n)
        if weights is None:
            return (u * k).floor().cast(pl.Int64).clip(0, k - 1)
        cum = list(itertools.accumulate(weights))
        return pl.Series(cum).search_sorted(u * cum[-1], side="right").cast(pl.Int64).clip(0, k - 1)

    def pick(self, values: Sequence[str], n: int, weights: Sequence[float] | None = None) -> pl.Series:
        return pl.Series(list(values), dtype=pl.String).gather(self.index(len(values), n, weights))

    def sample(self, n: int, k: int) -> list[int]:
        """``min(k, n)`` distinct indices from range(n), in random order."""
        return self.py.sample(range(n), min(k, n))

    def perm(self, n: int) -> list[int]:
        """A random permutation of range(n)."""
        frame = pl.DataFrame({"u": self.uniform(n), "i": pl.int_range(0, n, eager=True)})
        return frame.sort("u", "i").get_column("i").to_list()


class _Quota:
    """How many rows of a delivery get a dirt kind: rate x rows, the fraction carried to the next delivery.

    The carry starts at one, so each configured (entity, kind) occurs at least once even at tiny scales.
    """

    def __init__(self) -> None:
        self._carry: dict[tuple[str, str], float] = {}

    def take(self, entity: str, kind: str, n: int) -> int:
        rate = DIRT_RATES[entity].get(kind, 0.0)
        if rate <= 0 or n <= 0:
            return 0
        want = rate * n + self._carry.get((entity, kind), 1.0)
        k = min(int(want), n)
        self._carry[(entity, kind)] = want - k
        return k


# ---------------------------------------------------------------------------------------------- formatting
def _ts(expr: pl.Expr) -> pl.Expr:
    """Epoch seconds -> ``2026-11-01T09:30:00Z``."""
    return pl.from_epoch(expr, time_unit="s").dt.strftime(_TS_FORMAT)


def _ts_local(expr: pl.Expr) -> pl.Expr:
    """Epoch seconds -> the CRM's local time with milliseconds and its offset, ``2026-11-01T04:30:00.250-05:00``
    (the instant plus a millisecond part drawn from the seconds, so copies of a row stay identical)."""
    hours = CRM_UTC_OFFSET_HOURS
    sign = "-" if hours < 0 else "+"
    millis = (expr * 7919 % 1000).cast(pl.String).str.zfill(3)
    return pl.concat_str(pl.from_epoch(expr + hours * 3600, time_unit="s").dt.strftime("%Y-%m-%dT%H:%M:%S"),
                         pl.lit("."), millis, pl.lit(f"{sign}{abs(hours):02d}:00"))


def _typed(entity: LandingEntity, frame: pl.DataFrame) -> pl.DataFrame:
    """A Snowflake unload's typed columns (timestamps with zone, dates, decimals, integers) from the text
    ``frame``; the pipeline's bronze text is the same either way (docs/landing.md, typed Parquet)."""
    casts = {
        "timestamp": lambda c: pl.col(c).str.to_datetime(_TS_FORMAT, time_unit="us", time_zone="UTC"),
        "date": lambda c: pl.col(c).str.to_date("%Y-%m-%d"),
        "decimal": lambda c: pl.col(c).cast(pl.Decimal(18, 2)),
        "integer": lambda c: pl.col(c).cast(pl.Int64),
    }
    return frame.with_columns(casts[c.type](c.name) for c in entity.columns if c.type in casts)


def _date(expr: pl.Expr) -> pl.Expr:
    """Epoch days -> ``2026-11-01``."""
    return pl.from_epoch(expr * _DAY, time_unit="s").dt.strftime("%Y-%m-%d")


def _decimal(expr: pl.Expr, places: int) -> pl.Expr:
    return expr.round(places).cast(pl.Decimal(20, places)).cast(pl.String)


def _id(column: str, number: pl.Expr) -> pl.Expr:
    prefix, width = ID_FORMATS[column]
    return pl.concat_str(pl.lit(prefix), number.cast(pl.String).str.zfill(width))


def _shape(entity: LandingEntity, frame: pl.DataFrame, exprs: dict[str, pl.Expr]) -> pl.DataFrame:
    """The contract's columns, in contract order, as text; a column is ``exprs[name]`` or ``frame[name]``."""
    return frame.select([exprs.get(c, pl.col(c)).cast(pl.String).alias(c) for c in entity.column_names])


def _json_lines(frame: pl.DataFrame) -> pl.Series:
    """One JSON object per row, keys in column order, every value a JSON string (or null)."""
    parts: list[pl.Expr] = []
    for i, col in enumerate(frame.columns):
        escaped = pl.col(col).str.replace_all("\\", "\\\\", literal=True).str.replace_all('"', '\\"', literal=True)
        value = pl.when(pl.col(col).is_null()).then(pl.lit("null")).otherwise(
            pl.concat_str(pl.lit('"'), escaped, pl.lit('"')))
        parts += [pl.lit(("{" if i == 0 else ",") + json.dumps(col) + ":"), value]
    parts.append(pl.lit("}"))
    if frame.height == 0:
        return pl.Series("line", [], dtype=pl.String)
    return frame.select(pl.concat_str(parts).alias("line")).get_column("line")


def _split(total: int, days: int, first_share: float | None) -> list[int]:
    """``total`` over ``days``: evenly, or ``first_share`` on day 1 and the rest evenly after it."""
    if days == 1:
        return [total]
    if first_share is None:
        base, extra = divmod(total, days)
        return [base + (1 if d < extra else 0) for d in range(days)]
    first = round(total * first_share)
    base, extra = divmod(total - first, days - 1)
    return [first] + [base + (1 if d < extra else 0) for d in range(days - 1)]


def _later_day_count(total: int, plan_days: int, first_share: float | None) -> int:
    """New records on a day after the planned span: as many as on its last day (a one-day span: as on the last
    day of a week's span, so an initial load is not repeated)."""
    span = LATER_DAY_REFERENCE_SPAN if plan_days == 1 and first_share is not None else plan_days
    return _split(total, span, first_share)[-1]


def _repeat_days(counts: list[int]) -> pl.Series:
    return pl.Series("day", [d for d, c in enumerate(counts) for _ in range(c)], dtype=pl.Int64)


def _day_column(day: int, n: int) -> pl.Series:
    """``n`` records of generation day ``day``."""
    return pl.Series("day", [day] * n, dtype=pl.Int64)


def _break_email(value: str, r: random.Random) -> str:
    local, _, domain = value.strip().partition("@")
    variant = r.randrange(3)
    if variant == 0:
        return local + domain  # missing @
    if variant == 1:
        cut = max(1, len(local) // 2)
        return f"{local[:cut]} {local[cut:]}@{domain}"  # a space inside
    return f"{local}@@{domain}"  # double @


def _other(values: Sequence[str], current: str, r: random.Random) -> str:
    """A value from ``values`` that differs from ``current``."""
    choices = [v for v in values if v != current]
    return r.choice(choices)


# ---------------------------------------------------------------------------------------------- generator
class _Generator:
    """Plans ``plan_days`` days (the volumes split over them), and can go on day by day up to ``days``.

    Days ``0 .. plan_days - 1`` depend only on ``(plan_days, scale, seed, start)``; each later day is planned on
    its own (its new customers, CRM records and orders drawn from streams named after the day), so a landing
    folder grows by a day without any earlier day changing.
    """

    def __init__(self, out: Path, *, days: int, scale: float, seed: int, start: date,
                 plan_days: int | None = None) -> None:
        if isinstance(days, bool) or not isinstance(days, int) or days < 1:
            msg = f"expected days as an integer >= 1, got {days!r}; pass e.g. days=7"
            raise ValueError(msg)
        if isinstance(scale, bool) or not isinstance(scale, int | float) or not math.isfinite(scale) or scale <= 0:
            msg = f"expected scale as a positive number (1 = 100k orders), got {scale!r}; pass e.g. scale=0.01"
            raise ValueError(msg)
        if not isinstance(start, date) or hasattr(start, "hour"):
            msg = f"expected start as a datetime.date, got {start!r}; pass e.g. start=date(2026, 11, 1)"
            raise TypeError(msg)
        if isinstance(seed, bool) or not isinstance(seed, int):
            msg = f"expected seed as an integer, got {seed!r}"
            raise TypeError(msg)
        self.out, self.days, self.scale, self.seed, self.start = out, days, float(scale), seed, start
        self.plan_days = days if plan_days is None else plan_days
        self.day0 = (start - date(1970, 1, 1)).days  # epoch day of generation day 0
        self.quota = _Quota()
        self.volumes = {k: max(MIN_VOLUMES[k], round(v * scale)) for k, v in VOLUMES_AT_SCALE_1.items()}
        self.volumes["orders"] = max(self.volumes["orders"], MIN_ORDERS_PER_DAY * self.plan_days)
        n_accounts = max(4, round(self.volumes["customers"] * ACCOUNTS_PER_CUSTOMER))
        self.volumes |= {
            "accounts": n_accounts,
            "contacts": max(4, round(n_accounts * CONTACTS_PER_ACCOUNT)),
            "opportunities": max(2, round(n_accounts * OPPORTUNITIES_PER_ACCOUNT)),
        }
        self.report = self._new_report(0)
        self.event_seq = 0
        self._plan_fx()
        self._plan_products()
        self._plan_customers()
        self._plan_crm()
        self._plan_orders()

    def rng(self, stream: str) -> _Rng:
        return _Rng(self.seed, stream)

    def day_secs(self, day: int) -> int:
        """Epoch seconds at 00:00Z of generation day ``day``."""
        return (self.day0 + day) * _DAY

    # ------------------------------------------------------------------------------------------ running
    def run(self, progress: Callable[[str, int, int], None] | None, first_day: int = 0) -> GenerationReport:
        """Write days ``first_day .. days - 1``; earlier days are built again (not written) for their state."""
        builders: dict[str, Callable[[int], list[tuple[str, pl.DataFrame | pl.Series]]]] = {
            ACCOUNTS.name: self._accounts_day, CONTACTS.name: self._contacts_day,
            OPPORTUNITIES.name: self._opportunities_day, CUSTOMERS.name: self._customers_day,
            PRODUCTS.name: self._products_day, ORDERS.name: self._orders_day, BEHAVIOUR.name: self._behaviour_day,
            FX_RATES.name: self._fx_day, ORDER_EVENTS.name: self._events_day,
        }
        total, done = (self.days - first_day) * len(LANDING_ENTITIES), 0
        for d in range(self.days):
            if d >= self.plan_days:
                self._plan_day(d)
            if d == first_day:
                self.report = self._new_report(d)
            day = self.start + timedelta(days=d)
            for entity in LANDING_ENTITIES:
                files = builders[entity.name](d)
                if d < first_day:
                    continue
                folder = entity.folder(self.out, day)
                if files:  # a quiet day of a source delivered when changed: no folder
                    folder.mkdir(parents=True, exist_ok=True)
                for old in folder.glob(_BATCH_FILE.split("{")[0] + "*.jsonl"):
                    old.unlink()
                for name, payload in files:
                    self._write(entity, folder / name, payload)
                done += 1
                if progress is not None:
                    progress(f"{entity.name} {day.isoformat()}", done, total)
        return self.report

    def _new_report(self, first_day: int) -> GenerationReport:
        report = GenerationReport(
            out=self.out, start=self.start + timedelta(days=first_day), days=self.days - first_day,
            scale=self.scale, seed=self.seed, volumes=dict(self.volumes),
            entities={e.name: EntityReport(dirt=dict.fromkeys(DIRT_RATES[e.name], 0)) for e in LANDING_ENTITIES},
            files=[],
        )
        report.entities[RENAMED_COLUMN[0]].dirt["renamed_column"] = 0
        return report

    def _plan_day(self, d: int) -> None:
        """Plan day ``d`` after the planned span: as many new records as the span's last day, drawn on their own."""
        v = self.volumes
        c = _later_day_count(v["customers"], self.plan_days, INITIAL_LOAD_SHARE)
        self.customers = pl.concat([self.customers, self._customer_rows(
            self.customers.height + 1, _day_column(d, c), self.rng(f"customers/plan/{d}"))])
        self.customers_known.append(self.customers_known[-1] + c)
        r = self.rng(f"crm/plan/{d}")
        a = _later_day_count(v["accounts"], self.plan_days, INITIAL_LOAD_SHARE)
        self.accounts_known.append(self.accounts_known[-1] + a)
        self.accounts = pl.concat([self.accounts, self._account_rows(
            self.accounts.height + 1, _day_column(d, a), r)])
        k = _later_day_count(v["contacts"], self.plan_days, INITIAL_LOAD_SHARE)
        self.contacts_known.append(self.contacts_known[-1] + k)
        self.contacts = pl.concat([self.contacts, self._contact_rows(self.contacts.height + 1, [(d, k)], r)])
        o = _later_day_count(v["opportunities"], self.plan_days, INITIAL_LOAD_SHARE)
        self.opportunities_known.append(self.opportunities_known[-1] + o)
        self.opportunities = pl.concat([self.opportunities, self._opportunity_rows(
            self.opportunities.height + 1, _day_column(d, o), r)])
        n = _later_day_count(v["orders"], self.plan_days, None)
        self.orders = pl.concat([self.orders, self._order_rows(
            self.orders.height + 1, _day_column(d, n), self.rng(f"orders/plan/{d}"))])

    def _write(self, entity: LandingEntity, path: Path, payload: pl.DataFrame | pl.Series) -> None:
        if isinstance(payload, pl.DataFrame) and entity.format == "parquet" and entity.name in TYPED_PARQUET:
            payload = _typed(entity, payload)
        rows = write_landing_file(entity, path, payload)
        rep = self.report.entities[entity.name]
        rep.rows += rows
        rep.files += 1
        self.report.files.append(path)

    # ------------------------------------------------------------------------------------------ dirt
    def _dirty(self, entity: LandingEntity, frame: pl.DataFrame, rng: _Rng) -> pl.DataFrame:
        """Inject this entity's row-level dirt into disjoint rows, then add exact duplicates of clean rows."""
        name, n = entity.name, frame.height
        rep = self.report.entities[name]
        counts = [(kind, self.quota.take(name, kind, n)) for kind in _ROW_KINDS if kind in DIRT_RATES[name]]
        k_dup = self.quota.take(name, "duplicate", n)
        order = rng.sample(n, sum(k for _, k in counts) + k_dup)
        pos = 0
        for kind, k in counts:
            rows, pos = order[pos: pos + k], pos + k
            if rows:
                frame = self._mutate(name, kind, frame, rows, rng.py)
            rep.dirt[kind] += len(rows)
        sources = order[pos: pos + k_dup]
        if not sources:
            return frame
        # Copies sit at random places in the same file: originals at even keys, copies at odd keys.
        rep.dirt["duplicate"] += len(sources)
        keyed = frame.with_columns(_k=pl.int_range(0, n, dtype=pl.Int64) * 2, _j=pl.lit(0, dtype=pl.Int64))
        copies = frame[sources].with_columns(
            _k=pl.Series([2 * rng.py.randrange(n + 1) - 1 for _ in sources], dtype=pl.Int64),
            _j=pl.int_range(1, len(sources) + 1, dtype=pl.Int64),
        )
        return pl.concat([keyed, copies]).sort("_k", "_j").drop("_k", "_j")

    def _mutate(self, name: str, kind: str, frame: pl.DataFrame, rows: list[int], r: random.Random) -> pl.DataFrame:
        def scatter(col: str, idx: list[int], values: list[str | None]) -> None:
            nonlocal frame
            if idx:
                frame = frame.with_columns(frame.get_column(col).scatter(idx, pl.Series(values, dtype=pl.String)))

        if kind == "null_required":
            by_col: dict[str, list[int]] = {}
            for i in rows:
                by_col.setdefault(r.choice(NULLED_COLUMNS[name]), []).append(i)
            for col, idx in sorted(by_col.items()):
                scatter(col, idx, [None] * len(idx))
        elif kind == "malformed_email":
            current = frame.get_column("email").gather(rows).to_list()
            scatter("email", rows, [_break_email(v, r) for v in current])
        elif kind == "amount_out_of_range":
            qty_rows, qty_vals, price_rows = [], [], []
            for i in rows:
                variant = r.randrange(4)
                if variant == 3:
                    price_rows.append(i)
                else:
                    qty_rows.append(i)
                    qty_vals.append((f"-{r.randint(1, 5)}", "0", "99999")[variant])
            scatter("quantity", qty_rows, qty_vals)
            prices = frame.get_column("unit_price").gather(price_rows).to_list()
            scatter("unit_price", price_rows, ["-" + p.lstrip("-") for p in prices])
        elif kind == "unknown_currency":
            scatter("currency", rows, [r.choice(UNKNOWN_CURRENCIES) for _ in rows])
        elif kind in ("unknown_customer", "unknown_product"):
            col = kind.replace("unknown_", "") + "_id"
            known = self.volumes[col.replace("_id", "s")]
            # numbers from a range no id is ever issued from (a 9 before the usual digits), also after appends
            reserved = 9 * 10 ** ID_FORMATS[col][1]
            scatter(col, rows, [format_id(col, reserved + r.randrange(known + 1000)) for _ in rows])
        else:  # pragma: no cover - _ROW_KINDS and this switch are kept in step
            msg = f"expected a row dirt kind among {_ROW_KINDS}, got {kind!r}"
            raise ValueError(msg)
        return frame

    def _bad_lines(self, name: str, lines: pl.Series, rng: _Rng) -> list[tuple[int, str]]:
        """(row after which to insert, text) for this delivery's malformed JSON lines."""
        n = lines.len()
        k = self.quota.take(name, "malformed_json", n)
        self.report.entities[name].dirt["malformed_json"] += k
        bad = []
        for _ in range(k):
            if rng.py.random() < 0.6:
                line = lines[rng.py.randrange(n)]
                text = line[: rng.py.randrange(2, len(line) - 1)]  # truncated object: never closes
            else:
                text = rng.py.choice(_GARBAGE_LINES)
            bad.append((rng.py.randrange(n), text))
        return bad

    # ------------------------------------------------------------------------------------------ fx
    def _plan_fx(self) -> None:
        first = self.start - timedelta(days=FX_HISTORY_DAYS)
        calendar = [first + timedelta(days=i) for i in range(FX_HISTORY_DAYS + self.days)]
        self.fx_dates = [d for d in calendar if d.weekday() < 5]
        rates: dict[tuple[date, str], float] = {}
        for cur, level in FX_LEVELS.items():
            r = self.rng(f"fx/{cur}")
            value = level * (1 + 0.02 * (r.py.random() - 0.5))
            for d in self.fx_dates:
                value *= math.exp(r.py.gauss(0.0, FX_DAILY_VOLATILITY))
                rates[(d, cur)] = round(value, 6)
        self.fx_rates = rates
        # As-of rate per generation day and currency (USD = 1): the latest business day on or before it.
        flat: list[float] = []
        for d in range(self.days):
            day = self.start + timedelta(days=d)
            rate_day = max(x for x in self.fx_dates if x <= day)
            flat += [1.0 if c == "USD" else rates[(rate_day, c)] for c in SAMPLE_CURRENCIES]
        self.fx_asof = pl.Series("rate", flat, dtype=pl.Float64)  # index: day * len(SAMPLE_CURRENCIES) + currency

    def _fx_day(self, d: int) -> list[tuple[str, pl.DataFrame | pl.Series]]:
        day = self.start + timedelta(days=d)
        if d > 0 and day.weekday() == 6:  # Sunday: the vendor sends nothing
            return []
        dates = [x for x in self.fx_dates if (x <= day if d == 0 else x == day)]
        rows = [(x, c) for x in dates for c in FX_LEVELS]
        frame = pl.DataFrame({
            "rate_date": [x.isoformat() for x, _ in rows],
            "base_currency": ["USD"] * len(rows),
            "quote_currency": [c for _, c in rows],
            "rate": pl.Series([self.fx_rates[k] for k in rows], dtype=pl.Float64),
            "published_at": [f"{x.isoformat()}T16:00:00Z" for x, _ in rows],
        }, schema_overrides={"rate_date": pl.String, "base_currency": pl.String, "quote_currency": pl.String,
                             "published_at": pl.String})
        frame = _shape(FX_RATES, frame, {"rate": _decimal(pl.col("rate"), 6)})
        lines = _json_lines(frame)
        bad = self._bad_lines(FX_RATES.name, lines, self.rng(f"fx.rates/{d}")) if lines.len() else []
        return [(_FILE_NAMES[FX_RATES.name], _insert_lines(lines, bad))]

    # ------------------------------------------------------------------------------------------ products
    def _plan_products(self) -> None:
        n, r = self.volumes["products"], self.rng("products")
        cats = list(_CATEGORIES)
        cat_idx = r.index(len(cats), n)
        noun = pl.Series([_CATEGORIES[cats[c]][j % 6] for c, j in zip(cat_idx.to_list(), r.ints(0, 6, n).to_list(),
                                                                          strict=True)], dtype=pl.String)
        self.products = pl.DataFrame({
            "product_no": pl.int_range(1, n + 1, eager=True),
            "category": pl.Series(cats, dtype=pl.String).gather(cat_idx),
            "adjective": r.pick(_ADJECTIVES, n),
            "noun": noun,
            # log-uniform list prices between 5 and 500 USD
            "list_price_usd": (r.uniform(n) * math.log(100) + math.log(5)).exp().round(2),
            "updated_at": self.day_secs(0) - r.ints(1, 366, n) * _DAY + r.ints(0, _DAY, n),
        })

    def _products_day(self, d: int) -> list[tuple[str, pl.DataFrame | pl.Series]]:
        r = self.rng(f"products/{d}")
        if d > 0 and (self.start + timedelta(days=d)).weekday() >= 5:  # no changes on weekends: no file
            return []
        if d == 0:
            rows = self.products
        else:
            k = max(1, round(UPDATE_RATES["products"] * self.products.height))
            idx = sorted(r.sample(self.products.height, k))
            factor = 0.9 + 0.2 * r.uniform(k)
            new_price = (self.products.get_column("list_price_usd").gather(idx) * factor).round(2).clip(1.0)
            stamp = self.day_secs(d) + r.ints(0, _DAY, k)
            self.products = self.products.with_columns(
                self.products.get_column("list_price_usd").scatter(idx, new_price),
                self.products.get_column("updated_at").scatter(idx, stamp),
            )
            rows = self.products[idx]
            self.report.entities[PRODUCTS.name].late_updates += k
        frame = _shape(PRODUCTS, rows, {
            "product_id": _id("product_id", pl.col("product_no")),
            "sku": pl.concat_str(pl.col("category").str.slice(0, 3).str.to_uppercase(), pl.lit("-"),
                                 pl.col("product_no").cast(pl.String).str.zfill(6)),
            "product_name": pl.concat_str(pl.col("adjective"), pl.lit(" "), pl.col("noun")),
            "list_price_usd": _decimal(pl.col("list_price_usd"), 2),
            "updated_at": _ts(pl.col("updated_at")),
        })
        return [(_FILE_NAMES[PRODUCTS.name], self._dirty(PRODUCTS, frame, r))]

    # ------------------------------------------------------------------------------------------ customers
    def _plan_customers(self) -> None:
        per_day = _split(self.volumes["customers"], self.plan_days, INITIAL_LOAD_SHARE)
        self.customers_known = list(itertools.accumulate(per_day))  # customers signed up by the end of day d
        self.customers = self._customer_rows(1, _repeat_days(per_day), self.rng("customers"))

    def _customer_rows(self, first_no: int, signup_day: pl.Series, r: _Rng) -> pl.DataFrame:
        """Customers numbered from ``first_no``, signing up on ``signup_day`` (generation days)."""
        n = signup_day.len()
        country_idx = r.index(len(_COUNTRIES), n, [w for _, w, _ in _COUNTRIES])
        first, last = r.pick(_FIRST_NAMES, n), r.pick(_LAST_NAMES, n)
        no = pl.int_range(first_no, first_no + n, eager=True)
        # initial load: signed up within the 3 years before start; later: on their own day
        signup_date = signup_day + self.day0 - (signup_day == 0).cast(pl.Int64) * r.ints(1, 3 * 365, n)
        return pl.DataFrame({
            "customer_no": no,
            "first_name": first,
            "last_name": last,
            "country": pl.Series([c for c, _, _ in _COUNTRIES], dtype=pl.String).gather(country_idx),
            "calling_code": pl.Series([cc for _, _, cc in _COUNTRIES], dtype=pl.String).gather(country_idx),
            "email_domain": r.pick(_EMAIL_DOMAINS, n),
            "phone_digits": r.ints(200_000_000, 999_999_999, n),
            "has_phone": r.uniform(n) >= 0.1,
            "signup_day": signup_day,
            "signup_date": signup_date,
            "updated_at": signup_date * _DAY + r.ints(0, _DAY, n),
        }).with_columns(
            email=pl.concat_str(pl.col("first_name"), pl.lit("."), pl.col("last_name"),
                                pl.col("customer_no").cast(pl.String), pl.lit("@"),
                                pl.col("email_domain")).str.to_lowercase(),
            phone=pl.when(pl.col("has_phone")).then(
                pl.concat_str(pl.lit("+"), pl.col("calling_code"), pl.lit(" "), pl.col("phone_digits").cast(pl.String))),
        )

    def _customers_day(self, d: int) -> list[tuple[str, pl.DataFrame | pl.Series]]:
        r = self.rng(f"customers/{d}")
        rows = self.customers.filter(pl.col("signup_day") == d)
        if d > 0:
            pool = self.customers_known[d - 1]
            k = max(1, round(UPDATE_RATES["customers"] * pool))
            idx = sorted(r.sample(pool, k))
            last = self.customers.get_column("last_name").gather(idx).to_list()
            country = self.customers.get_column("country").gather(idx).to_list()
            for j in range(k):  # a surname or a country changes
                if r.py.random() < 0.5:
                    last[j] = _other(_LAST_NAMES, last[j], r.py)
                else:
                    country[j] = _other([c for c, _, _ in _COUNTRIES], country[j], r.py)
            stamp = self.day_secs(d) + r.ints(0, _DAY, k)
            self.customers = self.customers.with_columns(
                self.customers.get_column("last_name").scatter(idx, pl.Series(last, dtype=pl.String)),
                self.customers.get_column("country").scatter(idx, pl.Series(country, dtype=pl.String)),
                self.customers.get_column("updated_at").scatter(idx, stamp),
            )
            rows = pl.concat([rows, self.customers[idx]])
            self.report.entities[CUSTOMERS.name].late_updates += k
        frame = _shape(CUSTOMERS, rows, {
            "customer_id": _id("customer_id", pl.col("customer_no")),
            "signup_date": _date(pl.col("signup_date")),
            "updated_at": _ts(pl.col("updated_at")),
        })
        return [(_FILE_NAMES[CUSTOMERS.name], self._dirty(CUSTOMERS, frame, r))]

    # ------------------------------------------------------------------------------------------ CRM
    def _plan_crm(self) -> None:
        r = self.rng("crm")
        v = self.volumes
        a_per_day = _split(v["accounts"], self.plan_days, INITIAL_LOAD_SHARE)
        self.accounts_known = list(itertools.accumulate(a_per_day))
        self.accounts = self._account_rows(1, _repeat_days(a_per_day), r)
        c_per_day = _split(v["contacts"], self.plan_days, INITIAL_LOAD_SHARE)
        self.contacts_known = list(itertools.accumulate(c_per_day))
        self.contacts = self._contact_rows(1, list(enumerate(c_per_day)), r)
        o_per_day = _split(v["opportunities"], self.plan_days, INITIAL_LOAD_SHARE)
        self.opportunities_known = list(itertools.accumulate(o_per_day))
        self.opportunities = self._opportunity_rows(1, _repeat_days(o_per_day), r)

    def _account_rows(self, first_no: int, a_day: pl.Series, r: _Rng) -> pl.DataFrame:
        """Accounts numbered from ``first_no``, created on ``a_day``."""
        na = a_day.len()
        return pl.DataFrame({
            "account_no": pl.int_range(first_no, first_no + na, eager=True),
            "a": r.pick(_COMPANY_A, na), "b": r.pick(_COMPANY_B, na), "kind": r.pick(_COMPANY_KIND, na),
            "legal": r.pick(_LEGAL_FORMS, na),
            "industry": r.pick(_INDUSTRIES, na),
            "owner_name": r.pick(_SALES_REPS, na),
            "country": r.pick([c for c, _, _ in _COUNTRIES], na, [w for _, w, _ in _COUNTRIES]),
            "has_domain": r.uniform(na) >= 0.05,
            "created_day": a_day,
            "updated_at": self._created_stamp(a_day, r),
        }).with_columns(
            account_name=pl.concat_str(pl.col("a"), pl.col("b"), pl.lit(" "), pl.col("kind"), pl.lit(" "),
                                       pl.col("legal")),
            domain=pl.concat_str(pl.col("a"), pl.col("b"), pl.lit("-"), pl.col("kind"), pl.lit(".com")
                                 ).str.to_lowercase(),
        ).with_columns(domain=pl.when(pl.col("has_domain")).then(pl.col("domain")))

    def _contact_rows(self, first_no: int, per_day: list[tuple[int, int]], r: _Rng) -> pl.DataFrame:
        """``count`` contacts per ``(day, count)``, numbered from ``first_no``; most share a customer's e-mail
        (case or surrounding spaces may differ)."""
        parts = []
        for d, count in per_day:
            lo = 0 if d == 0 else self.customers_known[d - 1]
            pool = self.customers_known[d] - lo  # customers who signed up that day
            matched = min(pool, round(count * CONTACTS_SHARING_CUSTOMER_EMAIL))
            cust = [lo + i for i in r.sample(pool, matched)] + [-1] * (count - matched)
            order = r.perm(count)
            parts.append(pl.DataFrame({"created_day": [d] * count, "customer_idx": [cust[i] for i in order]},
                                      schema={"created_day": pl.Int64, "customer_idx": pl.Int64}))
        contacts = pl.concat(parts)
        nc = contacts.height
        known_accounts = pl.Series(self.accounts_known, dtype=pl.Int64).gather(contacts.get_column("created_day"))
        account_idx = (r.uniform(nc) * known_accounts).floor().cast(pl.Int64)
        cust_idx = contacts.get_column("customer_idx")
        safe_idx = cust_idx.clip(0, None)
        customers = self.customers
        same_person = cust_idx >= 0
        variant = r.uniform(nc)
        own_first, own_last = r.pick(_FIRST_NAMES, nc), r.pick(_LAST_NAMES, nc)
        return pl.DataFrame({
            "contact_no": pl.int_range(first_no, first_no + nc, eager=True),
            "created_day": contacts.get_column("created_day"),
            "has_account": r.uniform(nc) >= 0.03,
            "account_idx": account_idx,
            "matched": same_person,
            "c_first": customers.get_column("first_name").gather(safe_idx),
            "c_last": customers.get_column("last_name").gather(safe_idx),
            "c_email": customers.get_column("email").gather(safe_idx),
            "own_first": own_first,
            "own_last": own_last,
            "account_domain": self.accounts.get_column("domain").gather(account_idx),
            "personal_domain": r.pick(_EMAIL_DOMAINS, nc),
            "variant": variant,
            "has_phone": r.uniform(nc) >= 0.2,
            "phone_digits": r.ints(200_000_000, 999_999_999, nc),
            "own_stage": r.pick(_LIFECYCLE_STAGES, nc),
            "updated_at": self._created_stamp(contacts.get_column("created_day"), r),
        }).with_columns(
            account_no=pl.when("has_account").then(pl.col("account_idx") + 1),
            first_name=pl.when("matched").then("c_first").otherwise("own_first"),
            last_name=pl.when("matched").then("c_last").otherwise("own_last"),
            lifecycle_stage=pl.when("matched").then(pl.lit("customer")).otherwise("own_stage"),
            phone=pl.when("has_phone").then(pl.concat_str(pl.lit("+1 "), pl.col("phone_digits").cast(pl.String))),
            email=pl.when("matched").then(
                pl.when(pl.col("variant") < 0.6).then("c_email")
                .when(pl.col("variant") < 0.75).then(pl.col("c_email").str.to_uppercase())
                .when(pl.col("variant") < 0.85).then(
                    pl.concat_str(pl.col("c_email").str.slice(0, 1).str.to_uppercase(), pl.col("c_email").str.slice(1)))
                .otherwise(pl.concat_str(pl.lit(" "), pl.col("c_email"), pl.lit(" ")))
            ).otherwise(
                pl.concat_str(pl.col("own_first"), pl.lit("."), pl.col("own_last"), pl.lit("."),
                              pl.col("contact_no").cast(pl.String), pl.lit("@"),
                              pl.when("has_account").then(pl.coalesce("account_domain", "personal_domain"))
                              .otherwise("personal_domain")).str.to_lowercase()
            ),
        )

    def _opportunity_rows(self, first_no: int, o_day: pl.Series, r: _Rng) -> pl.DataFrame:
        """Opportunities numbered from ``first_no``, created on ``o_day``."""
        no = o_day.len()
        known_accounts = pl.Series(self.accounts_known, dtype=pl.Int64).gather(o_day)
        o_account = (r.uniform(no) * known_accounts).floor().cast(pl.Int64)
        stage = r.pick(DEAL_STAGES, no, _STAGE_WEIGHTS)
        created = self._created_stamp(o_day, r)
        return pl.DataFrame({
            "opportunity_no": pl.int_range(first_no, first_no + no, eager=True),
            "created_day": o_day,
            "account_no": o_account + 1,
            "account_name": self.accounts.get_column("account_name").gather(o_account),
            "deal_category": r.pick(list(_CATEGORIES), no),
            "stage": stage,
            "amount": (r.uniform(no) * math.log(100) + math.log(2_500)).exp().round(2),
            "currency": r.pick(_DEAL_CURRENCIES, no, _DEAL_CURRENCY_WEIGHTS),
            # open deals close after they are loaded, closed ones closed in the month before their last change
            "close_date": pl.Series(
                [r.py.randint(7, 120) if s in OPEN_DEAL_STAGES else -r.py.randint(0, 30) for s in stage.to_list()],
                dtype=pl.Int64) + pl.Series(
                [max(c // _DAY, self.day0 + d) if s in OPEN_DEAL_STAGES else c // _DAY
                 for c, d, s in zip(created.to_list(), o_day.to_list(), stage.to_list(), strict=True)],
                dtype=pl.Int64),
            "owner_name": r.pick(_SALES_REPS, no),
            "updated_at": created,
        }).with_columns(opportunity_name=pl.concat_str(pl.col("account_name"), pl.lit(" - "),
                                                      pl.col("deal_category"), pl.lit(" deal")))

    def _created_stamp(self, created_day: pl.Series, r: _Rng) -> pl.Series:
        """updated_at of a new CRM record: within two years before start for the initial load, else its day."""
        n = created_day.len()
        back = (created_day == 0).cast(pl.Int64) * r.ints(1, 730, n)
        return (self.day0 + created_day - back) * _DAY + r.ints(0, _DAY, n)

    def _pick_updates(self, known: int, rate: float, r: _Rng) -> list[int]:
        return sorted(r.sample(known, max(1, round(rate * known)))) if known else []

    def _accounts_day(self, d: int) -> list[tuple[str, pl.DataFrame | pl.Series]]:
        r = self.rng(f"accounts/{d}")
        rows = self.accounts.filter(pl.col("created_day") == d)
        if d > 0:
            idx = self._pick_updates(self.accounts_known[d - 1], UPDATE_RATES["accounts"], r)
            owners = [_other(_SALES_REPS, o, r.py) for o in self.accounts.get_column("owner_name").gather(idx).to_list()]
            self.accounts = self.accounts.with_columns(
                self.accounts.get_column("owner_name").scatter(idx, pl.Series(owners, dtype=pl.String)),
                self.accounts.get_column("updated_at").scatter(idx, self.day_secs(d) + r.ints(0, _DAY, len(idx))),
            )
            rows = pl.concat([rows, self.accounts[idx]])
            self.report.entities[ACCOUNTS.name].late_updates += len(idx)
        frame = _shape(ACCOUNTS, rows, {
            "account_id": _id("account_id", pl.col("account_no")), "updated_at": _ts_local(pl.col("updated_at")),
        })
        return [(_FILE_NAMES[ACCOUNTS.name], self._dirty(ACCOUNTS, frame, r))]

    def _contacts_day(self, d: int) -> list[tuple[str, pl.DataFrame | pl.Series]]:
        r = self.rng(f"contacts/{d}")
        rows = self.contacts.filter(pl.col("created_day") == d)
        if d > 0:
            idx = self._pick_updates(self.contacts_known[d - 1], UPDATE_RATES["contacts"], r)
            stages = [_other(_LIFECYCLE_STAGES, s, r.py)
                      for s in self.contacts.get_column("lifecycle_stage").gather(idx).to_list()]
            self.contacts = self.contacts.with_columns(
                self.contacts.get_column("lifecycle_stage").scatter(idx, pl.Series(stages, dtype=pl.String)),
                self.contacts.get_column("updated_at").scatter(idx, self.day_secs(d) + r.ints(0, _DAY, len(idx))),
            )
            rows = pl.concat([rows, self.contacts[idx]])
            self.report.entities[CONTACTS.name].late_updates += len(idx)
        frame = _shape(CONTACTS, rows, {
            "contact_id": _id("contact_id", pl.col("contact_no")),
            "account_id": _id("account_id", pl.col("account_no")),
            "updated_at": _ts_local(pl.col("updated_at")),
        })
        return [(_FILE_NAMES[CONTACTS.name], self._dirty(CONTACTS, frame, r))]

    def _opportunities_day(self, d: int) -> list[tuple[str, pl.DataFrame | pl.Series]]:
        r = self.rng(f"opportunities/{d}")
        rows = self.opportunities.filter(pl.col("created_day") == d)
        if d > 0:
            known = self.opportunities.head(self.opportunities_known[d - 1])
            open_idx = known.with_row_index("i").filter(pl.col("stage").is_in(OPEN_DEAL_STAGES)).get_column("i")
            picks = self._pick_updates(open_idx.len(), UPDATE_RATES["opportunities"], r)
            idx = sorted(open_idx.gather(picks).cast(pl.Int64).to_list()) if picks else []
            stages, close = [], []
            for s, c in zip(self.opportunities.get_column("stage").gather(idx).to_list(),
                            self.opportunities.get_column("close_date").gather(idx).to_list(), strict=True):
                nxt = DEAL_STAGES[DEAL_STAGES.index(s) + 1]
                if nxt == "closed_won" and r.py.random() < 0.4:
                    nxt = "closed_lost"
                stages.append(nxt)
                close.append(self.day0 + d if nxt.startswith("closed") else c)
            self.opportunities = self.opportunities.with_columns(
                self.opportunities.get_column("stage").scatter(idx, pl.Series(stages, dtype=pl.String)),
                self.opportunities.get_column("close_date").scatter(idx, pl.Series(close, dtype=pl.Int64)),
                self.opportunities.get_column("updated_at").scatter(
                    idx, self.day_secs(d) + r.ints(0, _DAY, len(idx))),
            )
            rows = pl.concat([rows, self.opportunities[idx]])
            self.report.entities[OPPORTUNITIES.name].late_updates += len(idx)
        frame = _shape(OPPORTUNITIES, rows, {
            "opportunity_id": _id("opportunity_id", pl.col("opportunity_no")),
            "account_id": _id("account_id", pl.col("account_no")),
            "amount": _decimal(pl.col("amount"), 2),
            "close_date": _date(pl.col("close_date")),
            "updated_at": _ts_local(pl.col("updated_at")),
        })
        return [(_FILE_NAMES[OPPORTUNITIES.name], self._dirty(OPPORTUNITIES, frame, r))]

    # ------------------------------------------------------------------------------------------ orders
    def _plan_orders(self) -> None:
        """Every order of the planned days and its life: extract status on its day, and a later event if any."""
        day = _repeat_days(_split(self.volumes["orders"], self.plan_days, None))
        self.orders = self._order_rows(1, day, self.rng("orders"))

    def _order_rows(self, first_no: int, day: pl.Series, r: _Rng) -> pl.DataFrame:
        """Orders numbered from ``first_no`` (in time order), placed on ``day``."""
        n = day.len()
        plan = pl.DataFrame({"day": day, "sec": r.ints(0, _DAY - 60, n)}).sort("day", "sec")
        day = plan.get_column("day")
        known = pl.Series(self.customers_known, dtype=pl.Int64).gather(day)
        # skewed picks: early customers and the first products order more often (gives RFM something to find)
        customer_idx = (known.cast(pl.Float64) * r.uniform(n) ** 1.5).floor().cast(pl.Int64)
        product_idx = (r.uniform(n) ** 1.3 * self.volumes["products"]).floor().cast(pl.Int64)
        others = len(SAMPLE_CURRENCIES) - 1
        weights = [USD_ORDER_SHARE if c == "USD" else (1 - USD_ORDER_SHARE) / others for c in SAMPLE_CURRENCIES]
        cur_idx = r.index(len(SAMPLE_CURRENCIES), n, weights)
        rate = self.fx_asof.gather(day * len(SAMPLE_CURRENCIES) + cur_idx)
        price = self.products.get_column("list_price_usd").gather(product_idx)
        plan = plan.with_columns(
            _life=r.uniform(n), _ship=r.uniform(n), _same=r.uniform(n), _delay=r.ints(1, 4, n),
            _later_sec=r.ints(0, _DAY, n), _same_sec=r.uniform(n),
        ).with_columns(
            order_no=pl.int_range(first_no, first_no + n, dtype=pl.Int64),
            customer_no=customer_idx + 1,
            product_no=product_idx + 1,
            quantity=(1 + (r.uniform(n) ** 2.2 * 10).floor()).cast(pl.Int64),
            currency=pl.Series(list(SAMPLE_CURRENCIES), dtype=pl.String).gather(cur_idx),
            unit_price=(price * rate).round(2).clip(0.01),
            event_type=pl.when(pl.col("_life") < ORDER_CANCEL_RATE).then(pl.lit("cancelled"))
            .when(pl.col("_life") < ORDER_CANCEL_RATE + ORDER_UPDATE_RATE).then(pl.lit("updated")),
        ).with_columns(
            order_ts=pl.col("day").add(self.day0).mul(_DAY) + pl.col("sec"),
            event_status=pl.when(pl.col("event_type") == "cancelled").then(pl.lit("cancelled"))
            .when(pl.col("event_type") == "updated").then(
                pl.when(pl.col("_ship") < 0.6).then(pl.lit("shipped")).otherwise(pl.lit("delivered"))),
            event_same_day=pl.col("_same") < pl.when(pl.col("event_type") == "cancelled").then(
                SAME_DAY_EVENT_SHARE["cancelled"]).otherwise(SAME_DAY_EVENT_SHARE["updated"]),
        ).with_columns(
            event_day=pl.when(pl.col("event_same_day")).then(pl.col("day"))
            .otherwise(pl.col("day") + pl.col("_delay")),
            # same day: strictly after the order, before midnight; later days: any time
            event_ts=pl.when(pl.col("event_same_day")).then(
                pl.col("order_ts") + 1 + (pl.col("_same_sec") * (_DAY - 1 - pl.col("sec"))).floor().cast(pl.Int64)
            ).otherwise((pl.col("day") + pl.col("_delay") + self.day0) * _DAY + pl.col("_later_sec")),
        ).with_columns(
            # the day's extract shows what happened by its end; later events only reach it as late updates
            status=pl.when(pl.col("event_type").is_not_null() & pl.col("event_same_day"))
            .then("event_status").otherwise(pl.lit("placed")),
            updated_at=pl.when(pl.col("event_type").is_not_null() & pl.col("event_same_day"))
            .then("event_ts").otherwise("order_ts"),
        )
        return plan.drop("sec", "_life", "_ship", "_same", "_delay", "_later_sec", "_same_sec")

    def _orders_day(self, d: int) -> list[tuple[str, pl.DataFrame | pl.Series]]:
        r = self.rng(f"orders/{d}")
        new = self.orders.filter(pl.col("day") == d)
        late = self.orders.filter(
            pl.col("event_type").is_not_null() & (pl.col("event_day") == d) & (pl.col("day") < d))
        k = min(late.height, max(1, round(LATE_UPDATE_RATE * new.height))) if late.height else 0
        late = late[sorted(r.sample(late.height, k))].with_columns(
            status=pl.col("event_status"), updated_at=pl.col("event_ts"))
        self.report.entities[ORDERS.name].late_updates += k
        frame = _shape(ORDERS, pl.concat([new, late]), {
            "order_id": _id("order_id", pl.col("order_no")),
            "customer_id": _id("customer_id", pl.col("customer_no")),
            "product_id": _id("product_id", pl.col("product_no")),
            "unit_price": _decimal(pl.col("unit_price"), 2),
            "order_ts": _ts(pl.col("order_ts")),
            "updated_at": _ts(pl.col("updated_at")),
        })
        return [(_FILE_NAMES[ORDERS.name], self._dirty(ORDERS, frame, r))]

    def _events_day(self, d: int) -> list[tuple[str, pl.DataFrame | pl.Series]]:
        r = self.rng(f"order_events/{d}")
        created = self.orders.filter(pl.col("day") == d).select(
            "order_no", ts=pl.col("order_ts"), event_type=pl.lit("created"), status=pl.lit("placed"),
            rank=pl.lit(0, dtype=pl.Int64))
        later = self.orders.filter(pl.col("event_type").is_not_null() & (pl.col("event_day") == d)).select(
            "order_no", ts=pl.col("event_ts"), event_type=pl.col("event_type"), status=pl.col("event_status"),
            rank=pl.lit(1, dtype=pl.Int64))
        events = pl.concat([created, later]).sort("ts", "order_no", "rank")
        n = events.height
        events = events.with_columns(event_no=pl.int_range(self.event_seq + 1, self.event_seq + n + 1,
                                                           dtype=pl.Int64))
        self.event_seq += n
        frame = _shape(ORDER_EVENTS, events, {
            "event_id": _id("event_id", pl.col("event_no")),
            "order_id": _id("order_id", pl.col("order_no")),
            "event_ts": _ts(pl.col("ts")),
        })
        lines = _json_lines(frame)
        batches = max(MIN_BATCHES_PER_DAY, math.ceil(n / EVENTS_PER_BATCH))
        bounds = [b * n // batches for b in range(batches + 1)]  # batch b holds rows bounds[b] .. bounds[b+1]-1
        # at-least-once delivery: some events again, in the next micro-batch of the same day
        k_dup = self.quota.take(ORDER_EVENTS.name, "duplicate", n)
        self.report.entities[ORDER_EVENTS.name].dirt["duplicate"] += k_dup
        extra: list[tuple[int, str]] = []
        for src in r.sample(n, k_dup):
            b = bisect.bisect_right(bounds, src) - 1
            target = (b + 1) % batches
            extra.append((r.py.randrange(bounds[target], bounds[target + 1]), lines[src]))
        extra += self._bad_lines(ORDER_EVENTS.name, lines, r) if n else []
        per_batch: dict[int, list[tuple[int, str]]] = {}
        for pos, text in extra:
            b = bisect.bisect_right(bounds, pos) - 1
            per_batch.setdefault(b, []).append((pos - bounds[b], text))
        out: list[tuple[str, pl.DataFrame | pl.Series]] = []
        for b in range(batches):
            lo, hi = bounds[b], bounds[b + 1]
            out.append((_BATCH_FILE.format(b), _insert_lines(lines.slice(lo, hi - lo), per_batch.get(b, []))))
        return out

    # ------------------------------------------------------------------------------------------ behaviour
    def _behaviour_day(self, d: int) -> list[tuple[str, pl.DataFrame | pl.Series]]:
        r = self.rng(f"customer_behaviour/{d}")
        known = self.customers_known[d]
        active = pl.Series("customer_no", range(1, known + 1), dtype=pl.Int64).filter(
            r.uniform(known) < ACTIVE_CUSTOMER_SHARE)
        m = active.len()
        sessions = 1 + (r.uniform(m) ** 2 * 8).floor().cast(pl.Int64)
        page_views = sessions * (1 + (r.uniform(m) * 12).floor().cast(pl.Int64))
        rows = pl.DataFrame({
            "customer_no": active,
            "sessions": sessions,
            "page_views": page_views,
            "add_to_cart": (page_views.cast(pl.Float64) * 0.3 * r.uniform(m)).floor().cast(pl.Int64),
            "time_on_site_s": page_views * (15 + (r.uniform(m) * 100).floor().cast(pl.Int64)),
        })
        day = (self.start + timedelta(days=d)).isoformat()
        frame = _shape(BEHAVIOUR, rows, {
            "customer_id": _id("customer_id", pl.col("customer_no")),
            "activity_date": pl.lit(day),
            "extracted_at": pl.lit(f"{day}T23:55:00Z"),
        })
        frame = self._dirty(BEHAVIOUR, frame, r)
        name = _FILE_NAMES[BEHAVIOUR.name]
        if self.plan_days >= 2 and d == self.plan_days - 1:  # the one schema drift of the planned days
            entity, column, renamed_to = RENAMED_COLUMN
            frame = frame.rename({column: renamed_to})
            path = self.out / BEHAVIOUR.source / BEHAVIOUR.entity / day / name
            self.report.renamed_column = RenamedColumn(entity, path, column, renamed_to)
            self.report.entities[entity].dirt["renamed_column"] += 1
        return [(name, frame)]


def _insert_lines(lines: pl.Series, extra: list[tuple[int, str]]) -> pl.Series:
    """``lines`` with each ``(pos, text)`` placed right after line ``pos`` (``-1``: before the first)."""
    if not extra:
        return lines
    keyed = pl.DataFrame({"line": lines.cast(pl.String)}).with_columns(
        _k=pl.int_range(0, pl.len(), dtype=pl.Int64) * 2, _j=pl.lit(0, dtype=pl.Int64))
    added = pl.DataFrame({"line": [t for _, t in extra], "_k": [2 * p + 1 for p, _ in extra],
                          "_j": list(range(1, len(extra) + 1))},
                         schema={"line": pl.String, "_k": pl.Int64, "_j": pl.Int64})
    return pl.concat([keyed, added]).sort("_k", "_j").get_column("line")
