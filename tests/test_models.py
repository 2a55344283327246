"""Model-row validation as PHP's ModelDefinition::fromDatabaseRow does it (spec §3.6; D6, D7, D10)."""

import json

import polars as pl
import pytest

from attribution_pipeline.core import frames
from attribution_pipeline.errors import InvalidModelConfig
from attribution_pipeline.core.model_rules import (
    MODEL_TYPES,
    ModelSpec,
    decode_config,
    models_frame,
    parse_model_row,
    php_float,
    php_int,
    php_is_numeric,
    validate_model_row,
)


def row(model_type="last_touch", config=None, **overrides):
    """A 202_attribution_models row; ``config`` may be a dict (JSON-encoded) or the raw column value."""
    raw = json.dumps(config) if isinstance(config, dict) else config
    base = {
        "model_id": 7,
        "user_id": 3,
        "model_name": "A model",
        "model_slug": "a-model",
        "model_type": model_type,
        "weighting_config": raw,
        "is_active": 1,
        "is_default": 0,
        "created_at": 1_700_000_000,
        "updated_at": 1_700_000_100,
    }
    return {**base, **overrides}


def error_of(r) -> str:
    spec = parse_model_row(r)
    assert not spec.is_valid
    assert spec.strategy is None
    assert spec.half_life_hours is None and spec.first_touch_weight is None
    with pytest.raises(InvalidModelConfig) as raised:
        validate_model_row(r)
    assert str(raised.value) == spec.error
    return spec.error


def valid(r) -> ModelSpec:
    spec = parse_model_row(r)
    assert spec.is_valid, spec.error
    assert spec.error is None
    assert validate_model_row(r) == spec
    return spec


# ------------------------------------------------------------------------------------------
# Spec section 6 item 7 (ModelDefinitionValidationTest)
# ------------------------------------------------------------------------------------------


def test_phpunit_time_decay_zero_half_life():
    assert "half_life_hours" in error_of(row("time_decay", {"half_life_hours": 0}))


def test_phpunit_position_based_sum_too_large():
    msg = error_of(row("position_based", {"first_touch_weight": 0.8, "last_touch_weight": 0.5}))
    assert "sum of first and last touch weights" in msg


def test_phpunit_assisted_rejects_weighting():
    assert "does not accept weighting" in error_of(row("assisted", {"extra": 1}))


def test_phpunit_position_based_valid():
    r = row("position_based", {"first_touch_weight": 0.4, "last_touch_weight": 0.4}, model_slug="pb-valid")
    spec = valid(r)
    assert (spec.first_touch_weight, spec.last_touch_weight) == (0.4, 0.4)
    assert spec.strategy == "position_based"
    assert spec.model_slug == "pb-valid"


# ------------------------------------------------------------------------------------------
# Identity fields, name and slug, type
# ------------------------------------------------------------------------------------------


def test_valid_row_carries_identity_fields():
    spec = valid(row("last_touch", None))
    assert spec == ModelSpec(
        model_id=7,
        user_id=3,
        model_name="A model",
        model_slug="a-model",
        model_type="last_touch",
        strategy="last_touch",
        half_life_hours=None,
        first_touch_weight=None,
        last_touch_weight=None,
        is_valid=True,
        error=None,
        created_at=1_700_000_000,
        journey="account_campaign",
    )


def test_empty_name_and_slug():
    assert error_of(row(model_name="")) == "Model name cannot be empty."
    assert error_of(row(model_name=None)) == "Model name cannot be empty."  # (string) null
    assert error_of(row(model_slug="")) == "Model slug cannot be empty."


def test_name_is_not_trimmed_like_php():
    # ModelDefinition checks `$name === ''` without trim: a blank name loads in PHP.
    assert valid(row(model_name="   ")).model_name == "   "
    assert valid(row(model_slug=" ")).model_slug == " "


def test_unknown_type_is_invalid_and_reported():
    assert error_of(row("data_driven")) == "Unsupported attribution model type: data_driven."
    spec = parse_model_row(row("data_driven"))
    assert (spec.model_id, spec.user_id, spec.model_type, spec.created_at) == (7, 3, "data_driven", 1_700_000_000)


@pytest.mark.parametrize("model_type", ["Last_Touch", "LAST_TOUCH", " last_touch", "last_touch ", "", "lineare"])
def test_type_is_matched_exactly(model_type):
    assert error_of(row(model_type)) == f"Unsupported attribution model type: {model_type}."


def test_error_order_follows_php_argument_evaluation():
    # ModelType::from and decodeConfig run before the constructor's name/slug checks.
    assert "Unsupported" in error_of(row("nope", "{bad", model_name=""))
    assert error_of(row("last_touch", "{bad", model_name="")).endswith("Syntax error")
    assert error_of(row("time_decay", None, model_name="")) == "Model name cannot be empty."
    assert error_of(row("time_decay", None, model_slug="")) == "Model slug cannot be empty."


def test_model_types_and_strategies():
    assert set(MODEL_TYPES) == {
        "last_touch", "time_decay", "position_based", "algorithmic", "assisted", "first_touch", "linear",
    }
    strategies = {
        "last_touch": (None, "last_touch"),
        "assisted": (None, "assisted"),
        "first_touch": (None, "first_touch"),
        "linear": (None, "linear"),
        "algorithmic": ({"config": "anything"}, "last_touch"),
        "time_decay": ({"half_life_hours": 24}, "time_decay"),
        "position_based": ({"first_touch_weight": 0.3, "last_touch_weight": 0.3}, "position_based"),
    }
    for model_type, (config, strategy) in strategies.items():
        assert valid(row(model_type, config)).strategy == strategy


# ------------------------------------------------------------------------------------------
# Q7 causes and D7
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_type", ["first_touch", "linear"])
@pytest.mark.parametrize("raw", [None, "", "{}", "[]"])
def test_first_touch_and_linear_are_valid_with_empty_config(model_type, raw):
    spec = valid(row(model_type, raw))
    assert spec.strategy == model_type
    assert spec.half_life_hours is None and spec.first_touch_weight is None


@pytest.mark.parametrize("model_type", ["first_touch", "linear"])
def test_first_touch_and_linear_reject_weighting(model_type):
    assert error_of(row(model_type, {"weight": 0.5})) == "This attribution model does not accept weighting parameters."


def test_time_decay_with_empty_object_from_v3_is_invalid():
    msg = "Weighting configuration required for the selected model type."
    assert error_of(row("time_decay", "{}")) == msg
    assert error_of(row("time_decay", None)) == msg
    assert error_of(row("time_decay", "[]")) == msg
    assert error_of(row("position_based", "{}")) == msg


def test_invalid_json_is_invalid():
    assert error_of(row("last_touch", '{"half_life_hours": 12')) == "Invalid weighting configuration JSON: Syntax error"
    assert error_of(row("time_decay", "{'half_life_hours': 12}")) == "Invalid weighting configuration JSON: Syntax error"


# ------------------------------------------------------------------------------------------
# time_decay (D10)
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "hours"),
    [("12.9", 12), ("1e3", 1000), (" 12", 12), ("12 ", 12), (12.9, 12), (12, 12), (1, 1), ("1", 1),
     ("+7", 7), (".5e1", 5), (1_000_000, 1_000_000), ("9999999999999999999999", 2**63 - 1)],
)
def test_half_life_truncated_like_php(value, hours):
    spec = valid(row("time_decay", {"half_life_hours": value}))
    assert spec.half_life_hours == hours
    assert spec.strategy == "time_decay"
    assert spec.first_touch_weight is None and spec.last_touch_weight is None


@pytest.mark.parametrize(
    "value",
    ["0.5", 0.5, 0, "0", -1, "-1", -0.5, "abc", "", " ", "12abc", "0x10", True, None, [12], {"h": 12},
     "1e999", 1e19, "inf"],
)
def test_half_life_rejected(value):
    msg = error_of(row("time_decay", {"half_life_hours": value}))
    assert msg == 'Time decay models require a positive integer "half_life_hours" value.'


def test_half_life_missing_key_or_list_config():
    msg = 'Time decay models require a positive integer "half_life_hours" value.'
    assert error_of(row("time_decay", {"half_life": 12})) == msg
    assert error_of(row("time_decay", "[12]")) == msg  # a list has no named keys


def test_half_life_has_no_upper_bound():
    assert valid(row("time_decay", {"half_life_hours": 100_000})).half_life_hours == 100_000


# ------------------------------------------------------------------------------------------
# position_based
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "last", "expected"),
    [(0, 0, (0.0, 0.0)), (1, 0, (1.0, 0.0)), (0, 1, (0.0, 1.0)), (0.5, 0.5, (0.5, 0.5)), (0.7, 0.3, (0.7, 0.3)),
     ("0.4", "0.4", (0.4, 0.4)), (" 0.25", "0.5 ", (0.25, 0.5)), ("1e-1", ".2", (0.1, 0.2)), (-0.0, 0, (0.0, 0.0))],
)
def test_position_weights_valid(first, last, expected):
    spec = valid(row("position_based", {"first_touch_weight": first, "last_touch_weight": last}))
    assert (spec.first_touch_weight, spec.last_touch_weight) == expected
    assert spec.half_life_hours is None


@pytest.mark.parametrize(
    ("first", "last", "message"),
    [(0.6, 0.5, "The sum of first and last touch weights must not exceed 1."),
     (0.8, 0.5, "The sum of first and last touch weights must not exceed 1."),
     (0.5, 0.5000001, "The sum of first and last touch weights must not exceed 1."),
     (-0.1, 0.4, "Position based weights must be between 0 and 1."),
     (0.4, -0.1, "Position based weights must be between 0 and 1."),
     (1.1, 0, "Position based weights must be between 0 and 1."),
     (0, 1.1, "Position based weights must be between 0 and 1."),
     ("1e999", 0, "Position based weights must be between 0 and 1."),
     ("abc", 0.4, 'Position based models require numeric "first_touch_weight" and "last_touch_weight" values.'),
     (0.4, None, 'Position based models require numeric "first_touch_weight" and "last_touch_weight" values.'),
     (True, 0.4, 'Position based models require numeric "first_touch_weight" and "last_touch_weight" values.')],
)
def test_position_weights_invalid(first, last, message):
    assert error_of(row("position_based", {"first_touch_weight": first, "last_touch_weight": last})) == message


def test_position_weights_missing_key():
    msg = 'Position based models require numeric "first_touch_weight" and "last_touch_weight" values.'
    assert error_of(row("position_based", {"first_touch_weight": 0.4})) == msg
    assert error_of(row("position_based", {"last_touch_weight": 0.4})) == msg
    assert error_of(row("position_based", "[0.4, 0.4]")) == msg


# ------------------------------------------------------------------------------------------
# algorithmic, last_touch, assisted
# ------------------------------------------------------------------------------------------


def test_algorithmic_needs_config_and_computes_as_last_touch():
    assert error_of(row("algorithmic", None)) == "Weighting configuration required for the selected model type."
    assert error_of(row("algorithmic", "[]")) == "Weighting configuration required for the selected model type."
    spec = valid(row("algorithmic", '{"config": "gradient boosting"}'))
    assert spec.strategy == "last_touch"
    assert valid(row("algorithmic", "[1]")).strategy == "last_touch"  # any non-empty array will do


@pytest.mark.parametrize("model_type", ["last_touch", "assisted"])
@pytest.mark.parametrize("raw", [None, "", "{}", "[]", " {} ", "[\n]"])
def test_no_weighting_types_accept_empty_configs(model_type, raw):
    assert valid(row(model_type, raw)).strategy == model_type


@pytest.mark.parametrize("model_type", ["last_touch", "assisted"])
@pytest.mark.parametrize("raw", ['{"extra": 1}', "[1]", '{"a": null}', "[[]]", '{"": 0}'])
def test_no_weighting_types_reject_non_empty_configs(model_type, raw):
    assert error_of(row(model_type, raw)) == "This attribution model does not accept weighting parameters."


# ------------------------------------------------------------------------------------------
# Config decoding
# ------------------------------------------------------------------------------------------


def test_decode_config_empty_values():
    assert decode_config(None) == {}
    assert decode_config("") == {}
    assert decode_config("{}") == {}
    assert decode_config("[]") == []


def test_decode_config_arrays_are_used_as_is():
    config = {"half_life_hours": 12}
    assert decode_config(config) is config
    assert decode_config([1, 2]) == [1, 2]
    assert decode_config(b'{"a": 1}') == {"a": 1}


def test_decode_config_objects_and_lists():
    assert decode_config('{"half_life_hours": "12.9", "x": [1, {"y": null}]}') == {
        "half_life_hours": "12.9",
        "x": [1, {"y": None}],
    }
    assert decode_config("[1]") == [1]
    assert decode_config('{"a": 1, "a": 2}') == {"a": 2}  # last duplicate wins, as in PHP


@pytest.mark.parametrize("raw", ["null", "5", "1.5", '"x"', "true", "false", '"{}"'])
def test_decode_config_non_array_payload(raw):
    with pytest.raises(InvalidModelConfig, match=r"^Invalid weighting configuration payload\.$"):
        decode_config(raw)
    assert error_of(row("last_touch", raw)) == "Invalid weighting configuration payload."


@pytest.mark.parametrize(
    "raw",
    [" ", "\n\t", "{", "{bad}", "{'a': 1}", '{"a": 1,}', "[1,]", "NaN", "Infinity", "-Infinity",
     '{"a": NaN}', '{"a": Infinity}', "01", "+1", ".5", '{"a": 1} x', "\ufeff{}", "{} {}"],
)
def test_decode_config_syntax_errors(raw):
    with pytest.raises(InvalidModelConfig) as raised:
        decode_config(raw)
    assert str(raised.value) == "Invalid weighting configuration JSON: Syntax error"


def test_whitespace_only_config_is_a_syntax_error_not_empty():
    assert error_of(row("last_touch", "   ")) == "Invalid weighting configuration JSON: Syntax error"


def test_null_json_is_a_payload_error():
    assert error_of(row("last_touch", "null")) == "Invalid weighting configuration payload."
    assert error_of(row("time_decay", "null")) == "Invalid weighting configuration payload."


def test_decode_config_php_specific_errors():
    def reason(raw):
        with pytest.raises(InvalidModelConfig) as raised:
            decode_config(raw)
        return str(raised.value).removeprefix("Invalid weighting configuration JSON: ")

    assert reason('["a\x01"]') == "Control character error, possibly incorrectly encoded"
    assert reason('{"a": 1}\x00') == "Control character error, possibly incorrectly encoded"
    assert reason('["\\ud800"]') == "Single unpaired UTF-16 surrogate in unicode escape"
    assert reason(b'{"a": "\xff"}') == "Malformed UTF-8 characters, possibly incorrectly encoded"
    assert reason("[" * 513 + "]" * 513) == "Maximum stack depth exceeded"
    assert reason("[" * 100_000 + "]" * 100_000) == "Maximum stack depth exceeded"
    assert decode_config("[" * 512 + "]" * 512)  # PHP's default depth is 512: allowed
    assert decode_config('["\\ud83d\\ude00"]') == ["\U0001f600"]  # a paired surrogate is fine


def test_decode_config_big_integers_become_floats_like_php():
    assert decode_config("[9223372036854775807, -9223372036854775808]") == [2**63 - 1, -(2**63)]
    big = decode_config("[9223372036854775808, 1" + "0" * 400 + "]")
    assert big == [9.223372036854775808e18, float("inf")]
    assert all(isinstance(v, float) for v in big)


def test_decode_config_other_types_are_payload_errors():
    with pytest.raises(InvalidModelConfig, match="payload"):
        decode_config(12)


# ------------------------------------------------------------------------------------------
# PHP scalar helpers
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [0, -3, 12, 0.5, -0.0, float("inf"), "12", "-12", "+12", "12.9", "1e3", "1E-3", "1e+3", " 12", "12 ",
     "\t\n\r\v\f12\n", ".5", "1.", "-.5e2", "007", "0", "1.e3", "99999999999999999999999", "1e999"],
)
def test_php_is_numeric_true(value):
    assert php_is_numeric(value)


@pytest.mark.parametrize(
    "value",
    [True, False, None, "", " ", ".", "-", "+", "e3", "1e", "1e+", "1.5.2", "1e5e3", "1e5.5", "0x1A", "0b1",
     "1_000", "inf", "INF", "nan", "NaN", "Infinity", "12abc", "abc", "1 2", "--1", "+-1", "\u0661", "12\x00",
     "\u00a012", [1], {"a": 1}],
)
def test_php_is_numeric_false(value):
    assert not php_is_numeric(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("12.9", 12), ("1e3", 1000), ("-3.7", -3), (" 12", 12), ("12 ", 12), ("0.5", 0), ("-0.5", 0), ("007", 7),
     ("1.9999999999999999999", 2),  # parsed as a double first, as PHP does
     ("9223372036854775807", 2**63 - 1), ("9223372036854775808", 2**63 - 1), ("-9223372036854775809", -(2**63)),
     ("1e30", 2**63 - 1), ("-1e30", -(2**63)), ("1e999", 0),
     ("12abc", 12), ("abc", 0), ("", 0), ("1e", 1), ("1e+x", 1), (" .5e1x", 5),
     (12.9, 12), (-12.9, -12), (0.5, 0), (float("nan"), 0), (float("inf"), 0), (float("-inf"), 0),
     (1e19, -8446744073709551616), (-1e19, 8446744073709551616), (2.0**63, -(2**63)), (2.0**64, 0),
     (5, 5), (2**63, -(2**63)), (True, 1), (False, 0), (None, 0), ([], 0), ([0], 1)],
)
def test_php_int(value, expected):
    assert php_int(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [("0.4", 0.4), (" 0.4", 0.4), ("0.4 ", 0.4), ("1e-1", 0.1), (".5", 0.5), ("1.", 1.0), ("-2", -2.0),
     ("12abc", 12.0), ("abc", 0.0), ("0x1A", 0.0), ("inf", 0.0), ("1e999", float("inf")),
     (3, 3.0), (0.25, 0.25), (True, 1.0), (None, 0.0)],
)
def test_php_float(value, expected):
    assert php_float(value) == expected


def test_php_float_of_numeric_strings_matches_python_float():
    for text in ["0.1", "0.30000000000000004", "123456789012345678901234567890", "2.2250738585072014e-308"]:
        assert php_float(text) == float(text)


# ------------------------------------------------------------------------------------------
# The MODELS frame
# ------------------------------------------------------------------------------------------


def three_specs() -> list[ModelSpec]:
    return [
        parse_model_row(row("algorithmic", '{"config": "x"}', model_id=1, user_id=3)),
        parse_model_row(row("time_decay", {"half_life_hours": "12.9"}, model_id=2, user_id=3)),
        parse_model_row(row("time_decay", "{}", model_id=3, user_id=4)),
    ]


def test_models_frame_shape_and_dtypes():
    specs = three_specs()
    hours = [1_700_000_000 - 1_700_000_000 % 3600 + 3600 * i for i in range(4)]
    df = models_frame(specs, hours)
    assert df.height == 12
    assert df.columns == list(frames.MODELS)
    assert dict(df.schema) == frames.MODELS
    assert df["date_hour"].to_list() == [h for h in hours for _ in specs]  # hour-major
    assert df["model_id"].to_list() == [1, 2, 3] * 4


def test_models_frame_values():
    df = models_frame(three_specs(), [7200, 3600])
    first_hour = df.filter(pl.col("date_hour") == 7200).sort("model_id").to_dicts()
    assert first_hour[0]["strategy"] == "last_touch"  # algorithmic
    assert first_hour[0]["model_type"] == "algorithmic"
    assert first_hour[0]["is_valid"] is True and first_hour[0]["error"] is None
    assert first_hour[1]["half_life_hours"] == 12
    assert first_hour[1]["strategy"] == "time_decay"
    invalid = first_hour[2]
    assert invalid["is_valid"] is False
    assert invalid["error"] == "Weighting configuration required for the selected model type."
    assert invalid["strategy"] is None and invalid["half_life_hours"] is None
    assert invalid["user_id"] == 4 and invalid["created_at"] == 1_700_000_000
    assert df.filter(~pl.col("is_valid")).height == 2  # the invalid row, once per hour


def test_models_frame_position_weights_and_empty_inputs():
    spec = parse_model_row(row("position_based", {"first_touch_weight": "0.3", "last_touch_weight": 0.4}))
    df = models_frame([spec], [0])
    assert df.select("first_touch_weight", "last_touch_weight").row(0) == (0.3, 0.4)
    for specs, hours in [([], [0, 3600]), ([spec], []), ([], [])]:
        empty = models_frame(specs, hours)
        assert empty.height == 0
        assert dict(empty.schema) == frames.MODELS
