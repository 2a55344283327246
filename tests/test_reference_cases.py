"""Every reference number of spec §3.8 and spec §6 that applies, through the whole pipeline
(Dagster job, MariaDB), compared with what the PHP engine stores (tests/scenarios.py)."""

import pytest

import scenarios
from attribution_pipeline.storage import database
from oracle import php_engine
from pipeline import HOUR, run


def _rows(url):
    with database.make_engine(url).connect() as conn:
        return php_engine.stored_rows(conn)


@pytest.mark.parametrize("case", scenarios.REFERENCE_CASES + scenarios.PHPUNIT_CASES, ids=lambda c: c.name)
def test_reference_case(mysql_url, case):
    with database.make_engine(mysql_url).begin() as conn:
        hour = scenarios.load_case(conn, case)
    _, report = run(mysql_url, hour)
    assert report["outcome"] == 0
    want_snapshots, want_touchpoints = scenarios.case_expected(case)
    got = _rows(mysql_url)
    assert sorted(got.snapshots) == sorted(want_snapshots)
    assert sorted(got.touchpoints) == sorted(want_touchpoints)


@pytest.mark.parametrize("loader", [scenarios.load_phpunit_last_touch, scenarios.load_phpunit_runner],
                         ids=["phpunit_1_last_touch_per_hour", "phpunit_6_runner"])
def test_phpunit_multi_conversion_cases(mysql_url, loader):
    with database.make_engine(mysql_url).begin() as conn:
        loaded = loader(conn)
    run(mysql_url, loaded.hours[0], loaded.hours[-1])
    got = _rows(mysql_url)
    assert sorted(got.snapshots) == sorted(loaded.snapshots)
    assert sorted(got.touchpoints) == sorted(loaded.touchpoints)
