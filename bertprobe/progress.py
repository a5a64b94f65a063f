"""Progress bars that suit both a terminal and a log file."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress_bar(iterable: Iterable[T], description: str, enabled: bool = True, leave: bool = False) -> Iterable[T]:
    """A tqdm bar on the main process; redrawn at most every 30 s when stderr is not a
    terminal, so a log file gets a few lines per epoch rather than one per batch."""
    interactive = sys.stderr.isatty()
    return tqdm(
        iterable,
        desc=description,
        unit="batch",
        leave=leave,
        disable=not enabled,
        mininterval=0.1 if interactive else 30.0,
        dynamic_ncols=interactive,
    )
