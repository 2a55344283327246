"""The keys of an ``algorithmic`` model's ``weighting_config`` that choose a data-driven model (D32).

PHP accepts any non-empty config for ``algorithmic`` and computes the model as last touch (D7).
That stays so for every config without the keys below. They are opt-in:

* ``"journey"``: ``"account_campaign"`` (PHP's journeys, D2; the default) or ``"visitor"`` (the
  converting visitor's clicks across campaigns and accounts, D32);
* ``"method"``: absent (last touch, on the model's journeys) or ``"markov"`` (removal-effect
  credit from a Markov chain over channels; requires ``"journey": "visitor"``);
* ``"channel"``: ``"account"`` (default), ``"traffic_source"`` or ``"landing_page"``: what a
  chain state is;
* ``"order"``: ``1`` (default) or ``2``;
* ``"training_days"``: whole days of paths the chain is fitted on, 1..365 (default 30);
* ``"self_loops"``: ``true`` keeps consecutive touches of one channel as a self transition
  (default ``false``: they collapse into one state).

Keys other than these are ignored, as PHP ignores the whole config. A bad value makes the model
invalid with a message naming the key and the allowed values (D6: the other models go on).
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from attribution_pipeline.errors import InvalidModelConfig

JOURNEYS = ("account_campaign", "visitor")
METHODS = ("markov",)
CHANNELS = ("account", "traffic_source", "landing_page")
ORDERS = (1, 2)
MAX_TRAINING_DAYS = 365
DEFAULT_TRAINING_DAYS = 30

MSG_JOURNEY = 'Algorithmic "journey" must be one of: account_campaign, visitor.'
MSG_METHOD = 'Algorithmic "method" must be "markov" (or absent: last touch).'
MSG_MARKOV_JOURNEY = 'Markov models require "journey": "visitor".'
MSG_CHANNEL = 'Markov "channel" must be one of: account, traffic_source, landing_page.'
MSG_ORDER = 'Markov "order" must be 1 or 2.'
MSG_TRAINING_DAYS = f'Markov "training_days" must be a whole number of days from 1 to {MAX_TRAINING_DAYS}.'
MSG_SELF_LOOPS = 'Markov "self_loops" must be true or false.'


@dataclass(frozen=True)
class AlgorithmicParams:
    """What an algorithmic config chooses; the Markov fields are set only for ``method == "markov"``."""

    journey: str = "account_campaign"
    method: str | None = None
    channel: str | None = None
    order: int | None = None
    training_days: int | None = None
    self_loops: bool | None = None

    @property
    def strategy(self) -> str:
        """The credit function: ``markov``, or ``last_touch`` as PHP computes algorithmic models (D7)."""
        return "markov" if self.method == "markov" else "last_touch"


def _whole(value: Any) -> int | None:
    """``value`` as an int when it is a JSON integer (``true`` is not), else None."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def _markov(config: Mapping[str, Any]) -> dict:
    channel = config.get("channel", "account")
    if channel not in CHANNELS:
        raise InvalidModelConfig(MSG_CHANNEL)
    order = _whole(config.get("order", 1))
    if order not in ORDERS:
        raise InvalidModelConfig(MSG_ORDER)
    days = _whole(config.get("training_days", DEFAULT_TRAINING_DAYS))
    if days is None or not 1 <= days <= MAX_TRAINING_DAYS:
        raise InvalidModelConfig(MSG_TRAINING_DAYS)
    loops = config.get("self_loops", False)
    if not isinstance(loops, bool):
        raise InvalidModelConfig(MSG_SELF_LOOPS)
    return {"channel": channel, "order": order, "training_days": days, "self_loops": loops}


def algorithmic_params(config: dict | list) -> AlgorithmicParams:
    """The data-driven choices of a (non-empty) algorithmic config; raises :class:`InvalidModelConfig`."""
    if not isinstance(config, dict):
        return AlgorithmicParams()  # a JSON list has no named keys: PHP's last touch
    journey = config.get("journey", "account_campaign")
    if journey not in JOURNEYS:
        raise InvalidModelConfig(MSG_JOURNEY)
    if "method" not in config:
        return AlgorithmicParams(journey=journey)
    if config["method"] not in METHODS:
        raise InvalidModelConfig(MSG_METHOD)
    if journey != "visitor":
        raise InvalidModelConfig(MSG_MARKOV_JOURNEY)
    return AlgorithmicParams(journey=journey, method="markov", **_markov(config))
