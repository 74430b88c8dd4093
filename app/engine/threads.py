"""How many torch threads the worker uses for its next phase. No result depends on it: the kernels give the
same bits at any thread count (tests/test_engine.py); only speed does (docs/serving.md)."""

from __future__ import annotations

import os
import threading
import time

import torch

# The event loop's share of one core (its CPU time over the last LOOP_WINDOW_S) above which the worker leaves it
# that core whatever the step: a client hammering cheap requests (answers kept, health checks) keeps it busy, and
# torch's spinning threads collapse when one of them shares a core with it (a 19,000-character score beside a
# stream of kept predictions ran at 2% of its speed with every core, docs/serving.md).
LOOP_BUSY = 0.25
LOOP_WINDOW_S = 0.05


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class ThreadPolicy:
    """`forced`: LYRICIST_THREADS, when set; None: chosen per phase (`threads_for`)."""

    def __init__(self, forced: int | None = None):
        self.forced = forced
        self.cores = available_cores()
        self.now = 0  # what the worker thread runs with
        self._loop_clock: int | None = None  # the event loop thread's CPU clock (LOOP_BUSY)
        self._loop_cpu = self._loop_checked = 0.0
        self._loop_busy = False

    def watch_loop(self) -> None:
        """Remember the calling thread (the event loop's) to watch its CPU time; Linux only, else nothing."""
        if self._loop_clock is None and hasattr(time, "pthread_getcpuclockid"):
            try:
                clock = time.pthread_getcpuclockid(threading.get_ident())
                # the first window starts now, not at the thread's start (its past CPU time is not load)
                self._loop_cpu, self._loop_checked = time.clock_gettime(clock), time.monotonic()
                self._loop_clock = clock
            except OSError:
                pass

    def event_loop_busy(self) -> bool:
        now = time.monotonic()
        if self._loop_clock is not None and now - self._loop_checked >= LOOP_WINDOW_S:
            try:
                cpu = time.clock_gettime(self._loop_clock)
            except OSError:  # that thread has ended (a test's loop); the next caller's is watched
                self._loop_clock, self._loop_busy = None, False
                return False
            self._loop_busy = (cpu - self._loop_cpu) > LOOP_BUSY * (now - self._loop_checked)
            self._loop_cpu, self._loop_checked = cpu, now
        return self._loop_busy

    def threads_for(self) -> int:
        """Torch threads for the next phase: LYRICIST_THREADS when set; else every core, but all cores but one
        while the event loop is busy (LOOP_BUSY: streams sending a token each, a flood of cheap requests), since
        torch's threads spin while they wait for each other and one descheduled by the event loop stalls the
        rest. Measured against the other rules tried in docs/serving.md ("Threads by the work at hand")."""
        if self.forced is not None:
            return self.forced
        if self.event_loop_busy():
            return max(1, self.cores - 1)
        return self.cores

    def use(self) -> None:
        """Set the worker thread's own OpenMP team for the next phase (a per-thread setting)."""
        count = self.threads_for()
        if count != self.now:
            torch.set_num_threads(count)
            self.now = count
