"""fit's JSONL training log (``log_path``): one JSON object a line."""
from __future__ import annotations

import json
import os
import time

from .. import fileio


def _truncate_log(path: str, step: int) -> None:
    """Drop JSONL lines of steps after ``step`` (written by a run that was later resumed)."""
    if not os.path.isfile(path):
        return
    keep = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                if json.loads(line).get("step", 0) <= step:
                    keep.append(line if line.endswith("\n") else line + "\n")
            except json.JSONDecodeError:
                continue
    fileio.atomic_write_text(path, "".join(keep))


class _JsonlLog:
    """The log file of one fit call; a no-op when ``path`` is None or ``enabled`` is False (the
    ranks other than 0). Opening it starts a fresh run's log anew; a run resumed after global
    step ``resumed_at`` keeps the lines up to that step (a later line came from the
    interrupted run and is dropped; unreadable lines too) and appends. :meth:`write` adds one
    line (the record plus a ``"time"``) and flushes it. Use as a context manager (closes it)."""

    def __init__(self, path: str | None, *, resumed_at: int | None = None, enabled: bool = True):
        self._fh = None
        if path is None or not enabled:
            return
        if resumed_at is not None:
            _truncate_log(path, resumed_at)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self._fh = open(path, "a" if resumed_at is not None else "w", encoding="utf-8")

    def __bool__(self) -> bool:
        """Whether lines are written."""
        return self._fh is not None

    def write(self, record: dict) -> None:
        if self._fh is not None:
            self._fh.write(json.dumps({**record, "time": time.time()}) + "\n")
            self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> "_JsonlLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
