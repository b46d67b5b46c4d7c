"""The bot-coordinator process: supervision, persistence, control plane, operator tools."""

__version__ = "0.1.0"
