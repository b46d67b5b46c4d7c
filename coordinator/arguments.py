"""argparse types shared by the coordinator's commands."""

from __future__ import annotations

import argparse


def port_number(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is outside 1-65535")
    return port


def lease_seconds(text: str) -> float:
    """--lease-seconds: a number of seconds from 1 to 300 (a shorter lease could lapse between
    two renewals on a loaded machine; a longer one keeps trading stopped that long after a
    leader dies)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, got {text!r}") from None
    if not 1 <= value <= 300:
        raise argparse.ArgumentTypeError(f"must be from 1 to 300 seconds, got {text}")
    return value
