"""Parameter models of the built-in strategies, validated when bots.json is loaded."""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field


class DcaParams(BaseModel):
    """Dollar-cost averaging: buy `quote_amount` of quote currency every `interval_seconds`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    quote_amount: Decimal = Field(gt=0, description="quote currency spent per buy")
    interval_seconds: float = Field(gt=0, description="time between buys")


class GridParams(BaseModel):
    """A symmetric grid of limit orders around a centre price, re-centred on every fill."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    levels: int = Field(ge=1, le=50, description="orders on each side of the centre")
    spacing_pct: Decimal = Field(gt=0, lt=50, description="distance between levels, percent")
    order_amount: Decimal = Field(gt=0, description="base amount of each grid order")
