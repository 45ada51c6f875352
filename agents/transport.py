"""Transport retries apart from re-prompts: what the OpenAI client retried, counted per call.

Connection errors, timeouts, 408/409/429 and 5xx answers are retried by the OpenAI client itself
(`max_retries`, exponential backoff from 0.5 s up to 8 s, honouring `Retry-After`), never turned
into a fallback to the classic operator: a rate limit must not bias an ablation against the LLM.
The client says so in one log line per retry ("Retrying request in ..."); `RetryCounter` counts
those lines for the calls of the current thread, so each agent call records how many transport
retries it took (`agent_calls.transport_retries`), apart from the re-prompts of a malformed answer.
"""
from __future__ import annotations

import logging
import threading

TRANSPORT_RETRIES = 4  # per request: with the backoff, about 8 s of waiting before a call gives up
LOGGER = "openai._base_client"  # where the client writes "Retrying request in ..."


class RetryCounter(logging.Handler):
    """Counts the OpenAI client's retry log lines, per thread."""

    def __init__(self):
        super().__init__(level=logging.INFO)
        self._local = threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("Retrying request"):
            self._local.count = getattr(self._local, "count", 0) + 1

    def reset(self) -> None:
        self._local.count = 0

    @property
    def count(self) -> int:
        return getattr(self._local, "count", 0)


_counter: RetryCounter | None = None
_lock = threading.Lock()


def retry_counter() -> RetryCounter:
    """The process's counter, attached once to the OpenAI client's logger (INFO: its retry lines are
    INFO records; nothing is printed unless the application configured logging to print them)."""
    global _counter
    with _lock:
        if _counter is None:
            _counter = RetryCounter()
            logger = logging.getLogger(LOGGER)
            logger.addHandler(_counter)
            if logger.getEffectiveLevel() > logging.INFO:
                logger.setLevel(logging.INFO)
        return _counter
