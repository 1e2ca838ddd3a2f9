"""Column functions on Polars frames that Narwhals has no portable (or no fast) form for; the same names and
results as backends/spark/expressions.py."""

from __future__ import annotations

import polars as pl

from lakehouse.backends.expressions import KEY_HASH, KEY_SHARED, hmac_pads


def hex_digest(frame: pl.LazyFrame, column: str, *, key: bytes | None) -> pl.LazyFrame:
    """``column`` (text) replaced by its lowercase hex SHA-256 (``key`` None) or HMAC-SHA256 under ``key``, built
    from SHA-256 (RFC 2104) as on Spark; null stays null. SHA-256 runs in Rust (polars-hash), many times faster
    than hashlib per row."""
    import polars_hash as plh

    if key is None:
        return frame.with_columns(plh.col(column).chash.sha2_256())
    ipad, opad = hmac_pads(key)
    inner = (pl.lit(ipad, dtype=pl.Binary) + pl.col(column).cast(pl.Binary)).chash.sha2_256().str.decode("hex")
    return frame.with_columns((pl.lit(opad, dtype=pl.Binary) + inner).chash.sha2_256().alias(column))


def key_hash(frame: pl.LazyFrame, keys: list[str], out: str) -> pl.LazyFrame:
    """Add ``out``: Polars' 64-bit hash of the ``keys`` columns (one column's own, or their struct's); nulls hash
    alike."""
    value = pl.col(keys[0]) if len(keys) == 1 else pl.struct(keys)
    return frame.with_columns(value.hash().alias(out))


def one_per_key(frame: pl.LazyFrame, keys: list[str], order_by: list[str], *, last: bool, out: str) -> pl.LazyFrame:
    """Add ``out``: True on one row per ``keys`` (see ``backends.expressions.with_one_per_key_flag``), in place:
    rows whose key hash no other row has are flagged as they are; the others by a window over the keys, the
    lone rows' first key masked to null in a partition of their own."""
    masked = pl.when(pl.col(KEY_SHARED)).then(pl.col(keys[0]))
    pick = masked.is_last_distinct() if last else masked.is_first_distinct()
    shared = key_hash(frame, keys, KEY_HASH).with_columns(pl.col(KEY_HASH).is_duplicated().alias(KEY_SHARED))
    flagged = shared.with_columns((~pl.col(KEY_SHARED) | pick.over([KEY_SHARED, *keys[1:]], order_by=order_by)).alias(out))
    return flagged.drop(KEY_HASH, KEY_SHARED)


# The text a timestamp pattern matched is ``YYYY-MM-DD``, a separator, ``HH:MM:SS``, then the tail: an optional
# fraction and an optional zone, which these simple patterns take from the tail (the whole pattern, with its
# calendar, runs once per value, as a test; its groups are not extracted, which cost four passes of it).
TAIL_START = 19  # characters before the tail (0-based offset)
TAIL_FRACTION = r"^\.([0-9]+)"
TAIL_ZONE = r"([Zz]|[+-][0-9:]+)$"


def parse_timestamps(frame: pl.LazyFrame, columns: dict[str, str], pattern: str) -> pl.LazyFrame:
    """Text columns parsed as ISO 8601 / RFC 3339 UTC timestamps (see ``backends.expressions.with_timestamps``)."""
    def parts(text: pl.Expr, out: str) -> list[pl.Expr]:
        tail = text.str.slice(TAIL_START)  # what follows the date, the separator and the time
        return [tail.str.extract(TAIL_ZONE, 1).str.to_uppercase().alias(f"__zone_{out}"),
                (tail.str.extract(TAIL_FRACTION, 1).fill_null("") + "000000").str.slice(0, 6).alias(f"__frac_{out}")]

    def norm(text: pl.Expr, out: str) -> pl.Expr:
        zone = pl.col(f"__zone_{out}")
        zone = (pl.when(zone.is_null() | (zone == "Z")).then(pl.lit("+00:00"))
                .when(zone.str.len_chars() == 3).then(zone + ":00")
                .when(zone.str.len_chars() == 5).then(zone.str.slice(0, 3) + ":" + zone.str.slice(3, 2))
                .otherwise(zone))
        whole = text.str.slice(0, 10) + "T" + text.str.slice(11, 8) + "." + pl.col(f"__frac_{out}") + zone
        parsed = whole.str.to_datetime("%Y-%m-%dT%H:%M:%S%.6f%:z", time_unit="us", strict=False)
        return pl.when(text.str.contains(pattern)).then(parsed).dt.convert_time_zone("UTC").alias(out)

    # The tail's parts first, in their own step: an expression used several times would be computed each time.
    staged = frame.with_columns(e for src, out in columns.items() for e in parts(pl.col(src), out))
    return (staged.with_columns(norm(pl.col(src), out) for src, out in columns.items())
            .drop([f"__{part}_{out}" for out in columns.values() for part in ("zone", "frac")]))


def json_object(frame: pl.LazyFrame, fields: dict[str, str], out: str) -> pl.LazyFrame:
    """Add ``out``: a JSON object of text columns (``{key: column}``, in that order), written as Python's
    ``json.dumps(..., ensure_ascii=False, separators=(",", ":"))`` writes it; a null is ``null``."""
    if not fields:
        return frame.with_columns(pl.lit("{}").alias(out))
    return frame.with_columns(pl.struct([pl.col(c).alias(k) for k, c in fields.items()]).struct.json_encode().alias(out))
