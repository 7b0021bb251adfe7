"""Performance helpers for the planning pipeline (pure Python, no dependencies)."""
from __future__ import annotations

import gc
from contextlib import contextmanager
from typing import Iterator

__all__ = ["gc_paused"]


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building large acyclic structures.

    Analysis and planning allocate millions of small lists and tuples and no reference cycles;
    the collector's repeated generation scans would otherwise double the run time.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
