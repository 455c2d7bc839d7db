"""Progress reporting that library code can call without knowing where it is shown."""

from __future__ import annotations

import sys
from typing import Protocol


class Progress(Protocol):
    """Receives progress of one long step: ``start``, then ``update`` calls, then ``close``."""

    def start(self, total: int | None, desc: str, unit: str = "B") -> None: ...
    def update(self, done: int) -> None: ...
    def close(self) -> None: ...


class NoProgress:
    """Discards progress (the library default)."""

    def start(self, total: int | None, desc: str, unit: str = "B") -> None:
        pass

    def update(self, done: int) -> None:
        pass

    def close(self) -> None:
        pass


class BarProgress:
    """A tqdm progress bar on stderr (the command line's choice)."""

    def __init__(self) -> None:
        self._bar = None
        self._done = 0

    def start(self, total: int | None, desc: str, unit: str = "B") -> None:
        from tqdm import tqdm

        self.close()
        self._done = 0
        self._bar = tqdm(total=total, desc=desc, unit=unit, unit_scale=True, file=sys.stderr,
                         disable=None, dynamic_ncols=True, leave=False)

    def update(self, done: int) -> None:
        if self._bar is not None and done > self._done:
            self._bar.update(done - self._done)
            self._done = done

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
