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
