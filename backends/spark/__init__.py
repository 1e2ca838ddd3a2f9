"""The cluster engine: PySpark (classic or Spark Connect) and Delta; Sail in tests. Same file names as backends/polars/
for the same role."""
