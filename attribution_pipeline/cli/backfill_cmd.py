"""``attribution backfill --start --end``: submit a backfill of the hourly assets to the Dagster
deployment, which the daemon runs whatever the backfill policy (one run, or ranges of
``ATTRIBUTION_BACKFILL_HOURS_PER_RUN`` hours, D29).

It talks to the Dagster webserver (``ATTRIBUTION_DAGSTER_URL`` or ``--dagster-url``) through
Dagster's public GraphQL API: ``setConcurrencyLimit`` gives the ``attribution_mysql_writes`` pool
the limit ``ATTRIBUTION_MYSQL_WRITE_RUNS``, then ``launchPartitionBackfill`` submits the hours, as
the UI's *Launch backfill* dialog does. The webserver checks the selection against the code the
runs load (the code server) and records the backfill in its instance; the daemon evaluates it.
Submitting straight into ``DAGSTER_HOME``'s instance would need Dagster's private backfill classes
and a copy of the asset graph in this process; ``dagster asset materialize --partition-range``
refuses assets whose policy is multi-run.
"""

import json
import time
import urllib.error
import urllib.request

from attribution_pipeline.assets.hourly import MYSQL_WRITES_POOL
from attribution_pipeline.automation.jobs import PIPELINE_ASSETS
from attribution_pipeline.cli.common import EXIT_OK, fail, window_args
from attribution_pipeline.core.hours import HOUR, hour_key, parse_time, select_hours
from attribution_pipeline.errors import AttributionError
from attribution_pipeline.settings import Settings, mask_url

SET_POOL = """mutation($key: String!, $limit: Int!) { setConcurrencyLimit(concurrencyKey: $key, limit: $limit) }"""
LAUNCH = """mutation($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $params) {
  __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message }
  ... on InvalidSubsetError { message } ... on UnauthorizedError { message } } }"""
STATUS = """query($id: String!) { partitionBackfillOrError(backfillId: $id) {
  __typename ... on PartitionBackfill { status } ... on PythonError { message } } }"""
DONE = ("COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED")


class DagsterApiError(AttributionError):
    """The Dagster webserver could not be reached or refused a request (named in the message)."""


def graphql(url: str, query: str, variables: dict, timeout: float = 60) -> dict:
    """POST one GraphQL request to the webserver at ``url``; its ``data``, or a named error."""
    body = json.dumps({"query": query, "variables": variables}).encode()
    request = urllib.request.Request(f"{url}/graphql", data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - an http(s) URL
            payload = json.loads(response.read())
    except (OSError, ValueError) as exc:
        raise DagsterApiError(f"the Dagster webserver at {mask_url(url)} did not answer: {type(exc).__name__}: "
                              f"{exc}; start it (deploy/README.md) or set ATTRIBUTION_DAGSTER_URL") from None
    if payload.get("errors"):
        raise DagsterApiError(f"the Dagster webserver refused the request: {payload['errors'][0].get('message')}")
    return payload["data"]


def launch_backfill(url: str, hours: list[int], tags: dict[str, str] | None = None) -> str:
    """Submit a backfill of the hourly pipeline's assets over ``hours``; its id."""
    params = {"assetSelection": [{"path": [name]} for name in PIPELINE_ASSETS],
              "partitionNames": [hour_key(h) for h in hours], "fromFailure": False,
              "tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]}
    launched = graphql(url, LAUNCH, {"params": params})["launchPartitionBackfill"]
    if launched["__typename"] != "LaunchBackfillSuccess":
        raise DagsterApiError(f"the backfill was not launched: {launched['__typename']}: {launched.get('message')}")
    return launched["backfillId"]


def set_pool_limit(url: str, limit: int) -> None:
    """Give the MySQL-writes pool ``limit`` slots (runs at once with run-granularity pools, D29)."""
    if not graphql(url, SET_POOL, {"key": MYSQL_WRITES_POOL, "limit": limit})["setConcurrencyLimit"]:
        raise DagsterApiError(f"the webserver did not set the limit of pool {MYSQL_WRITES_POOL}")


def backfill_status(url: str, backfill_id: str) -> str:
    found = graphql(url, STATUS, {"id": backfill_id})["partitionBackfillOrError"]
    if found["__typename"] != "PartitionBackfill":
        raise DagsterApiError(f"backfill {backfill_id}: {found.get('message') or found['__typename']}")
    return found["status"]


def wait_for(url: str, backfill_id: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    status = backfill_status(url, backfill_id)
    while status not in DONE and time.monotonic() < deadline:
        time.sleep(5)
        status = backfill_status(url, backfill_id)
    return status


def cmd_backfill(args, settings: Settings) -> int:
    url = (args.dagster_url or settings.dagster_url).rstrip("/")
    try:
        selection = select_hours(parse_time(args.start), parse_time(args.end), int(time.time()), settings.first_hour)
        set_pool_limit(url, settings.mysql_write_runs)
        backfill_id = launch_backfill(url, list(range(selection.first, selection.last + HOUR, HOUR)))
    except AttributionError as exc:
        return fail(f"{type(exc).__name__}: {exc}")
    hours = (selection.last - selection.first) // HOUR + 1
    per_run = settings.backfill_hours_per_run
    print(f"backfill {backfill_id}: {hour_key(selection.first)} .. {hour_key(selection.last)} ({hours} hours, "
          + (f"runs of at most {per_run} hours" if per_run else "one run") + f"; pool {MYSQL_WRITES_POOL}: "
          f"{settings.mysql_write_runs} writing at once) submitted to {mask_url(url)}")
    if not args.wait:
        print(f"follow it in the UI: {mask_url(url)}/runs/b/{backfill_id}")
        return EXIT_OK
    status = wait_for(url, backfill_id, args.timeout)
    print(f"backfill {backfill_id}: {status}")
    return EXIT_OK if status in ("COMPLETED", "COMPLETED_SUCCESS") else fail(f"backfill {backfill_id} ended {status}")


def add_subcommands(sub) -> None:
    p = sub.add_parser("backfill", help="submit a backfill of whole UTC hours to the Dagster deployment (its daemon runs it)")
    window_args(p, users=False)
    p.add_argument("--dagster-url", help="the Dagster webserver (default $ATTRIBUTION_DAGSTER_URL, else "
                   "http://127.0.0.1:3000)")
    p.add_argument("--wait", action="store_true", help="wait until the backfill ends; exit 1 unless it succeeded")
    p.add_argument("--timeout", type=float, default=86400.0, help="with --wait: give up after this many seconds")
    p.set_defaults(func=cmd_backfill)
