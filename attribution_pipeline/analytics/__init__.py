"""Analytics: DuckDB views over the exports (:mod:`.duckdb_views`) and the model comparison
(:mod:`.comparison`, rendered by :mod:`.render`)."""
