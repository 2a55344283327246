"""What the synthetic data generator makes: its configuration and the constants it shares."""

from dataclasses import dataclass

HOUR = 3600
DAY = 86400
#: The engine's default journey window and touch cap (D2); boundary clicks use the window.
JOURNEY_LOOKBACK_SECONDS = 30 * DAY
JOURNEY_TOUCH_CAP = 25
#: First click id: above 2**32 so every consumer must carry click ids as 64-bit integers.
CLICK_ID_BASE = 2**32 + 1_000_001

MODEL_TYPES = ("last_touch", "time_decay", "position_based", "assisted", "algorithmic", "first_touch", "linear")

SPARSE, LIGHT, DENSE = 0, 1, 2
CANDIDATE_BACK = 3 * DAY  # converting clicks lie at most this long before `start`
HOURS_DELAY_MAX = 8 * HOUR
DAYS_DELAY_MAX = 3 * DAY - 1
DEEP_DELAY_MAX = 7 * DAY
UNITS = 100_000  # DECIMAL(_, 5) units
CPC_MIN, CPC_MAX = 5_000, 250_000  # 0.05 .. 2.5


@dataclass(frozen=True, kw_only=True)
class GeneratorConfig:
    """What to generate. Counts scale with ``scale`` unless given explicitly."""

    seed: int = 202
    start: int  # epoch seconds, first hour of conversions (floored to the hour)
    hours: int = 72  # conversions fall in [start, start + hours*3600)
    lookback_days: int = 30  # clicks start lookback_days before `start` so journeys are full
    scale: float = 1.0  # multiplies users/campaigns/clicks/conversions counts below
    users: int = 4
    campaigns_per_user: int = 5
    clicks: int | None = None  # total 202_clicks rows; default round(20_000 * scale)
    conversions: int | None = None  # total 202_conversion_logs rows; default round(1_000 * scale)
    models: str = "all"  # "all" | "main6" | "none"
    invalid_models: bool = True  # with models="all": a few invalid model rows (D6)
    settings: bool = True  # 202_attribution_settings rows (spec §5.1)
    anomalies: bool = True  # D15 duplicates, D16 orphans / soft deletes / a deleted user

    def __post_init__(self):
        if self.hours < 1:
            raise ValueError("hours must be >= 1")
        if self.lookback_days < 0:
            raise ValueError("lookback_days must be >= 0")
        if not self.scale > 0:
            raise ValueError("scale must be > 0")
        if self.users < 1 or self.campaigns_per_user < 1:
            raise ValueError("users and campaigns_per_user must be >= 1")
        if self.models not in ("all", "main6", "none"):
            raise ValueError(f"models must be 'all', 'main6' or 'none', not {self.models!r}")
        if self.clicks is not None and self.clicks < 0 or self.conversions is not None and self.conversions < 0:
            raise ValueError("clicks and conversions must be >= 0")
        earliest = self.start_hour - max(self.lookback_days * DAY, JOURNEY_LOOKBACK_SECONDS + CANDIDATE_BACK + 1)
        if earliest < 0:
            raise ValueError("start is too early: clicks before it would have negative times")
        if self.n_conversions > 0 and self.n_clicks < 100:
            raise ValueError("at least 100 clicks are needed to generate conversions")

    @property
    def start_hour(self) -> int:
        return self.start // HOUR * HOUR

    @property
    def end(self) -> int:
        """End (exclusive) of the conversion window."""
        return self.start_hour + self.hours * HOUR

    @property
    def n_users(self) -> int:
        return max(1, round(self.users * self.scale))

    @property
    def n_clicks(self) -> int:
        return self.clicks if self.clicks is not None else round(20_000 * self.scale)

    @property
    def n_conversions(self) -> int:
        return self.conversions if self.conversions is not None else round(1_000 * self.scale)
