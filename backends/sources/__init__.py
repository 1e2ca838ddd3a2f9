"""Source connectors: each entity is read from landing files (the default) or pulled from its system.

``sources.entities`` in the settings chooses per entity (``"snowflake.orders" = "connector"``); the connector of
an entity is the one of its source system: Snowflake, Redshift, the CRM API, the FX vendor or Kafka. A connector
lands what it pulls as landing files (``backends/sources/extract.py``), so bronze is written by one reader.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lakehouse.contracts.landing import LandingEntity

if TYPE_CHECKING:
    from lakehouse.backends.sources.extract import Connector
    from lakehouse.deployments.settings import Settings


def connector_for(entity: LandingEntity, settings: Settings) -> Connector:
    """The connector of ``entity``'s source system, set up from ``settings.sources`` (secrets resolved here)."""
    sources = settings.sources
    rows = sources.batch_rows
    if entity.source == "snowflake":
        from lakehouse.backends.sources.sql import SnowflakeSource

        return SnowflakeSource(entity, sources.snowflake, batch_rows=rows)
    if entity.source == "redshift":
        from lakehouse.backends.sources.sql import RedshiftSource

        return RedshiftSource(entity, sources.redshift, batch_rows=rows)
    if entity.source == "crm":
        from lakehouse.backends.sources.http_api import CrmSource
        from lakehouse.deployments.secrets import resolve_secret

        crm = sources.crm.require()
        return CrmSource(entity, crm, resolve_secret(crm.token_secret, what="sources.crm.token_secret"))
    if entity.source == "fx":
        from lakehouse.backends.sources.http_api import FxSource

        return FxSource(entity, sources.fx.require())
    if entity.source == "kafka":
        from lakehouse.backends.sources.kafka import KafkaSource

        return KafkaSource(entity, sources.kafka.require())
    msg = f"expected an entity of snowflake, redshift, crm, fx or kafka, got {entity.name!r}"
    raise KeyError(msg)
