"""Validation of the data-driven keys of an algorithmic model's config (D32), and what stays as PHP does."""

import json

import polars as pl
import pytest

from attribution_pipeline.core import frames
from attribution_pipeline.core.model_rules import models_frame, parse_model_row


def spec_of(config):
    return parse_model_row({"model_id": 5, "user_id": 2, "model_name": "DDA", "model_slug": "dda",
                            "model_type": "algorithmic", "weighting_config": json.dumps(config),
                            "created_at": 1})


def test_an_algorithmic_model_without_method_is_last_touch_on_php_journeys():
    spec = spec_of({"anything": 1})  # PHP accepts any non-empty config (D7)
    assert spec.is_valid and spec.strategy == "last_touch" and spec.journey == "account_campaign"
    assert spec.markov_channel is None and spec.markov_order is None
    visitor = spec_of({"journey": "visitor"})
    assert visitor.is_valid and visitor.strategy == "last_touch" and visitor.journey == "visitor"


def test_markov_defaults_and_explicit_values():
    spec = spec_of({"journey": "visitor", "method": "markov"})
    assert (spec.strategy, spec.journey, spec.markov_channel, spec.markov_order, spec.training_days,
            spec.self_loops) == ("markov", "visitor", "account", 1, 30, False)
    spec = spec_of({"journey": "visitor", "method": "markov", "channel": "traffic_source", "order": 2,
                    "training_days": 7, "self_loops": True, "note": "ignored"})
    assert (spec.markov_channel, spec.markov_order, spec.training_days, spec.self_loops) == (
        "traffic_source", 2, 7, True)


@pytest.mark.parametrize(("config", "message"), [
    ({"journey": "person"}, 'Algorithmic "journey" must be one of: account_campaign, visitor.'),
    ({"journey": "visitor", "method": "shapley"}, 'Algorithmic "method" must be "markov" (or absent: last touch).'),
    ({"method": "markov"}, 'Markov models require "journey": "visitor".'),
    ({"journey": "account_campaign", "method": "markov"}, 'Markov models require "journey": "visitor".'),
    ({"journey": "visitor", "method": "markov", "channel": "campaign"},
     'Markov "channel" must be one of: account, traffic_source, landing_page.'),
    ({"journey": "visitor", "method": "markov", "order": 3}, 'Markov "order" must be 1 or 2.'),
    ({"journey": "visitor", "method": "markov", "order": "2"}, 'Markov "order" must be 1 or 2.'),
    ({"journey": "visitor", "method": "markov", "order": True}, 'Markov "order" must be 1 or 2.'),
    ({"journey": "visitor", "method": "markov", "training_days": 0},
     'Markov "training_days" must be a whole number of days from 1 to 365.'),
    ({"journey": "visitor", "method": "markov", "training_days": 2.5},
     'Markov "training_days" must be a whole number of days from 1 to 365.'),
    ({"journey": "visitor", "method": "markov", "self_loops": "yes"}, 'Markov "self_loops" must be true or false.'),
])
def test_bad_values_are_named_and_only_that_model_is_invalid(config, message):
    spec = spec_of(config)
    assert not spec.is_valid and spec.strategy is None and spec.error == message


def test_the_models_frame_carries_the_markov_parameters():
    specs = [spec_of({"journey": "visitor", "method": "markov", "order": 2}), spec_of({"x": 1})]
    df = models_frame(specs, [3600])
    assert dict(df.schema) == frames.MODELS
    assert df.select("strategy", "journey", "markov_order", "training_days").rows() == [
        ("markov", "visitor", 2, 30), ("last_touch", "account_campaign", None, None)]
    assert df.filter(pl.col("strategy") == "markov").get_column("self_loops").to_list() == [False]
