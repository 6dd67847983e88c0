"""tickray.feeds: market data in (Parquet replay, exchange files, synthetic data)."""
