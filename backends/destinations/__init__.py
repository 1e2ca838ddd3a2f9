"""Where released gold is published: one module per destination (Snowflake)."""
