"""A training run's heartbeat: tag ``heartbeat`` = "<unix time> <host> <pid>", refreshed at the start,
after every epoch and every ``EVERY_S`` seconds by the process that trains it.

It tells a live run from a dead one: ``resume=`` refuses a run whose trainer is alive (two writers on one
run), and the comparison lists a RUNNING run whose trainer is gone as stale. A trainer is alive when its
heartbeat is fresher than ``STALE_S``, except on this host, where its process is checked directly (a
SIGKILLed run is recognised at once).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass

TAG = "heartbeat"
EVERY_S = 60.0
STALE_S = 300.0


def now_tag() -> str:
    return f"{time.time():.0f} {socket.gethostname()} {os.getpid()}"


@dataclass
class Beat:
    at: float
    host: str
    pid: int

    @property
    def age_s(self) -> float:
        return max(0.0, time.time() - self.at)

    @property
    def alive(self) -> bool:
        if self.host == socket.gethostname():
            return _process_exists(self.pid)
        return self.age_s < STALE_S

    def describe(self) -> str:
        return f"process {self.pid} on host {self.host} (heartbeat {self.age_s:.0f} s ago)"


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def of(run) -> Beat | None:
    """The run's last heartbeat, None when it has none (or an unreadable one)."""
    parts = run.data.tags.get(TAG, "").split()
    try:
        return Beat(float(parts[0]), parts[1], int(parts[2])) if len(parts) == 3 else None
    except ValueError:
        return None


class Heartbeat:
    """Refreshes the tag of ``run_ids`` now, on ``beat()``, and every ``EVERY_S`` seconds until ``stop()``."""

    def __init__(self, client, run_ids: list[str], every_s: float = EVERY_S):
        self.client, self.run_ids, self.every_s = client, list(run_ids), every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> Heartbeat:
        self.beat()
        self._thread.start()
        return self

    def beat(self) -> None:
        tag = now_tag()
        for run_id in self.run_ids:
            try:
                self.client.set_tag(run_id, TAG, tag)
            except Exception:  # a missed beat is not worth a failed run; the next one retries
                pass

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            self.beat()

    def stop(self) -> None:
        self._stop.set()
