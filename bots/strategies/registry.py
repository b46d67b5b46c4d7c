"""The strategies a bot may name in bots.json."""

from __future__ import annotations

from bots.strategies.base import StrategySpec
from bots.strategies.dca import DcaStrategy
from bots.strategies.grid import GridStrategy
from bots.strategies.params import DcaParams, GridParams

STRATEGIES: dict[str, StrategySpec] = {
    "dca": StrategySpec("dca", DcaParams, DcaStrategy),
    "grid": StrategySpec("grid", GridParams, GridStrategy),
}
