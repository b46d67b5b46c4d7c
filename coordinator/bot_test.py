"""`bot-coordinator --bot NAME --test [--ticks N] [--read-only]`: one bot, by itself.

The runbook's "test in isolation" step: the bot runs in paper mode (or read-only) against a
throw-away journal in a temporary directory, so a test never touches the real journal, the real
kill switch or a real account. It runs N ticks at the bot's own interval, under the same gates as
always, then prints what happened: orders, fills, refusals by reason, errors.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from coordinator.config.models import BotConfig, BotMode, BotsConfig, CoordinatorConfig
from coordinator.lifecycle import BotState
from coordinator.runtime import Coordinator


def with_only(config: CoordinatorConfig, bot: BotConfig) -> CoordinatorConfig:
    return config.model_copy(update={"bots": BotsConfig(version=1, bots=(bot,))})


def with_mode(config: CoordinatorConfig, mode: BotMode) -> CoordinatorConfig:
    """The same config with every bot in `mode` (used by --read-only)."""
    bots = tuple(bot.model_copy(update={"mode": mode}) for bot in config.bots.bots)
    return config.model_copy(update={"bots": BotsConfig(version=1, bots=bots)})


async def run_bot_test(
    config: CoordinatorConfig, name: str, ticks: int, read_only: bool, scratch: Path
) -> dict[str, Any]:
    """Run the bot alone in `scratch`, an empty directory the caller makes and removes (both
    blocking calls, kept off the event loop)."""
    bot = config.bots.get(name)
    if bot is None:
        raise LookupError(f"no bot named {name!r}; configured bots: {', '.join(config.bots.names)}")
    mode = BotMode.READ_ONLY if read_only else BotMode.PAPER
    test_config = with_only(config, bot.model_copy(update={"mode": mode}))
    coordinator = await Coordinator.open(test_config, scratch)
    try:
        runner = await coordinator.supervisor.start(name)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ticks * bot.tick_interval_seconds + 10
        while runner.stats.ticks + runner.stats.skipped_ticks < ticks:
            if loop.time() > deadline or runner.state is BotState.CRASHED:
                break
            await asyncio.sleep(min(0.05, bot.tick_interval_seconds / 4))
        status = coordinator.bot_status(runner)
    finally:
        await coordinator.close("bot test finished", grace_seconds=1.0)
    return {
        "bot": name,
        "mode": mode.value,
        "ticks": status["ticks"],
        "skipped_ticks": status["skipped_ticks"],
        "orders": status["orders"],
        "fills": status["fills"],
        "refusals": status["refusals"],
        "order_errors": status["order_errors"],
        "last_refusal": status["last_refusal"],
        "error": status["error"],
        "state_at_end": status["state"],
        "position": status["position"],
        "pnl": status["pnl"],
    }


def print_summary(summary: dict[str, Any]) -> None:
    lines = [
        f"bot {summary['bot']} ({summary['mode']}, throw-away journal): "
        f"{summary['ticks']} ticks ({summary['skipped_ticks']} skipped)",
        f"  orders {summary['orders']}   fills {summary['fills']}",
        f"  refusals {summary['refusals'] or 'none'}",
        f"  order errors {summary['order_errors'] or 'none'}",
        f"  position {summary['position']['base']}   pnl {summary['pnl']['total']:.2f} "
        f"{summary['pnl']['currency']}",
    ]
    if summary["last_refusal"]:
        lines.append(f"  last refusal: {summary['last_refusal']}")
    if summary["error"]:
        lines.append(f"  ERROR: {summary['error']}")
    print("\n".join(lines), file=sys.stderr)
    print(json.dumps(summary))
