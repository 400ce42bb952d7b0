"""Readers of the raw dataset formats; each yields polars frames with exactly its schema's columns.

- `criteo`: Kaggle Criteo TSV, or CSV with header (DeepCTR sample).
- `avazu`: Avazu CSV (with or without header); `hour` expanded into hour of day / weekday / weekend.
- `movielens`: MovieLens 100K / 1M ratings joined with user and movie features; CTR labels.
- `frappe`: Frappe libFM files.
- `table`: any CSV or Parquet table described by a `Schema`.
"""
