"""Logging set-up: human text or one JSON object per line, on stderr. The access log
(service/http/request_context.py) writes its lines in the same two shapes."""

from __future__ import annotations

import logging
import time

import orjson


def utc_time(created: float) -> str:
    """2026-12-03T12:36:39.523Z: the JSON lines' time."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created * 1000) % 1000:03d}Z"


def local_time(created: float) -> str:
    """2026-12-03 12:36:39,523: the text lines' time (logging's default asctime)."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(created)) + f",{int(created * 1000) % 1000:03d}"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": utc_time(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


def configure_logging(log_format: str, level: str) -> None:
    handler = logging.StreamHandler()
    text = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler.setFormatter(JsonFormatter() if log_format == "json" else text)
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
