"""Browser smoke test of the Dagster UI, the way ops use it (issue 20): a real headless Chromium
(Debian's ``chromium``, driven by Selenium through Debian's ``chromedriver``) opens the webserver of
the production layout this test starts (D29, as ``test_deployment.py`` does: a PostgreSQL-backed
instance on a throwaway PostgreSQL database, ``dagster code-server start``, ``dagster-webserver``
and ``dagster-daemon`` as separate processes, on a seeded throwaway MariaDB database), and

* finds the attribution assets in the catalog and a failing check among an asset's checks;
* opens that check (``orphan_conversions``, red on the two hours whose conversions lost their
  click) and sees both hours named on the page;
* launches a backfill of three hours by clicking through the catalog's *Materialize selected*
  dialog (the documented way, docs/operations.md "Running a backfill");

then finds the backfill's runs through GraphQL and waits for them to succeed. On failure the
page's screenshot and source are saved under the test's ``tmp_path``.
"""

import os
import re
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import pytest
from selenium import webdriver
from selenium.common.exceptions import ElementClickInterceptedException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

import scenarios
from attribution_pipeline.assets.hourly import RANGE_END_TAG, RANGE_START_TAG
from attribution_pipeline.cli.backfill_cmd import graphql
from attribution_pipeline.core.hours import hour_key
from attribution_pipeline.storage import database
from pipeline import HOUR, run
from test_backfill_ui import BACKFILL, RUNS, wait_for
from test_deployment import deployment, postgres_url  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("ATTRIBUTION_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("ATTRIBUTION_TEST_CHROMEDRIVER", "/usr/bin/chromedriver")
HOW_TO_GET_CHROMIUM = ("This test drives Debian's Chromium: `apt-get install -y chromium chromium-driver` "
                       "(`bash .ci/run` installs them), or set ATTRIBUTION_TEST_CHROMIUM and "
                       "ATTRIBUTION_TEST_CHROMEDRIVER to a Chromium binary and its matching chromedriver.")
T = scenarios.T
FIRST, LAST = T, T + 2 * HOUR  # the three hours of the spec §4.6 conversions the test runs and backfills
ORPHAN_HOURS = [hour_key(T + HOUR), hour_key(T + 2 * HOUR)]
#: The hourly assets of the `attribution` group (the seven of the pipeline and the Parquet exports).
HOURLY_ASSETS = ["source_changes", "attribution_models", "conversions", "journeys", "visitor_journeys", "credits",
                 "snapshots", "attribution_writeback", "attribution_exports"]
WAIT = 90  # seconds for any one thing to appear in the page (a loaded 2-core machine)
DONE = ("COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED")


def seed(url: str) -> None:
    """The spec §4.6 data plus one orphan conversion (its click is not in 202_clicks, D16) in each of
    the last two hours: the `orphan_conversions` check fails on exactly those hours."""
    with database.make_engine(url).begin() as conn:
        scenarios.load_section_4_6(conn, stored_journeys=False)
        scenarios.add_campaign(conn, 40, 1, 1)
        scenarios.add_conversion(conn, 62, 998, 40, 1, "3", T + 100, T + HOUR + 100)
        scenarios.add_conversion(conn, 63, 999, 40, 1, "3", T + 100, T + 2 * HOUR + 200)


@contextmanager
def chromium(tmp_path: Path):
    """Headless Chromium; on failure inside the block, its screenshot and page source in tmp_path."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        pytest.fail(f"{', '.join(missing)} not found or not executable. {HOW_TO_GET_CHROMIUM}")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1600,1200", f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log")),
                              options=options)
    driver.set_page_load_timeout(WAIT)
    try:
        yield driver
    except BaseException:
        try:
            driver.save_screenshot(str(tmp_path / "failure.png"))
            (tmp_path / "failure.html").write_text(driver.page_source)
            print(f"UI failure: screenshot and page source in {tmp_path} (url {driver.current_url})")
        except WebDriverException as exc:
            print(f"could not capture the page: {exc}")
        raise
    finally:
        driver.quit()


class Ui:
    """Text-based lookups (the Dagster UI has no test ids), each behind an explicit wait."""

    def __init__(self, driver, base: str):
        self.driver, self.base = driver, base
        self.wait = WebDriverWait(driver, WAIT, poll_frequency=0.5)

    def open(self, path: str) -> None:
        self.driver.get(self.base + path)

    def find(self, xpath: str):
        return self.wait.until(EC.visibility_of_element_located((By.XPATH, xpath)), message=xpath)

    def click(self, xpath: str) -> None:
        self.press(self.wait.until(EC.element_to_be_clickable((By.XPATH, xpath)), message=xpath))

    def press(self, element) -> None:
        """Click, closing Dagster's community pop-up first (it covers the page some seconds after a
        first load), and once more if it opened in between."""
        self.dismiss_popup()
        try:
            element.click()
        except ElementClickInterceptedException:
            self.dismiss_popup()
            element.click()

    def dismiss_popup(self) -> None:
        for skip in self.driver.find_elements(By.XPATH, "//div[contains(@class,'dialog')]//button[normalize-space()='Skip']"):
            if skip.is_displayed():
                skip.click()
                self.wait.until(EC.invisibility_of_element(skip))

    def text_appears(self, text: str, within: str = "//body") -> None:
        self.wait.until(lambda d: text in d.find_element(By.XPATH, within).text, message=f"{text!r} in {within}")

    def body(self) -> str:
        return self.driver.find_element(By.TAG_NAME, "body").text


def find_assets_and_failing_check(ui: Ui) -> None:
    """The catalog lists the hourly assets; conversions' Checks tab shows orphan_conversions as
    failed; opening it shows the latest evaluation, naming the failing hours."""
    ui.open("/assets")
    ui.find("//a[normalize-space()='attribution']")  # the group column of the catalog
    for asset in HOURLY_ASSETS:
        ui.find(f"//a[@href='/assets/{asset}']")
    ui.click("//a[@href='/assets/conversions']")
    ui.click("//a[normalize-space()='Checks'] | //button[normalize-space()='Checks']")
    for check in ("orphan_conversions", "zero_or_null_payouts", "frame_schema"):
        ui.find(f"//*[normalize-space()='{check}']")
    # the list's entry: the check's name with its status below it
    ui.find("//*[@title='orphan_conversions']/following-sibling::*[normalize-space()='Failed']")
    ui.click("//*[normalize-space()='orphan_conversions']")
    ui.wait.until(lambda d: "checkDetail=orphan_conversions" in d.current_url, message="the check's page")
    ui.text_appears(f"2 orphan conversion(s) in 2 hour(s) ({', '.join(ORPHAN_HOURS)})")
    page = ui.body()
    assert "Failed" in page[page.index("Latest execution"):], page
    assert re.search(rf"first_failing_hour\s+{re.escape(ORPHAN_HOURS[0])}", page), page


def launch_backfill_in_dialog(ui: Ui) -> str:
    """Select the attribution group's assets in the catalog, *Materialize selected*, type the
    three hours into the dialog's partition field, *Launch backfill*: returns the backfill's id
    from the UI's confirmation."""
    ui.open("/assets")
    row = "//a[normalize-space()='attribution']/ancestor::div[contains(@class,'rowGrid')][1]"
    ui.find(row)
    rows = ui.driver.find_elements(By.XPATH, row)
    assert len(rows) == len(HOURLY_ASSETS), [r.text for r in rows]
    for checkbox in ui.driver.find_elements(By.XPATH, row + "//input[@type='checkbox']/.."):
        ui.press(checkbox)
    ui.click(f"//button[contains(normalize-space(),'Materialize selected ({len(HOURLY_ASSETS)})')]")
    dialog = "//div[contains(@class,'bp5-dialog')][.//*[contains(normalize-space(),'Launch runs to materialize')]]"
    ui.find(dialog)
    # the dialog shows the last 90 days by default (the partitions start in 2023); the seeded hours are older
    ui.click(dialog + "//*[normalize-space()='Show all partitions']")
    field = ui.find(dialog + "//input[contains(@placeholder,'...')]")
    field.click()
    field.send_keys(f"[{hour_key(FIRST)}...{hour_key(LAST)}]", Keys.ENTER)
    ui.text_appears("3 partitions", dialog)
    ui.click(dialog + "//button[normalize-space()='Launch backfill']")
    toast = ui.find("//*[starts-with(normalize-space(),'Created backfill')]")
    backfill_id = re.search(r"Created backfill (\S+)", toast.text)
    assert backfill_id, toast.text
    return backfill_id.group(1)


def test_ops_find_a_failing_check_and_launch_a_backfill_in_a_real_browser(mysql_url, postgres_url, tmp_path,
                                                                          monkeypatch):
    seed(mysql_url)
    with deployment(tmp_path, postgres_url, mysql_url, {}) as deploy:
        # the job over the three hours, recorded in the deployment's PostgreSQL instance
        monkeypatch.setenv("DAGSTER_POSTGRES_URL", postgres_url)
        with dg.DagsterInstance.from_config(str(deploy.home)) as instance:
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            result, report = run(mysql_url, FIRST, LAST, instance=instance)
        assert report["outcome"] == 0
        with chromium(tmp_path) as driver:
            ui = Ui(driver, deploy.url)
            find_assets_and_failing_check(ui)
            backfill_id = launch_backfill_in_dialog(ui)

        def finished():
            deploy.check_alive()
            backfill = graphql(deploy.url, BACKFILL, {"id": backfill_id})["partitionBackfillOrError"]
            assert backfill["__typename"] == "PartitionBackfill", backfill
            return backfill["status"] if backfill["status"] in DONE else None

        status = wait_for(finished, 300, "the UI's backfill to finish", interval=2)
        runs = graphql(deploy.url, RUNS, {"id": backfill_id})["runsOrError"]["results"]
    assert status in ("COMPLETED", "COMPLETED_SUCCESS"), (status, runs)
    assert runs and all(r["status"] == "SUCCESS" for r in runs), runs
    # ranges of ATTRIBUTION_BACKFILL_HOURS_PER_RUN (24) hours: the three hours are one run carrying the range
    assert len(runs) == 1, runs
    tags = {t["key"]: t["value"] for t in runs[0]["tags"]}
    assert (tags[RANGE_START_TAG], tags[RANGE_END_TAG]) == (hour_key(FIRST), hour_key(LAST)), tags
