"""HTTP sources: the HubSpot-style CRM API (contacts, companies, deals) and the FX vendor's daily rates.

Both go through one retrying client: a 429 or a 5xx answer, a timeout or a dropped connection is retried,
waiting what the server's ``Retry-After`` asks (seconds or an HTTP date, capped) or else an exponential backoff
with jitter (tenacity); any other 4xx fails at once with the server's message.

**CRM.** The search endpoint (``POST /crm/v3/objects/<object>/search``) is asked for the records whose
last-modified time is in the window, sorted by it, page by page (``after`` cursor); each page is one piece, so
a resumed extract asks for the page after the last one landed. Properties are mapped to the landing columns
(``CRM_PROPERTIES``); timestamps come back ISO 8601 with milliseconds and land as ``YYYY-MM-DDTHH:MM:SSZ``.
The bearer token comes from a secret (``sources.crm.token_secret``).

**FX.** ``GET /v1/rates/<date>`` per day of the window: ``{"base", "date", "published_at", "rates": {code:
rate}}`` with rates as strings (numbers are kept as the digits sent). A day the vendor has no rates for (404)
is reported (a note on the extract, a warning) and never filled in; days already landed are not fetched again.
"""

from __future__ import annotations

import email.utils
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
import pyarrow as pa
from pydantic import SecretStr
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from lakehouse.backends.sources.extract import Piece, SourceError, Window
from lakehouse.contracts.landing import LandingEntity

if TYPE_CHECKING:
    from lakehouse.deployments.settings import CrmSettings, FxSettings

_log = logging.getLogger(__name__)
RETRIED_STATUS = frozenset({429, 500, 502, 503, 504})


class _Transient(Exception):
    def __init__(self, what: str, retry_after: float | None) -> None:
        super().__init__(what)
        self.retry_after = retry_after


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        when = email.utils.parsedate_to_datetime(value)
        return max((when - datetime.now(UTC)).total_seconds(), 0.0) if when else None


class RetryingClient:
    """httpx with retries of 429/5xx/transport errors, honouring ``Retry-After`` (capped at ``max_wait``)."""

    def __init__(self, base_url: str, *, token: SecretStr | None, timeout: float, retries: int, backoff: float,
                 max_wait: float) -> None:
        headers = {"Accept": "application/json", "User-Agent": "lakehouse-extract"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token.get_secret_value()}"
        self.client = httpx.Client(base_url=base_url, headers=headers, timeout=timeout)
        self.retries, self.backoff, self.max_wait = retries, backoff, max_wait
        self.attempts = 0  # requests sent, retries included

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _Transient) and exc.retry_after is not None:
            return min(exc.retry_after, self.max_wait)
        return wait_random_exponential(multiplier=self.backoff, max=self.max_wait)(state)

    def request(self, method: str, path: str, *, ok: tuple[int, ...] = (200,), **kwargs: Any) -> httpx.Response:
        """The answer to ``method path`` whose status is in ``ok``, retrying transient failures."""
        retrying = Retrying(stop=stop_after_attempt(self.retries + 1), wait=self._wait, reraise=True,
                            retry=retry_if_exception_type(_Transient),
                            before_sleep=lambda s: _log.warning("%s %s: %s; retry %d of %d", method, path,
                                                                s.outcome.exception(), s.attempt_number,
                                                                self.retries))
        try:
            for attempt in retrying:
                with attempt:
                    return self._once(method, path, ok, **kwargs)
        except _Transient as exc:
            msg = f"{method} {self.client.base_url.join(path)} still failing after {self.retries + 1} attempts: {exc}"
            raise SourceError(msg) from None
        raise AssertionError  # pragma: no cover - Retrying either returns or raises

    def _once(self, method: str, path: str, ok: tuple[int, ...], **kwargs: Any) -> httpx.Response:
        self.attempts += 1
        try:
            response = self.client.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise _Transient(f"{type(exc).__name__}: {exc}", None) from None
        if response.status_code in ok:
            return response
        if response.status_code in RETRIED_STATUS:
            raise _Transient(f"HTTP {response.status_code}", _retry_after(response.headers.get("Retry-After")))
        msg = (f"expected HTTP {' or '.join(map(str, ok))} from {method} {response.url}, got {response.status_code}: "
               f"{response.text[:300]}")
        raise SourceError(msg)

    def close(self) -> None:
        self.client.close()


# Landing column -> CRM property, per entity; the object each entity is.
CRM_OBJECTS = {"crm.accounts": "companies", "crm.contacts": "contacts", "crm.opportunities": "deals"}
CRM_PROPERTIES: dict[str, dict[str, str]] = {
    "crm.accounts": {"account_id": "hs_object_id", "account_name": "name", "domain": "domain",
                     "industry": "industry", "owner_name": "hubspot_owner_name", "country": "country",
                     "updated_at": "hs_lastmodifieddate"},
    "crm.contacts": {"contact_id": "hs_object_id", "account_id": "associatedcompanyid", "first_name": "firstname",
                     "last_name": "lastname", "email": "email", "phone": "phone",
                     "lifecycle_stage": "lifecyclestage", "updated_at": "lastmodifieddate"},
    "crm.opportunities": {"opportunity_id": "hs_object_id", "account_id": "associatedcompanyid",
                          "opportunity_name": "dealname", "stage": "dealstage", "amount": "amount",
                          "currency": "deal_currency_code", "close_date": "closedate",
                          "owner_name": "hubspot_owner_name", "updated_at": "hs_lastmodifieddate"},
}


def _millis(moment: datetime) -> str:
    return str(int(moment.timestamp() * 1000))


def _landing_timestamp(value: str | None) -> str | None:
    """A CRM timestamp (ISO 8601, milliseconds, ``Z``) as the landing format; text that does not parse is kept
    as it came, for silver to quarantine."""
    if not value:
        return value
    try:
        moment = datetime.fromisoformat(value).astimezone(UTC)
    except ValueError:
        return value
    # the fraction without trailing zeros, as typed Parquet timestamps read (backends/landing.py)
    fraction = f".{moment.microsecond:06d}".rstrip("0") if moment.microsecond else ""
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + fraction + "Z"


def _landing_date(value: str | None) -> str | None:
    """A CRM date property (``YYYY-MM-DD`` or midnight ISO 8601) as ``YYYY-MM-DD``."""
    if value and len(value) > 10 and value[10] == "T" and value[11:19] == "00:00:00":
        return value[:10]
    return value


@dataclass
class CrmSource:
    entity: LandingEntity
    settings: CrmSettings
    token: SecretStr
    windowed = True

    @property
    def object(self) -> str:
        return CRM_OBJECTS[self.entity.name]

    def describe(self) -> str:
        return f"CRM API {self.settings.base_url} object {self.object}"

    def _body(self, window: Window, after: str | None, limit: int) -> dict[str, Any]:
        props = CRM_PROPERTIES[self.entity.name]
        modified = props["updated_at"]
        filters = [{"propertyName": modified, "operator": "LT", "value": _millis(window.hi)}]
        if window.lo is not None:
            filters.insert(0, {"propertyName": modified, "operator": "GTE", "value": _millis(window.lo)})
        body: dict[str, Any] = {"filterGroups": [{"filters": filters}], "properties": list(props.values()),
                                "sorts": [{"propertyName": modified, "direction": "ASCENDING"}], "limit": limit}
        if after:
            body["after"] = after
        return body

    def _client(self) -> RetryingClient:
        s = self.settings
        return RetryingClient(s.base_url, token=self.token, timeout=s.timeout_seconds, retries=s.retries,
                              backoff=s.backoff_seconds, max_wait=s.max_wait_seconds)

    def pieces(self, window: Window, cursor: str | None) -> Iterator[Piece]:
        props = CRM_PROPERTIES[self.entity.name]
        if cursor and cursor.startswith("end:"):  # the window's last page was landed
            return
        client = self._client()
        path = f"crm/v3/objects/{self.object}/search"
        try:
            after = cursor
            while True:
                page = client.request("POST", path, json=self._body(window, after, self.settings.page_size)).json()
                records = page.get("results")
                if not isinstance(records, list):
                    msg = f"expected a 'results' list from POST {path}, got keys {sorted(page)}"
                    raise SourceError(msg)
                rows = [self._row(r, props) for r in records]
                after = ((page.get("paging") or {}).get("next") or {}).get("after")
                schema = pa.schema([(c, pa.string()) for c in self.entity.column_names])
                yield Piece(cursor=str(after) if after else f"end:{after or cursor or ''}",
                            rows=pa.Table.from_pylist(rows, schema=schema))
                if not after:
                    return
        finally:
            client.close()

    def _row(self, record: dict[str, Any], props: dict[str, str]) -> dict[str, str | None]:
        values = {**(record.get("properties") or {}), "hs_object_id": (record.get("properties") or {}).get(
            "hs_object_id", record.get("id"))}
        row = {}
        for column in self.entity.columns:
            value = values.get(props[column.name])
            value = None if value in (None, "") else str(value)
            if column.type == "timestamp":
                value = _landing_timestamp(value)
            elif column.type == "date":
                value = _landing_date(value)
            row[column.name] = value
        return row

    def pending(self, window: Window, cursor: str | None) -> int | None:
        client = self._client()
        try:
            page = client.request("POST", f"crm/v3/objects/{self.object}/search",
                                  json=self._body(window, None, 1)).json()
            return int(page.get("total", 0))
        finally:
            client.close()


@dataclass
class FxSource:
    entity: LandingEntity
    settings: FxSettings
    windowed = True

    def describe(self) -> str:
        return f"FX vendor {self.settings.base_url}"

    def _days(self, window: Window, cursor: str | None) -> list[date]:
        last = (window.hi - timedelta(microseconds=1)).date()
        first = window.lo.date() if window.lo is not None else last
        days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
        return [d for d in days if cursor is None or d > date.fromisoformat(cursor)]

    def pieces(self, window: Window, cursor: str | None) -> Iterator[Piece]:
        s = self.settings
        client = RetryingClient(s.base_url, token=None, timeout=s.timeout_seconds, retries=s.retries,
                                backoff=s.backoff_seconds, max_wait=s.max_wait_seconds)
        schema = pa.schema([(c, pa.string()) for c in self.entity.column_names])
        try:
            for day in self._days(window, cursor):
                response = client.request("GET", f"v1/rates/{day.isoformat()}", ok=(200, 404))
                if response.status_code == 404:
                    kind = "not a business day" if day.weekday() >= 5 else "a business day"
                    _log.warning("FX vendor has no rates for %s (%s); nothing is filled in for it", day, kind)
                    yield Piece(cursor=day.isoformat(), note=f"no rates for {day} ({kind})")
                    continue
                yield Piece(cursor=day.isoformat(), rows=pa.Table.from_pylist(self._rows(response, day), schema=schema))
        finally:
            client.close()

    def _rows(self, response: httpx.Response, day: date) -> list[dict[str, str]]:
        doc = json.loads(response.text, parse_float=str, parse_int=str)
        try:
            base, rates, published = doc["base"], doc["rates"], doc["published_at"]
            rate_date = doc.get("date", day.isoformat())
        except (KeyError, TypeError):
            msg = f"expected base, date, published_at and rates from the FX vendor for {day}, got {str(doc)[:200]}"
            raise SourceError(msg) from None
        return [{"rate_date": rate_date, "base_currency": base, "quote_currency": code,
                 "rate": None if rate is None else str(rate), "published_at": published}
                for code, rate in rates.items()]

    def pending(self, window: Window, cursor: str | None) -> int | None:
        return len(self._days(window, cursor))
