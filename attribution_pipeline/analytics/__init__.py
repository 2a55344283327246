"""Analytics: DuckDB views over the exports (:mod:`.duckdb_views`, with the views by click hour of
:mod:`.touch_views`), the model comparison (:mod:`.comparison`, rendered by :mod:`.render`) and
its touch-hour axis against spend (:mod:`.accrual`, rendered by :mod:`.accrual_render`)."""
