"""How data values are shown to people: text a terminal cannot take for commands, and text a spreadsheet cannot
take for a formula.

Values in the lake come from outside systems; the CLI and the report print them. ``terminal`` escapes control
characters (an ``ESC[2J`` in a name would clear the screen, a CR would overwrite a line) and returns a rich
``Text``, which is never read as markup (``[/bold]`` or ``[link=...]`` stay literal). ``inert`` applies the OWASP
rule for CSV injection to text handed to people as a table: a value starting with ``=``, ``+``, ``-``, ``@``, tab
or CR gets a leading apostrophe. The lake and the Snowflake publish keep values exactly as they arrived.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from rich.text import Text

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _visible(match: re.Match[str]) -> str:
    ch = match.group()
    return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(ch) or (
        f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")


def plain(value: Any) -> str:
    """``value`` as one line of text with every control character written as an escape (``\\x1b``, ``\\n``)."""
    return _CONTROL.sub(_visible, "" if value is None else str(value))


def terminal(value: Any) -> Text:
    """``value`` for a rich table cell or line: control characters escaped, never parsed as markup."""
    return Text(plain(value))


def inert(value: Any) -> str:
    """``value`` for a table people open in a spreadsheet: a formula-like start is neutralised."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


class _NoTraceback(logging.Formatter):
    """A console formatter that prints an error's one-line message and leaves its traceback out unless the
    logger is at DEBUG (the Prefect UI and the DEBUG log keep it)."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info and not logging.getLogger(record.name).isEnabledFor(logging.DEBUG):
            record = logging.makeLogRecord({**record.__dict__, "exc_info": None, "exc_text": None})
        return self.inner.format(record)


def quiet_tracebacks() -> None:
    """Prefect's console handlers print each failed task's and flow's traceback (three copies for one failed
    gate); keep their one-line messages and leave tracebacks to DEBUG (``PREFECT_LOGGING_LEVEL=DEBUG``)."""
    from prefect.logging.handlers import PrefectConsoleHandler

    loggers = [logging.getLogger(), *(v for v in logging.Logger.manager.loggerDict.values()
                                      if isinstance(v, logging.Logger))]
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, PrefectConsoleHandler) and not isinstance(handler.formatter, _NoTraceback):
                handler.setFormatter(_NoTraceback(handler.formatter or logging.Formatter()))


# ------------------------------------------------------------------------------------- browsing a table
_FILTER = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(==|=|!=|<=|>=|<|>)\s*(.*?)\s*$")


def _value(text: str, dtype: Any, column: str) -> Any:
    """``text`` as a value of ``dtype`` (a Polars type), or a ValueError naming what was expected."""
    import polars as pl

    raw = text[1:-1] if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"" else text
    try:
        if dtype == pl.Utf8:
            return raw
        if dtype == pl.Boolean:
            return {"true": True, "false": False}[raw.lower()]
        series = pl.Series([raw])
        if dtype == pl.Date:
            return series.str.to_date("%Y-%m-%d").item()
        if isinstance(dtype, pl.Datetime):
            return series.str.to_datetime(time_zone="UTC").dt.convert_time_zone(dtype.time_zone or "UTC").item()
        return series.cast(dtype, strict=True).item()
    except (KeyError, ValueError, pl.exceptions.PolarsError):
        hint = {"Date": "2026-11-01", "Boolean": "true or false"}.get(str(dtype), "")
        msg = f"expected a {dtype} value for {column!r}{f' (e.g. {hint})' if hint else ''}, got {text!r}"
        raise ValueError(msg) from None


def row_filter(text: str, schema: Any) -> Any:
    """``column<op>value`` (``=``, ``!=``, ``<``, ``<=``, ``>``, ``>=``; dates as 2026-11-01, timestamps as ISO
    8601) as a Polars expression on a frame of ``schema``; a ValueError naming what was expected."""
    import polars as pl

    match = _FILTER.match(text)
    if not match:
        msg = f"expected a filter like 'country=DE' or 'amount_usd>=100' (=, !=, <, <=, >, >=), got {text!r}"
        raise ValueError(msg)
    column, op, raw = match.groups()
    if column not in schema:
        msg = f"expected a column among {', '.join(schema)} in --where, got {column!r}"
        raise ValueError(msg)
    value, col = _value(raw, schema[column], column), pl.col(column)
    return {"=": col == value, "==": col == value, "!=": col != value, "<": col < value, "<=": col <= value,
            ">": col > value, ">=": col >= value}[op]


def browse(frame: Any, *, columns: list[str] | None, where: list[str], order_by: list[str], limit: int) -> Any:
    """At most ``limit`` rows of a Polars LazyFrame: filtered (every ``where``), ordered (``column`` or
    ``column:desc``; ties and the rest by every column, so the same rows always print in the same order), and
    the ``columns`` asked for. A ValueError names an unknown column or a bad filter."""
    import polars as pl

    schema = frame.collect_schema()
    for name in [*(columns or []), *(o.split(":")[0] for o in order_by)]:
        if name not in schema:
            msg = f"expected a column among {', '.join(schema)}, got {name!r}"
            raise ValueError(msg)
    for spec in order_by:
        if ":" in spec and spec.split(":", 1)[1] not in ("asc", "desc"):
            msg = f"expected --order-by COLUMN or COLUMN:desc (or :asc), got {spec!r}"
            raise ValueError(msg)
    for text in where:
        frame = frame.filter(row_filter(text, schema))
    keys = [o.split(":")[0] for o in order_by]
    rest = [c for c in schema if c not in keys and not schema[c].is_nested()]  # nested types do not sort
    descending = [o.endswith(":desc") for o in order_by] + [False] * len(rest)
    frame = frame.sort([*keys, *rest], descending=descending, nulls_last=True, maintain_order=True)
    frame = frame.head(limit)
    if columns:
        frame = frame.select(columns)
    out = frame.collect()
    return out.with_columns(pl.col(c).map_elements(plain, return_dtype=pl.Utf8)
                            for c, t in out.schema.items() if t == pl.Utf8)


def render(frame: Any, fmt: str, width: int) -> str:
    """Rows as ``table`` (fits ``width`` characters: columns that do not fit are elided, pick them with
    ``--columns``), ``csv`` (formula-like text neutralised) or ``json`` (one object per line)."""
    import polars as pl

    if fmt == "csv":
        safe = frame.with_columns(pl.col(c).map_elements(inert, return_dtype=pl.Utf8)
                                  for c, t in frame.schema.items() if t == pl.Utf8)
        return safe.write_csv()
    if fmt == "json":
        return frame.write_ndjson()
    with pl.Config(tbl_rows=frame.height, tbl_cols=max(2, width // 14), tbl_width_chars=width,
                   fmt_str_lengths=max(12, min(80, width // 4)), tbl_hide_dataframe_shape=True):
        return str(frame)
