"""Keeping a known, expected log message of another library out of the console."""
from __future__ import annotations

import contextlib
import logging


class _DropMessage(logging.Filter):
    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


@contextlib.contextmanager
def without_log_message(logger_name: str, text: str):
    """While the block runs, records logged *directly* on logger ``logger_name`` ("" = the root logger) whose message
    contains ``text`` are dropped; every other record passes."""
    logger, drop = logging.getLogger(logger_name), _DropMessage(text)
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)
