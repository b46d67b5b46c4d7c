"""Logs: JSON lines to `logs/bot-coordinator.log` (rotated), readable lines on stderr.

Records go through a queue to a listener thread that does the writing, so logging from the event
loop never waits on a disk or a terminal.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import queue
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from coordinator.credentials import redact

LOG_FILE = "bot-coordinator.log"
MAX_BYTES = 10 * 1024 * 1024
BACKUP_COUNT = 5

_STANDARD_ATTRS = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys() | {"message", "asctime"}
)


class JsonLinesFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, extras, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, default=str)


class _PreparingQueueHandler(logging.handlers.QueueHandler):
    """Keep the record's structure (message, exception text) for the formatters downstream."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        prepared = logging.makeLogRecord(record.__dict__)
        prepared.msg = redact(record.getMessage())  # no credential in any line
        prepared.args = None
        if record.exc_info:
            prepared.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        prepared.exc_info = None
        return prepared


def configure_logging(log_dir: Path, level: str = "INFO") -> logging.handlers.QueueListener:
    """Install the handlers on the root logger; the caller stops the returned listener."""
    log_dir.mkdir(parents=True, exist_ok=True)
    file_handler = logging.handlers.RotatingFileHandler(
        log_dir / LOG_FILE, maxBytes=MAX_BYTES, backupCount=BACKUP_COUNT, encoding="utf-8"
    )
    file_handler.setFormatter(JsonLinesFormatter())
    stderr_handler = logging.StreamHandler(sys.stderr)
    stderr_handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)-8s %(name)s: %(message)s", "%H:%M:%S")
    )
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    listener = logging.handlers.QueueListener(records, file_handler, stderr_handler)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(_PreparingQueueHandler(records))
    root.setLevel(level)
    listener.start()
    return listener


def stop_logging(listener: logging.handlers.QueueListener) -> None:
    """Write out what is queued, then close the file and stream handlers."""
    listener.stop()
    for handler in listener.handlers:
        handler.close()
