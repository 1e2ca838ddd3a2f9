"""The laptop engine: Polars lazy frames and delta-rs (no JVM). Same file names as backends/spark/ for the same role."""
