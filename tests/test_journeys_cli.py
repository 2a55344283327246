"""``attribution journeys backfill`` and ``purge`` (D28) on MariaDB: the backfill stores the
journeys PHP's rules give (the independent oracle's, on generated data with 26-touch journeys and
duplicated click ids), a rerun stores the same rows, and the purge removes exactly the journeys of
the conversions whose effective multi-touch setting is off (Q15's scenario)."""

from sqlalchemy import func, select, text

from attribution_pipeline.cli import main
from attribution_pipeline.demo.generator import GeneratorConfig, generate, load
from attribution_pipeline.storage import database, tables
from oracle import php_engine
from scenarios import DAY, T, add_campaign, add_click, add_conversion, add_setting, add_stored_journey, add_user

START = 1735689600  # 2025-01-01 00:00 UTC
HOURS = 12
HOUR = 3600
_touch = tables.conversion_touchpoints


def stored(engine) -> dict[int, list[tuple[int, int, int]]]:
    """conv_id -> [(position, click_id, click_time)] of 202_conversion_touchpoints."""
    out: dict[int, list] = {}
    with engine.connect() as conn:
        rows = conn.execute(select(_touch.c.conv_id, _touch.c.position, _touch.c.click_id, _touch.c.click_time)
                            .order_by(_touch.c.conv_id, _touch.c.position)).all()
    for conv_id, position, click_id, click_time in rows:
        out.setdefault(int(conv_id), []).append((int(position), int(click_id), int(click_time)))
    return out


def oracle_journeys(engine, hours) -> dict[int, list[tuple[int, int, int]]]:
    """What PHP's persistJourney stores for each multi-touch conversion of ``hours`` (D2, D13, D15)."""
    want = {}
    with engine.connect() as conn:
        source = php_engine._Source(conn)
        users = [int(u) for u in conn.execute(text("SELECT user_id FROM `202_users` WHERE user_deleted = 0")).scalars()]
        for user_id in users:
            for conv in source.conversions(user_id, hours):
                if source.multi_touch_enabled(user_id, conv.campaign_id):
                    journey = source.journey_from_clicks(conv, 30, 25)
                    want[conv.conv_id] = [(i, c, t) for i, (c, t) in enumerate(journey)]
    return want


def backfill(url, *extra) -> int:
    return main(["journeys", "backfill", "--db-url", url, "--start", str(START), "--end", str(START + HOURS * HOUR),
                 *extra])


def test_backfill_stores_the_oracle_journeys(mysql_url, capsys):
    engine = database.make_engine(mysql_url)
    load(engine, generate(GeneratorConfig(seed=21, start=START, hours=HOURS, scale=0.3, users=8)))
    assert backfill(mysql_url) == 0
    longest = max(stored(engine).items(), key=lambda item: (len(item[1]), item[0]))[0]
    with engine.begin() as conn:  # every click of the longest journey's campaign stored twice (D15)
        conn.execute(text("INSERT INTO `202_clicks` SELECT * FROM `202_clicks` WHERE aff_campaign_id = "
                          "(SELECT campaign_id FROM `202_conversion_logs` WHERE conv_id = :c)"), {"c": longest})
    capsys.readouterr()
    assert backfill(mysql_url, "--batch-size", "70") == 0
    out = capsys.readouterr().out
    assert "batch 1/" in out and "journeys written:" in out
    got = stored(engine)
    want = oracle_journeys(engine, [START + i * HOUR for i in range(HOURS)])
    assert got == want
    assert any(len(j) == 26 for j in got.values())  # the converting click beyond the newest 25 (Q3)
    with engine.connect() as conn:
        duplicated = set(conn.execute(select(tables.clicks.c.click_id).group_by(tables.clicks.c.click_id)
                                      .having(func.count() > 1)).scalars())
    assert duplicated & {c for j in got.values() for _, c, _ in j}  # duplicated click ids among the touches (D15)


def test_backfill_rerun_is_idempotent_and_leaves_the_rest_alone(mysql_url, capsys):
    engine = database.make_engine(mysql_url)
    with engine.begin() as conn:
        add_user(conn, 1)
        add_user(conn, 2)
        add_campaign(conn, 10, 1, 100)
        add_campaign(conn, 11, 1, 100)
        add_campaign(conn, 20, 2, 200)
        add_setting(conn, 1, "campaign", 11, False)  # multi-touch off on campaign 11 only
        for i in range(30):  # 30 clicks on campaign 10 within the lookback: the newest 25 are kept
            add_click(conn, 1000 + i, 1, 10, T - 2 * DAY + i * 600)
            add_click(conn, 2000 + i, 1, 11, T - 2 * DAY + i * 600)
            add_click(conn, 3000 + i, 2, 20, T - 2 * DAY + i * 600)
        add_conversion(conn, 1, 1000, 10, 1, "1.00", T - 2 * DAY, T + 60)  # 26 touches: its click is the oldest
        add_conversion(conn, 2, 2005, 11, 1, "1.00", T - 2 * DAY + 3000, T + 120)  # multi-touch off: left alone
        add_conversion(conn, 3, 3010, 20, 2, "1.00", T - 2 * DAY + 6000, T + 180)
        add_conversion(conn, 4, 1029, 10, 1, "1.00", T - 2 * DAY + 29 * 600, T + 2 * HOUR)  # outside the window
        add_stored_journey(conn, 2, [(2005, T - 2 * DAY + 3000)])
        add_stored_journey(conn, 4, [(1029, T - 2 * DAY + 29 * 600)])
        add_stored_journey(conn, 3, [(3010, 1), (3010, 1), (3011, 2)])  # a bad journey: replaced
    args = ["journeys", "backfill", "--db-url", mysql_url, "--start", str(T), "--end", str(T + HOUR)]
    assert main(args) == 0
    first = stored(engine)
    assert [c for _, c, _ in first[1]] == [1000, *range(1005, 1030)]  # 26 touches, positions 0..25
    assert [c for _, c, _ in first[3]] == list(range(3005, 3030))  # the newest 25, its own click among them
    assert first[2] == [(0, 2005, T - 2 * DAY + 3000)] and first[4] == [(0, 1029, T - 2 * DAY + 29 * 600)]
    with engine.connect() as conn:
        count = conn.execute(select(func.count()).select_from(_touch)).scalar()
    assert main(args + ["--user", "1", "2", "--batch-size", "1"]) == 0
    assert stored(engine) == first
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(_touch)).scalar() == count
    assert main(args + ["--user", "9"]) == 1  # an unknown user is an error before anything runs
    assert "UnknownUserError" in capsys.readouterr().err


def test_purge_removes_only_the_switched_off_campaign(mysql_url, capsys):
    """Q15: multi-touch off for one campaign only; PHP's purge would also have deleted every
    journey of the user for the landing-page row, kept the soft-deleted conversion's, counted
    conversions."""
    engine = database.make_engine(mysql_url)
    with engine.begin() as conn:
        add_user(conn, 1)
        add_user(conn, 2)
        add_campaign(conn, 10, 1, 100)
        add_campaign(conn, 11, 1, 100)
        add_campaign(conn, 20, 2, 200)
        add_setting(conn, 1, "campaign", 11, False)
        add_setting(conn, 1, "landing_page", 5, False)  # a scope the switch does not read
        add_setting(conn, 2, "advertiser", 200, False)
        add_setting(conn, 2, "campaign", 20, True)  # more specific and on: wins
        for conv_id, campaign, user, deleted in [(1, 10, 1, 0), (2, 11, 1, 0), (3, 11, 1, 1), (4, 20, 2, 0), (5, 10, 1, 0)]:
            add_click(conn, 100 + conv_id, user, campaign, T)
            add_conversion(conn, conv_id, 100 + conv_id, campaign, user, "1.00", T, T + 60, deleted=deleted)
            add_stored_journey(conn, conv_id, [(90 + conv_id, T - 60), (100 + conv_id, T)])
    assert main(["journeys", "purge", "--db-url", mysql_url, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "user 1: multi-touch off for 2 conversion(s); would purge 2 stored journey(s), 4 row(s)" in out
    assert "user 2: multi-touch off for 0 conversion(s)" in out
    assert set(stored(engine)) == {1, 2, 3, 4, 5}
    assert main(["journeys", "purge", "--db-url", mysql_url, "--user", "1"]) == 0
    assert "total: purged 2 journey(s), 4 row(s)" in capsys.readouterr().out
    assert set(stored(engine)) == {1, 4, 5}  # campaign 11's, the soft-deleted one included
    assert main(["journeys", "purge", "--db-url", mysql_url]) == 0
    assert "total: purged 0 journey(s), 0 row(s)" in capsys.readouterr().out
