"""Rows of ``202_attribution_models`` -> validated model parameters (spec §3.6, §3.2, §3.3; D6, D7, D10).

:func:`parse_model_row` accepts or rejects a row exactly as PHP's
``ModelDefinition::fromDatabaseRow`` does, but (D6) a rejected row is *reported*: the returned
:class:`ModelSpec` has ``is_valid=False`` and the message, and the run computes every other model.
:func:`validate_model_row` raises :class:`~attribution_pipeline.errors.InvalidModelConfig` instead.
:func:`models_frame` turns specs into the ``frames.MODELS`` frame (one row per hour and model).

Rules, checked in PHP's order (the constructor's arguments are evaluated before its body, so the
type and the config decoding fail before the name and slug checks):

1. ``model_type`` is matched exactly (no trim, no lowercasing, like ``ModelType::from``) against
   :data:`MODEL_TYPES`; anything else: "Unsupported attribution model type: <type>."
2. ``weighting_config`` is decoded (:func:`decode_config`): NULL or '' -> empty; an array
   (dict/list) is used as is; a non-empty string is decoded like PHP's
   ``json_decode($s, true, 512, JSON_THROW_ON_ERROR)``: invalid JSON (NaN/Infinity literals and
   whitespace-only strings included) -> "Invalid weighting configuration JSON: Syntax error"
   (or PHP's other json_last_error_msg texts: control character, depth > 512, unpaired UTF-16
   surrogate, malformed UTF-8); JSON that is not an object or a list (``null``, ``5``, ``"x"``,
   ``true``) -> "Invalid weighting configuration payload.". A JSON list stays a list (a PHP array):
   ``[]`` is an empty config, ``[1]`` a non-empty one whose named keys are all missing. Integers
   outside the int64 range decode as floats, as in PHP.
3. "Model name cannot be empty." / "Model slug cannot be empty." when the value is ``''``.
4. time_decay, position_based and algorithmic need a non-empty config: "Weighting configuration
   required for the selected model type."
5. time_decay: ``half_life_hours`` must be PHP-numeric with ``(int) value > 0``, else
   'Time decay models require a positive integer "half_life_hours" value.'. No upper bound.
   ``half_life_hours = max(1, (int) value)`` (D10): "12.9" -> 12, "1e3" -> 1000, " 12" -> 12,
   12.9 -> 12; "0.5", 0.5, 0, -1, "abc", a missing key are invalid.
6. position_based: both weights PHP-numeric ('Position based models require numeric
   "first_touch_weight" and "last_touch_weight" values.'), each ``(float)`` in [0, 1] ("Position
   based weights must be between 0 and 1."), and ``first + last <= 1.0`` as a double sum ("The sum
   of first and last touch weights must not exceed 1."). The weights are returned as ``(float)``.
7. algorithmic: a non-empty config ("Algorithmic models must include configuration details.";
   rule 4 fires first in practice). Computed as last touch (``strategy="last_touch"``, Q8/D7),
   unless the config opts into visitor journeys or Markov credit (``core/algorithmic_rules.py``,
   D32: ``strategy="markov"``), whose bad values are named.
8. last_touch and assisted: the config must be empty ("This attribution model does not accept
   weighting parameters.").
9. first_touch and linear (D7; PHP has no enum value for them, so PHP rejects every such row at
   rule 1): **our choice** is the last_touch rule, the config must be empty (NULL, '', '{}' and
   '[]' are empty), with the same message. They compute with their own strategy.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from attribution_pipeline.core import frames
from attribution_pipeline.core.algorithmic_rules import AlgorithmicParams, algorithmic_params
from attribution_pipeline.core.php import (
    JSON_UTF8,
    PhpJsonError,
    php_float,
    php_int,
    php_is_numeric,
    php_json_decode,
    php_string,
)
from attribution_pipeline.errors import InvalidModelConfig

#: PHP's ``ModelType`` enum values, then the two types we compute although PHP has no enum value (D7).
PHP_MODEL_TYPES = ("last_touch", "time_decay", "position_based", "algorithmic", "assisted")
MODEL_TYPES = PHP_MODEL_TYPES + ("first_touch", "linear")

#: ``ModelType::requiresWeighting``.
REQUIRES_WEIGHTING = frozenset({"time_decay", "position_based", "algorithmic"})
#: Types whose config must be empty (first_touch and linear by our choice, see the docstring).
NO_WEIGHTING = frozenset({"last_touch", "assisted", "first_touch", "linear"})

#: The credit function of each type (``AttributionJobRunner::resolveStrategy``; D7 for the last two).
STRATEGIES = {
    "last_touch": "last_touch",
    "time_decay": "time_decay",
    "position_based": "position_based",
    "algorithmic": "last_touch",
    "assisted": "assisted",
    "first_touch": "first_touch",
    "linear": "linear",
}

# PHP's messages (ModelDefinition.php), verbatim.
MSG_NAME_EMPTY = "Model name cannot be empty."
MSG_SLUG_EMPTY = "Model slug cannot be empty."
MSG_UNKNOWN_TYPE = "Unsupported attribution model type: {}."
MSG_JSON = "Invalid weighting configuration JSON: {}"
MSG_PAYLOAD = "Invalid weighting configuration payload."
MSG_WEIGHTING_REQUIRED = "Weighting configuration required for the selected model type."
MSG_HALF_LIFE = 'Time decay models require a positive integer "half_life_hours" value.'
MSG_WEIGHTS_NUMERIC = (
    'Position based models require numeric "first_touch_weight" and "last_touch_weight" values.'
)
MSG_WEIGHTS_RANGE = "Position based weights must be between 0 and 1."
MSG_WEIGHTS_SUM = "The sum of first and last touch weights must not exceed 1."
MSG_ALGORITHMIC = "Algorithmic models must include configuration details."
MSG_NO_WEIGHTING = "This attribution model does not accept weighting parameters."

def _json_error(reason: str) -> InvalidModelConfig:
    return InvalidModelConfig(MSG_JSON.format(reason))



def decode_config(raw: Any) -> dict | list:
    """The weighting config as PHP's ``decodeConfig`` returns it: a dict (JSON object) or a list.

    NULL and '' give ``{}``; a dict or list is returned as is; bytes are decoded as UTF-8 first.
    Raises :class:`InvalidModelConfig` for invalid JSON, for JSON that is not an object or a list,
    and for values of any other type (PHP's ``array|string|null`` parameter refuses them).
    """
    if raw is None:
        return {}
    if isinstance(raw, (dict, list)):
        return raw
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _json_error(JSON_UTF8) from None
    if not isinstance(raw, str):
        raise InvalidModelConfig(MSG_PAYLOAD)
    if raw == "":
        return {}
    try:
        decoded = php_json_decode(raw)
    except PhpJsonError as exc:
        raise _json_error(str(exc)) from None
    if not isinstance(decoded, (dict, list)):
        raise InvalidModelConfig(MSG_PAYLOAD)
    return decoded


# ------------------------------------------------------------------------------------------
# Validation (ModelDefinition::__construct and assertValidWeightingConfig)
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    """One model row, validated. Parameters are set only for valid rows of the matching type."""

    model_id: int
    user_id: int
    model_name: str
    model_slug: str
    model_type: str
    strategy: str | None  # the credit function (algorithmic -> "last_touch"); None when invalid
    half_life_hours: int | None  # time_decay only
    first_touch_weight: float | None  # position_based only
    last_touch_weight: float | None  # position_based only
    is_valid: bool
    error: str | None  # the validation message when invalid
    created_at: int
    journey: str | None = None  # "account_campaign" (D2) or "visitor" (algorithmic only, D32)
    markov_channel: str | None = None  # the data-driven model's parameters (D32)
    markov_order: int | None = None
    training_days: int | None = None
    self_loops: bool | None = None


@dataclass(frozen=True)
class _Params:
    half_life_hours: int | None = None
    first_touch_weight: float | None = None
    last_touch_weight: float | None = None
    algorithmic: AlgorithmicParams | None = None


def _config_get(config: dict | list, key: str) -> Any:
    """``$config[key] ?? null``: a list (PHP array with integer keys) has no named keys."""
    return config.get(key) if isinstance(config, dict) else None


def _checked_type(row: Mapping[str, Any]) -> str:
    model_type = php_string(row.get("model_type"))
    if model_type not in MODEL_TYPES:
        raise InvalidModelConfig(MSG_UNKNOWN_TYPE.format(model_type))
    return model_type


def _check_identity(row: Mapping[str, Any]) -> None:
    if php_string(row.get("model_name")) == "":
        raise InvalidModelConfig(MSG_NAME_EMPTY)
    if php_string(row.get("model_slug")) == "":
        raise InvalidModelConfig(MSG_SLUG_EMPTY)


def _time_decay_params(config: dict | list) -> _Params:
    value = _config_get(config, "half_life_hours")
    if not php_is_numeric(value) or php_int(value) <= 0:
        raise InvalidModelConfig(MSG_HALF_LIFE)
    return _Params(half_life_hours=max(1, php_int(value)))


def _position_based_params(config: dict | list) -> _Params:
    first = _config_get(config, "first_touch_weight")
    last = _config_get(config, "last_touch_weight")
    if not php_is_numeric(first) or not php_is_numeric(last):
        raise InvalidModelConfig(MSG_WEIGHTS_NUMERIC)
    first, last = php_float(first), php_float(last)
    if first < 0 or last < 0 or first > 1 or last > 1:
        raise InvalidModelConfig(MSG_WEIGHTS_RANGE)
    if first + last > 1.0:
        raise InvalidModelConfig(MSG_WEIGHTS_SUM)
    return _Params(first_touch_weight=first, last_touch_weight=last)


def _weighting_params(model_type: str, config: dict | list) -> _Params:
    if model_type in REQUIRES_WEIGHTING and not config:
        raise InvalidModelConfig(MSG_WEIGHTING_REQUIRED)
    if model_type == "time_decay":
        return _time_decay_params(config)
    if model_type == "position_based":
        return _position_based_params(config)
    if model_type == "algorithmic" and not config:
        raise InvalidModelConfig(MSG_ALGORITHMIC)
    if model_type == "algorithmic":
        return _Params(algorithmic=algorithmic_params(config))
    if model_type in NO_WEIGHTING and config:
        raise InvalidModelConfig(MSG_NO_WEIGHTING)
    return _Params()


def _spec(row: Mapping[str, Any], strategy: str | None, params: _Params, error: str | None) -> ModelSpec:
    algo = params.algorithmic
    journey = None if error is not None else (algo.journey if algo is not None else "account_campaign")
    return ModelSpec(
        model_id=php_int(row.get("model_id")),
        user_id=php_int(row.get("user_id")),
        model_name=php_string(row.get("model_name")),
        model_slug=php_string(row.get("model_slug")),
        model_type=php_string(row.get("model_type")),
        strategy=strategy,
        half_life_hours=params.half_life_hours,
        first_touch_weight=params.first_touch_weight,
        last_touch_weight=params.last_touch_weight,
        is_valid=error is None,
        error=error,
        created_at=php_int(row.get("created_at")),
        journey=journey,
        markov_channel=algo.channel if algo is not None else None,
        markov_order=algo.order if algo is not None else None,
        training_days=algo.training_days if algo is not None else None,
        self_loops=algo.self_loops if algo is not None else None,
    )


def validate_model_row(row: Mapping[str, Any]) -> ModelSpec:
    """The valid spec of ``row``; raises :class:`InvalidModelConfig` (PHP's message) when invalid."""
    model_type = _checked_type(row)
    config = decode_config(row.get("weighting_config"))
    _check_identity(row)
    params = _weighting_params(model_type, config)
    strategy = params.algorithmic.strategy if params.algorithmic is not None else STRATEGIES[model_type]
    return _spec(row, strategy, params, None)


def parse_model_row(row: Mapping[str, Any]) -> ModelSpec:
    """Like :func:`validate_model_row`, but an invalid row gives ``is_valid=False`` and the message (D6)."""
    try:
        return validate_model_row(row)
    except InvalidModelConfig as exc:
        return _spec(row, None, _Params(), str(exc))


# ------------------------------------------------------------------------------------------
# The MODELS frame
# ------------------------------------------------------------------------------------------

_SPEC_SCHEMA = {name: dtype for name, dtype in frames.MODELS.items() if name != "date_hour"}


def _specs_frame(specs: Sequence[ModelSpec]) -> pl.DataFrame:
    columns = {name: [getattr(spec, name) for spec in specs] for name in _SPEC_SCHEMA}
    return pl.DataFrame(columns, schema=_SPEC_SCHEMA)


def models_frame(specs: Sequence[ModelSpec], hours: Sequence[int]) -> pl.DataFrame:
    """``frames.MODELS``: one row per (hour, spec), hour-major in the given orders; invalid specs included."""
    hours_df = pl.DataFrame({"date_hour": list(hours)}, schema={"date_hour": pl.Int64})
    crossed = hours_df.join(_specs_frame(specs), how="cross", maintain_order="left_right")
    return frames.conform(crossed, frames.MODELS, "models")
