"""Waits that follow progress, shared by the tests: poll a condition with a generous
ceiling (never a fixed sleep standing in for it), and stop an in-process run the way
terminating it does once it has got somewhere."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

T = TypeVar("T")


def wait_until(
    what: str, condition: Callable[[], T], timeout_s: float = 120.0, *, poll_s: float = 0.2
) -> T:
    """``condition()``'s first truthy value, polled every ``poll_s`` (longer for a probe
    that costs a server a query); the test fails naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll_s)
    pytest.fail(f"{what}: not within {timeout_s:g} s")


def interrupt_when(
    predicate: Callable[[], bool],
    ended: Callable[[], bool] | None = None,
    timeout_s: float = 120.0,
) -> Any:
    """A thread that SIGINTs this process (what Dagster sends a run it terminates) once
    ``predicate()`` holds, or after ``timeout_s``; never once ``ended()`` says the run
    ended by itself (the signal would then reach pytest). Its ``matched`` event tells
    whether the predicate held."""
    matched = threading.Event()

    def watch() -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                matched.set()
                break
            if ended is not None and ended():
                return
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    thread = threading.Thread(target=watch, daemon=True)
    thread.matched = matched  # type: ignore[attr-defined]
    thread.start()
    return thread
