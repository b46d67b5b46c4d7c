"""The bot lifecycle as an explicit state machine: one table, and an impossible move raises."""

from __future__ import annotations

import enum
from collections.abc import Mapping


class BotState(enum.StrEnum):
    STOPPED = "stopped"
    STARTING = "starting"  # task running, first healthy tick not yet seen
    RUNNING = "running"
    STOPPING = "stopping"  # ticks ending, open orders being cancelled
    CRASHED = "crashed"  # the bot raised; waiting to restart, or given up (crash loop)


BOT_TRANSITIONS: Mapping[BotState, frozenset[BotState]] = {
    BotState.STOPPED: frozenset({BotState.STARTING}),
    BotState.STARTING: frozenset({BotState.RUNNING, BotState.CRASHED, BotState.STOPPING}),
    BotState.RUNNING: frozenset({BotState.CRASHED, BotState.STOPPING}),
    BotState.STOPPING: frozenset({BotState.STOPPED}),
    BotState.CRASHED: frozenset({BotState.STARTING, BotState.STOPPING}),
}

STARTABLE = frozenset({BotState.STOPPED, BotState.CRASHED})
STOPPABLE = frozenset({BotState.STARTING, BotState.RUNNING, BotState.CRASHED})


class InvalidBotTransition(Exception):
    def __init__(self, bot: str, current: BotState, target: BotState) -> None:
        super().__init__(f"bot {bot!r}: cannot go from {current.value} to {target.value}")
        self.bot = bot
        self.current = current
        self.target = target


def check_bot_transition(bot: str, current: BotState, target: BotState) -> None:
    if target not in BOT_TRANSITIONS[current]:
        raise InvalidBotTransition(bot, current, target)
