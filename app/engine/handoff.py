"""Handing results from the worker thread to the event loop: asyncio's queues and futures are not thread-safe,
so the worker only schedules callbacks (`loop.call_soon_threadsafe`) that touch them on the loop's own thread."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from .events import Event


def call_soon(loop: asyncio.AbstractEventLoop, fn: Callable, *args: Any) -> None:
    try:
        loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:  # that event loop is closed: whoever waited there is gone
        pass


def deliver(events: list[tuple[asyncio.Queue, Event]]) -> None:
    """On the event loop: put each event into its stream's queue."""
    for outbox, event in events:
        outbox.put_nowait(event)


def settle(future: asyncio.Future, result: Any, error: BaseException | None) -> None:
    """On the event loop: a job's outcome into its future, unless its awaiter has gone."""
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
