"""Runtime: executes a rewritten GraphDef on the devices it names; decides nothing."""
from __future__ import annotations

__all__: list[str] = []
