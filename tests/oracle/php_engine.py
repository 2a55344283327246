"""Oracle: what Prosper202's PHP attribution engine stores, computed row by row.

This is a deliberately simple, scalar port of the PHP code paths described in
``docs/php-engine.md`` ("the spec", cited as spec §N), with the project's decisions
(``docs/decisions.md``, D1-D20) applied. Each place where a decision changes PHP behaviour says so in
a comment. It exists only to be compared with the vectorised pipeline, so it favours being
obviously right over being fast: explicit loops, one SQL query per thing it needs, every float
sum a left-to-right ``+=`` (spec §3.7: never ``math.fsum``/NumPy/Polars reductions).

It is independent of ``attribution_pipeline``: plain SQLAlchemy ``text()`` with bound
parameters, works on MariaDB/MySQL and SQLite (backticks quote identifiers on both).

Public API
----------
``expected_rows(conn, hours, *, users=None, models=None, lookback_days=30, touch_cap=25,
journey_source="clicks") -> Expected``
    What the PHP engine would store for ``hours`` when each model runs alone (D1).
``stored_rows(conn, hours=None) -> Stored``
    What is stored in ``202_attribution_snapshots`` / ``202_attribution_touchpoints``.
``diff(expected, stored) -> str``
    Multiset comparison; ``""`` when equal.

Row formats (DECIMALs as strings with the column's scale)::

    snapshot   = (model_id, user_id, date_hour, attributed_clicks, attributed_conversions,
                  revenue "35.5000", cost "1.5000")
    touchpoint = (model_id, user_id, date_hour, conv_id, position, click_id,
                  credit "0.40000", weight "0.40000")
"""

import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal

from sqlalchemy import bindparam, text

HOUR = 3600
DAY = 86400
MONEY = Decimal("0.0001")  # attributed_revenue / attributed_cost: DECIMAL(12,4)
CREDIT = Decimal("0.00001")  # credit / weight: DECIMAL(10,5)

#: ModelType enum values of the PHP engine (spec §3.0/§3.5)...
PHP_MODEL_TYPES = ("last_touch", "time_decay", "position_based", "algorithmic", "assisted")
#: ...plus the two v3-only types this project computes (D7).
MODEL_TYPES = PHP_MODEL_TYPES + ("first_touch", "linear")
#: ModelType::requiresWeighting (spec §3.6).
REQUIRES_WEIGHTING = ("time_decay", "position_based", "algorithmic")

DEFAULT_HALF_LIFE_HOURS = 48  # TimeDecayStrategy L14
DEFAULT_POSITION_WEIGHT = 0.4  # PositionBasedStrategy: first_touch_weight / last_touch_weight

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)


# ============================================================================================
# Results
# ============================================================================================


@dataclass
class Expected:
    snapshots: list = field(default_factory=list)
    touchpoints: list = field(default_factory=list)
    #: model_id -> validation message of every active, selected model that was skipped (D6).
    skipped_models: dict = field(default_factory=dict)


@dataclass
class Stored:
    snapshots: list = field(default_factory=list)
    touchpoints: list = field(default_factory=list)


@dataclass
class Conversion:
    """One row of the engine's conversion batch query (spec §2.1), hydrated as PHP does."""

    conv_id: int
    click_id: int
    campaign_id: int
    user_id: int
    conv_time: int
    click_time: int  # 202_conversion_logs.click_time
    payout: float  # 202_conversion_logs.click_payout
    cpc: float  # 202_clicks.click_cpc of the converting click


# ============================================================================================
# PHP scalar semantics
# ============================================================================================

_WS = "[ \t\n\r\v\f]*"
_NUMERIC_STRING = re.compile(rf"{_WS}[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?{_WS}\Z")
_INTEGER_STRING = re.compile(rf"{_WS}[+-]?[0-9]+{_WS}\Z")
_LEADING_NUMBER = re.compile(rf"{_WS}[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def php_is_numeric(value) -> bool:
    """PHP 8 ``is_numeric``: ints, floats and numeric strings (surrounding whitespace allowed)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return True
    if isinstance(value, str):
        return _NUMERIC_STRING.match(value) is not None
    return False


def _float_to_int(value: float, saturate: bool) -> int:
    """PHP's double -> int: 0 for NaN/INF, truncation toward zero; out-of-range values saturate
    (string conversions, ``zend_dval_to_lval_cap``) or wrap modulo 2**64 (``zend_dval_to_lval``)."""
    if not math.isfinite(value):
        return 0
    truncated = int(value)
    if INT64_MIN <= truncated <= INT64_MAX:
        return truncated
    if saturate:
        return INT64_MAX if truncated > 0 else INT64_MIN
    wrapped = truncated % 2**64
    return wrapped - 2**64 if wrapped > INT64_MAX else wrapped


def php_int(value) -> int:
    """PHP ``(int)`` cast: ``"12.9"`` -> 12, ``"1e3"`` -> 1000, ``" 12"`` -> 12 (spec §3.2)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return _float_to_int(value, saturate=False)
    if isinstance(value, str):
        if _INTEGER_STRING.match(value):
            return max(INT64_MIN, min(INT64_MAX, int(value)))
        prefix = _LEADING_NUMBER.match(value)
        if prefix is None:
            return 0
        number = prefix.group(0)
        if _INTEGER_STRING.match(number):
            return max(INT64_MIN, min(INT64_MAX, int(number)))
        return _float_to_int(float(number), saturate=True)
    if value is None:
        return 0
    return 1 if value else 0  # arrays


def php_float(value) -> float:
    """PHP ``(float)`` cast (numeric strings parse correctly rounded, like Python)."""
    if isinstance(value, (bool, int, float)):
        return float(value)
    if isinstance(value, str):
        prefix = _LEADING_NUMBER.match(value)
        return float(prefix.group(0)) if prefix else 0.0
    if value is None:
        return 0.0
    return 1.0 if value else 0.0  # arrays


class WeightingConfigError(Exception):
    pass


def _reject_constant(name):
    raise ValueError(f"{name} is not JSON")  # PHP's json_decode rejects NaN/Infinity


def _parse_json_int(literal: str):
    number = int(literal)
    return number if INT64_MIN <= number <= INT64_MAX else float(literal)  # PHP: big ints -> float


def decode_weighting_config(raw) -> dict:
    """``ModelDefinition`` config decoding (spec §3.6, L88-104).

    NULL or '' -> {}; otherwise strict JSON; a JSON object or list becomes a PHP array (lists are
    keyed 0..n-1); anything else is "Invalid weighting configuration payload.".
    """
    if raw is None or raw == "":
        return {}
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8")
    try:
        decoded = json.loads(raw, parse_constant=_reject_constant, parse_int=_parse_json_int)
    except ValueError as exc:
        raise WeightingConfigError(f"Invalid weighting configuration JSON (Syntax error): {exc}") from None
    if isinstance(decoded, list):
        return {index: item for index, item in enumerate(decoded)}
    if not isinstance(decoded, dict):
        raise WeightingConfigError("Invalid weighting configuration payload.")
    return decoded


def stored_decimal(value: float, quantum: Decimal) -> str:
    """What MySQL stores when PHP binds the double ``value`` to a DECIMAL column (D14, spec §3.7):
    the shortest round-trip decimal form of the double, rounded half away from zero."""
    rounded = Decimal(repr(float(value))).quantize(quantum, rounding=ROUND_HALF_UP)
    if rounded == 0:
        rounded = abs(rounded)  # DECIMAL has no negative zero
    return str(rounded)


def _to_float(value) -> float:
    """A DECIMAL read from the database as PHP sees it: the decimal text parsed as a double."""
    return float(_to_decimal(value))


def _to_decimal(value) -> Decimal:
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        return Decimal(repr(value))  # SQLite returns NUMERIC as REAL
    return Decimal(str(value))  # int (SQLite stores integral NUMERIC as INTEGER) or str


def format_stored(value, quantum: Decimal) -> str:
    """A DECIMAL column value read back from MariaDB or SQLite, as a string with the scale."""
    rounded = _to_decimal(value).quantize(quantum, rounding=ROUND_HALF_UP)
    if rounded == 0:
        rounded = abs(rounded)
    return str(rounded)


# ============================================================================================
# Model validation (spec §3.6), written independently of the pipeline
# ============================================================================================


def validate_model(row) -> tuple:
    """Return ``(config, None)`` for a valid model row, ``(None, message)`` for an invalid one.

    Order as ``ModelDefinition::fromDatabaseRow``: the type (enum), the config decoding, then the
    constructor's rules (name, slug, weighting).
    """
    model_type = row["model_type"]
    if model_type not in MODEL_TYPES:
        # PHP: ModelType::from() throws, and the whole user fails (Q7). D6: skip this model only.
        # D7: first_touch and linear are known types here.
        return None, f"Unknown attribution model type '{model_type}'."
    try:
        config = decode_weighting_config(row["weighting_config"])
    except WeightingConfigError as exc:
        return None, str(exc)
    if (row["model_name"] or "").strip(" \t\n\r\0\x0b") == "":
        return None, "Model name cannot be empty."
    if (row["model_slug"] or "").strip(" \t\n\r\0\x0b") == "":
        return None, "Model slug cannot be empty."
    if model_type in REQUIRES_WEIGHTING and not config:
        return None, "Weighting configuration required for the selected model type."
    if model_type == "time_decay":
        half_life = config.get("half_life_hours")
        if not php_is_numeric(half_life) or php_int(half_life) <= 0:
            return None, "Time decay models require a positive integer half_life_hours value."
    elif model_type == "position_based":
        first = config.get("first_touch_weight")
        last = config.get("last_touch_weight")
        if not (php_is_numeric(first) and php_is_numeric(last)):
            return None, "Position based models require numeric first_touch_weight and last_touch_weight."
        first, last = php_float(first), php_float(last)
        if not (0.0 <= first <= 1.0 and 0.0 <= last <= 1.0):
            return None, "Position based weights must be between 0 and 1."
        if first + last > 1.0:
            return None, "The sum of first and last touch weights must not exceed 1."
    elif model_type == "algorithmic":
        pass  # "must include configuration details": already covered by REQUIRES_WEIGHTING above
    elif config:
        # last_touch, assisted; D7: first_touch and linear have no parameters either (our choice).
        return None, "This attribution model does not accept weighting parameters."
    return config, None


# ============================================================================================
# Strategies (spec §3.1-§3.5; D7): credits per journey position
# ============================================================================================


def _fix_drift(credits: dict, last_index: int) -> dict:
    """If the credits do not sum to 1 within 0.0001, add the difference to the last position."""
    total = 0.0
    for credit in credits.values():  # PHP array_sum: insertion order
        total += credit
    if abs(total - 1.0) > 0.0001:
        credits[last_index] = max(0.0, credits[last_index] + (1.0 - total))
    return credits


def half_life_hours(config: dict) -> int:
    """TimeDecayStrategy L117-125: numeric -> max(1, (int) value), else 48 (D10)."""
    value = config.get("half_life_hours")
    if php_is_numeric(value):
        return max(1, php_int(value))
    return DEFAULT_HALF_LIFE_HOURS


def time_decay_credits(half_life: int, conv_time: int, journey: list) -> list:
    """Spec 3.2. ``journey`` is a list of (click_id, click_time)."""
    n = len(journey)
    k = math.log(2) / max(half_life, 1)
    weights = []
    for _click_id, click_time in journey:
        age_hours = max(0.0, (conv_time - click_time) / 3600)
        weights.append(math.exp(-k * age_hours))
    total = 0.0
    for weight in weights:
        total += weight
    if total <= 0:
        return [1.0 / n] * n
    credits = {}
    for index, weight in enumerate(weights):
        credits[index] = max(0.0, weight / total)
    credits = _fix_drift(credits, n - 1)
    return [credits[index] for index in range(n)]


def position_weights(config: dict) -> tuple:
    """first_touch_weight / last_touch_weight: 0.4 when unset or null, else (float)."""
    first = config.get("first_touch_weight")
    last = config.get("last_touch_weight")
    first = DEFAULT_POSITION_WEIGHT if first is None else php_float(first)
    last = DEFAULT_POSITION_WEIGHT if last is None else php_float(last)
    return first, last


def position_based_credits(first: float, last: float, n: int) -> list:
    """Spec 3.3."""
    middle = max(0.0, 1.0 - (first + last))
    if first < 0 or last < 0:
        first, last = 0.4, 0.4
        middle = 1.0 - 0.8
    if n == 1:
        return [1.0]
    if n == 2:
        f, l = max(0.0, first), max(0.0, last)
        if f + l <= 0:
            return [0.5, 0.5]
        return [f / (f + l), l / (f + l)]
    # PHP builds the array in key order 0, n-1, then 1..n-2; array_sum follows that order.
    raw = {0: max(0.0, first), n - 1: max(0.0, last)}
    for index in range(1, n - 1):
        raw[index] = max(0.0, middle) / (n - 2)
    total = 0.0
    for value in raw.values():
        total += value
    if total <= 0:
        return [1.0 / n] * n
    reciprocal = 1.0 / total  # PHP multiplies by the reciprocal, it does not divide
    credits = {}
    for index, value in raw.items():
        credits[index] = max(0.0, value * reciprocal)
    credits = _fix_drift(credits, n - 1)
    return [credits[index] for index in range(n)]


def assisted_credits(n: int) -> list:
    """Spec 3.4: the last sorted touch gets nothing, the others 1/(n-1) each."""
    if n == 1:
        return [1.0]
    return [1.0 / (n - 1)] * (n - 1) + [0.0]


def first_touch_credits(n: int) -> list:
    """D7 (not in PHP): all credit to journey position 0."""
    return [1.0] + [0.0] * (n - 1)


def linear_credits(n: int) -> list:
    """D7 (not in PHP): 1/n to each touch."""
    return [1.0 / n] * n


def credited_touches(model_type: str, config: dict, conversion: Conversion, journey: list) -> list:
    """The touchpoints a strategy emits for one conversion: [(position, click_id, credit)] in
    journey order, touches with credit <= 0 skipped."""
    if model_type in ("last_touch", "algorithmic"):
        # Spec 3.1/3.5 (D7: algorithmic stays last touch): the journey is ignored.
        return [(0, conversion.click_id, 1.0)]
    n = len(journey)
    if model_type == "time_decay":
        credits = time_decay_credits(half_life_hours(config), conversion.conv_time, journey)
    elif model_type == "position_based":
        first, last = position_weights(config)
        credits = position_based_credits(first, last, n)
    elif model_type == "assisted":
        credits = assisted_credits(n)
    elif model_type == "first_touch":
        credits = first_touch_credits(n)
    elif model_type == "linear":
        credits = linear_credits(n)
    else:
        raise ValueError(f"no strategy for {model_type!r}")
    touches = []
    for position, ((click_id, _click_time), credit) in enumerate(zip(journey, credits)):
        if credit <= 0:
            continue
        touches.append((position, click_id, credit))
    if not touches:
        # PHP fallbacks, unreachable because a journey is never empty (spec §3.2, §3.4).
        if model_type == "time_decay":
            touches.append((n - 1, conversion.click_id, 1.0))
        elif model_type == "assisted":
            touches.append((n - 1, journey[-1][0], 1.0))
    return touches


def conversion_sums(payout: float, cpc: float, touches: list) -> tuple:
    """A conversion's (revenue, cost): from 0.0, left to right in journey order (spec §3.0).
    D5: cost uses the converting click's cpc for every touch."""
    revenue = 0.0
    cost = 0.0
    for _position, _click_id, credit in touches:
        revenue += payout * credit
        cost += cpc * credit
    return revenue, cost


# ============================================================================================
# Reading the source tables
# ============================================================================================


class _Source:
    """Scalar reads of Prosper202's source tables, with small per-run caches."""

    def __init__(self, conn):
        self.conn = conn
        self._clicks = {}
        self._multi_touch = {}

    def rows(self, sql: str, **params):
        return self.conn.execute(text(sql), params).mappings().all()

    def click(self, click_id: int):
        """D15: the one row that stands for a click_id (202_clicks has no unique key): the row with
        the smallest click_time, then the smallest click_cpc, then the smallest ppc_account_id.
        ``None`` when there is no row (D16)."""
        if click_id not in self._clicks:
            rows = self.rows(
                "SELECT click_id, user_id, aff_campaign_id, ppc_account_id, click_cpc, click_time "
                "FROM `202_clicks` WHERE click_id = :click_id",
                click_id=click_id,
            )
            best = None
            for row in rows:
                key = (int(row["click_time"]), _to_decimal(row["click_cpc"]), int(row["ppc_account_id"]))
                if best is None or key < best[0]:
                    best = (key, row)
            self._clicks[click_id] = None if best is None else best[1]
        return self._clicks[click_id]

    def conversions(self, user_id: int, hours: list) -> list:
        """Spec 2.1 for whole hours (D3), in conv_id order."""
        by_id = {}
        for hour in hours:
            rows = self.rows(
                "SELECT conv_id, click_id, campaign_id, user_id, conv_time, click_time, click_payout "
                "FROM `202_conversion_logs` "
                "WHERE user_id = :user_id AND conv_time BETWEEN :start AND :end AND deleted = 0 "
                "ORDER BY conv_id",
                user_id=user_id, start=hour, end=hour + HOUR - 1,
            )
            for row in rows:
                by_id[int(row["conv_id"])] = row
        conversions = []
        for conv_id in sorted(by_id):
            row = by_id[conv_id]
            click = self.click(int(row["click_id"]))
            if click is None:
                continue  # INNER JOIN: no click row, no conversion (D16)
            # D15: one click row per click_id, so the conversion counts once, with that row's cpc.
            conversions.append(Conversion(
                conv_id=conv_id,
                click_id=int(row["click_id"]),
                campaign_id=int(row["campaign_id"]),
                user_id=int(row["user_id"]),
                conv_time=int(row["conv_time"]),
                click_time=int(row["click_time"]),
                payout=_to_float(row["click_payout"]),
                cpc=_to_float(click["click_cpc"]),
            ))
        return conversions

    def multi_touch_enabled(self, user_id: int, campaign_id: int) -> bool:
        """Spec 5.1 ``isMultiTouchEnabled({user, advertiser, campaign})`` (D13)."""
        key = (user_id, campaign_id)
        if key not in self._multi_touch:
            advertiser_id = None
            if campaign_id > 0:
                found = self.rows(
                    "SELECT aff_network_id FROM `202_aff_campaigns` WHERE aff_campaign_id = :campaign_id",
                    campaign_id=campaign_id,
                )
                if found and int(found[0]["aff_network_id"]) > 0:
                    advertiser_id = int(found[0]["aff_network_id"])
            enabled = True  # default: on
            # Least to most specific; advertiser and campaign only when known and positive.
            scopes = [("global", None)]
            if advertiser_id is not None:
                scopes.append(("advertiser", advertiser_id))
            if campaign_id > 0:
                scopes.append(("campaign", campaign_id))
            for scope_type, scope_id in scopes:
                setting = self._setting(user_id, scope_type, scope_id)
                if setting is not None:
                    enabled = bool(int(setting))  # a more specific existing row wins
            self._multi_touch[key] = enabled
        return self._multi_touch[key]

    def _setting(self, user_id: int, scope_type: str, scope_id):
        """multi_touch_enabled of the scope's row (highest setting_id if several), or None."""
        if scope_id is None:
            where = "scope_id IS NULL"
            params = {}
        else:
            where = "scope_id = :scope_id"
            params = {"scope_id": scope_id}
        rows = self.rows(
            "SELECT multi_touch_enabled FROM `202_attribution_settings` "
            f"WHERE user_id = :user_id AND scope_type = :scope_type AND {where} "
            "ORDER BY setting_id DESC",
            user_id=user_id, scope_type=scope_type, **params,
        )
        return rows[0]["multi_touch_enabled"] if rows else None

    def journey_from_clicks(self, conversion: Conversion, lookback_days: int, touch_cap: int) -> list:
        """D2 (= PHP persistJourney, spec §2.2) + D15 (duplicate click rows collapsed first)."""
        start = max(0, conversion.conv_time - lookback_days * DAY)
        end = conversion.conv_time
        rows = self.rows(
            "SELECT DISTINCT click_id FROM `202_clicks` "
            "WHERE user_id = :user_id AND aff_campaign_id = :campaign_id "
            "AND click_time BETWEEN :start AND :end",
            user_id=conversion.user_id, campaign_id=conversion.campaign_id, start=start, end=end,
        )
        candidates = []
        for row in rows:
            click = self.click(int(row["click_id"]))
            # D15: the collapsed row is the click; it must itself match the candidate filter.
            if (int(click["user_id"]) == conversion.user_id
                    and int(click["aff_campaign_id"]) == conversion.campaign_id
                    and start <= int(click["click_time"]) <= end):
                candidates.append((int(click["click_id"]), int(click["click_time"])))
        candidates.sort(key=lambda touch: (touch[1], touch[0]), reverse=True)  # time DESC, id DESC
        touches = {}
        for click_id, click_time in candidates[:touch_cap]:
            touches[click_id] = click_time
        if conversion.click_id not in touches:
            touches[conversion.click_id] = conversion.click_time  # may make 26 touches (Q3)
        journey = list(touches.items())
        journey.sort(key=lambda touch: (touch[1], touch[0]))
        return journey

    def journey_from_stored(self, conversion: Conversion) -> list:
        """PHP rebuild semantics (spec §2.1 last paragraph + 2.3): stored touches, no dedupe, the
        converting click appended if missing, sorted by (click_time, click_id)."""
        rows = self.rows(
            "SELECT click_id, click_time FROM `202_conversion_touchpoints` "
            "WHERE conv_id = :conv_id ORDER BY position, touchpoint_id",
            conv_id=conversion.conv_id,
        )
        journey = [(int(row["click_id"]), int(row["click_time"])) for row in rows]
        if not any(click_id == conversion.click_id for click_id, _ in journey):
            journey.append((conversion.click_id, conversion.click_time))
        journey.sort(key=lambda touch: (touch[1], touch[0]))  # stable, like PHP 8's usort
        return journey


# ============================================================================================
# expected_rows
# ============================================================================================


def expected_rows(conn, hours: list, *, users: list | None = None, models: list | None = None,
                  lookback_days: int = 30, touch_cap: int = 25, journey_source: str = "clicks") -> Expected:
    """What the PHP engine stores for ``hours`` (whole UTC hours, D3) when each model runs alone
    (D1), with the project's decisions applied.

    ``journey_source="clicks"`` builds journeys from 202_clicks where multi-touch is enabled (D13);
    ``"stored"`` reads 202_conversion_touchpoints like the PHP rebuild.
    """
    if journey_source not in ("clicks", "stored"):
        raise ValueError(f"journey_source must be 'clicks' or 'stored', not {journey_source!r}")
    hours = sorted(set(int(hour) for hour in hours))
    for hour in hours:
        if hour % HOUR:
            raise ValueError(f"{hour} is not the start of a UTC hour")
    source = _Source(conn)
    expected = Expected()

    user_ids = [int(row["user_id"]) for row in source.rows(
        "SELECT user_id FROM `202_users` WHERE user_deleted = 0 ORDER BY user_id")]  # D16
    if users is not None:
        wanted = set(users)
        user_ids = [user_id for user_id in user_ids if user_id in wanted]

    for user_id in user_ids:
        valid_models = []
        for row in source.rows(
                "SELECT * FROM `202_attribution_models` WHERE user_id = :user_id AND is_active = 1 "
                "ORDER BY model_id", user_id=user_id):
            model_id = int(row["model_id"])
            if models is not None and model_id not in models:
                continue
            config, message = validate_model(row)
            if message is not None:
                expected.skipped_models[model_id] = message  # D6: skip and report, run the rest
                continue
            valid_models.append((model_id, row["model_type"], config))
        if not valid_models:
            continue

        conversions = source.conversions(user_id, hours)
        journeys = {}
        for conversion in conversions:
            if journey_source == "stored":
                journeys[conversion.conv_id] = source.journey_from_stored(conversion)
            elif source.multi_touch_enabled(user_id, conversion.campaign_id):
                journeys[conversion.conv_id] = source.journey_from_clicks(conversion, lookback_days, touch_cap)
            else:
                # D13: no journey where multi-touch is off -> PHP's single-touch fallback.
                journeys[conversion.conv_id] = [(conversion.click_id, conversion.click_time)]

        # D1: every model is computed on its own; nothing is shared between models.
        for model_id, model_type, config in valid_models:
            buckets = {}  # date_hour -> [clicks, conversions, revenue, cost]
            for conversion in conversions:
                date_hour = conversion.conv_time - conversion.conv_time % HOUR
                touches = credited_touches(model_type, config, conversion, journeys[conversion.conv_id])
                revenue, cost = conversion_sums(conversion.payout, conversion.cpc, touches)
                for position, click_id, credit in touches:
                    expected.touchpoints.append((
                        model_id, user_id, date_hour, conversion.conv_id, position, click_id,
                        stored_decimal(credit, CREDIT), stored_decimal(credit, CREDIT),  # weight = credit
                    ))
                bucket = buckets.setdefault(date_hour, [0, 0, 0.0, 0.0])
                bucket[0] += len(touches)
                bucket[1] += 1
                bucket[2] += revenue
                bucket[3] += cost
            # D4: only hours with conversions get a row. D8: global scope only.
            for date_hour, (clicks, conversion_count, revenue, cost) in buckets.items():
                expected.snapshots.append((
                    model_id, user_id, date_hour, clicks, conversion_count,
                    stored_decimal(revenue, MONEY), stored_decimal(cost, MONEY),
                ))

    expected.snapshots.sort()
    expected.touchpoints.sort()
    return expected


# ============================================================================================
# stored_rows and diff
# ============================================================================================


def stored_rows(conn, hours: list | None = None) -> Stored:
    """The global snapshot and touchpoint rows stored in the database, in the oracle's formats."""
    snapshot_sql = (
        "SELECT model_id, user_id, date_hour, attributed_clicks, attributed_conversions, "
        "attributed_revenue, attributed_cost FROM `202_attribution_snapshots` "
        "WHERE scope_type = 'global' AND scope_id IS NULL"
    )
    touchpoint_sql = (
        "SELECT s.model_id, s.user_id, s.date_hour, t.conv_id, t.position, t.click_id, t.credit, t.weight "
        "FROM `202_attribution_touchpoints` t "
        "JOIN `202_attribution_snapshots` s ON s.snapshot_id = t.snapshot_id "
        "WHERE s.scope_type = 'global' AND s.scope_id IS NULL"
    )
    params = {}
    if hours is not None:
        if not hours:
            return Stored()
        snapshot_sql += " AND date_hour IN :hours"
        touchpoint_sql += " AND s.date_hour IN :hours"
        params["hours"] = [int(hour) for hour in hours]

    def run(sql):
        statement = text(sql)
        if "hours" in params:
            statement = statement.bindparams(bindparam("hours", expanding=True))
        return conn.execute(statement, params).all()

    stored = Stored()
    for row in run(snapshot_sql):
        stored.snapshots.append((
            int(row[0]), int(row[1]), int(row[2]), int(row[3]), int(row[4]),
            format_stored(row[5], MONEY), format_stored(row[6], MONEY),
        ))
    for row in run(touchpoint_sql):
        stored.touchpoints.append((
            int(row[0]), int(row[1]), int(row[2]), int(row[3]), int(row[4]), int(row[5]),
            format_stored(row[6], CREDIT), format_stored(row[7], CREDIT),
        ))
    stored.snapshots.sort()
    stored.touchpoints.sort()
    return stored


SNAPSHOT_FIELDS = "(model_id, user_id, date_hour, clicks, conversions, revenue, cost)"
TOUCHPOINT_FIELDS = "(model_id, user_id, date_hour, conv_id, position, click_id, credit, weight)"


def diff(expected, stored, limit: int = 50) -> str:
    """Rows expected but not stored, and stored but not expected (as multisets); "" when equal."""
    lines = []
    for name, fields in (("snapshots", SNAPSHOT_FIELDS), ("touchpoints", TOUCHPOINT_FIELDS)):
        want = Counter(getattr(expected, name))
        have = Counter(getattr(stored, name))
        for label, rows in (("missing (expected, not stored)", want - have),
                            ("extra (stored, not expected)", have - want)):
            if not rows:
                continue
            lines.append(f"{name} {label}: {sum(rows.values())} row(s) {fields}")
            for index, (row, count) in enumerate(sorted(rows.items())):
                if index == limit:
                    lines.append(f"  ... and {len(rows) - limit} more")
                    break
                lines.append(f"  {row}" + (f" x{count}" if count > 1 else ""))
    return "\n".join(lines)
