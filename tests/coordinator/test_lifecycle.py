"""The bot state machine: every (from, to) pair is either allowed or raises."""

from __future__ import annotations

from itertools import product

import pytest

from coordinator.lifecycle import (
    BOT_TRANSITIONS,
    STARTABLE,
    STOPPABLE,
    BotState,
    InvalidBotTransition,
    check_bot_transition,
)

S = BotState

# Written out independently of BOT_TRANSITIONS, so a change to the table shows up here.
ALLOWED = frozenset(
    {
        (S.STOPPED, S.STARTING),
        (S.STARTING, S.RUNNING),
        (S.STARTING, S.CRASHED),
        (S.STARTING, S.STOPPING),
        (S.RUNNING, S.CRASHED),
        (S.RUNNING, S.STOPPING),
        (S.STOPPING, S.STOPPED),
        (S.CRASHED, S.STARTING),
        (S.CRASHED, S.STOPPING),
    }
)

ALL_PAIRS = list(product(BotState, BotState))


@pytest.mark.parametrize(
    ("current", "target"), ALL_PAIRS, ids=[f"{a.value}->{b.value}" for a, b in ALL_PAIRS]
)
def test_transition_is_allowed_exactly_when_the_table_says_so(
    current: BotState, target: BotState
) -> None:
    if (current, target) in ALLOWED:
        check_bot_transition("ndax", current, target)
        return
    with pytest.raises(InvalidBotTransition) as caught:
        check_bot_transition("ndax", current, target)
    error = caught.value
    assert (error.bot, error.current, error.target) == ("ndax", current, target)
    assert str(error) == f"bot 'ndax': cannot go from {current.value} to {target.value}"


def test_every_state_has_an_entry_in_the_table() -> None:
    assert set(BOT_TRANSITIONS) == set(BotState)


def test_startable_and_stoppable_agree_with_the_transitions() -> None:
    assert {s for s in BotState if (s, S.STARTING) in ALLOWED} == STARTABLE
    assert {s for s in BotState if (s, S.STOPPING) in ALLOWED} == STOPPABLE
