"""Logging set-up: one line per event, with the structured `extra` fields as key=value."""

from __future__ import annotations

import logging
import sys

# uvicorn adds `color_message`, the same text with terminal colours.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}


class KeyValueFormatter(logging.Formatter):
    """`time level logger message key=value ...`; fields come from `extra=`."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = {k: v for k, v in record.__dict__.items() if k not in _STANDARD}
        if fields:
            line += " " + " ".join(f"{key}={value!r}" for key, value in sorted(fields.items()))
        return line


class RedactOAuthCallback(logging.Filter):
    """Keep the callback's one-time `code` and `state` out of the access log."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            path = args[2]
            if path.startswith("/v1/oauth/") and "?" in path:
                record.args = (*args[:2], path.split("?", 1)[0] + "?…", *args[3:])
        return True


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx logs every request URL at INFO, and a webhook URL may carry credentials.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("uvicorn.access").addFilter(RedactOAuthCallback())
