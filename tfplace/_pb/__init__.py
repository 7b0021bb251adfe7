"""Generated protobuf modules (cluster_pb2, plan_pb2); a clear error when they were never built."""
from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["cluster_pb2", "plan_pb2"]


def __getattr__(name: str) -> ModuleType:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as e:
        if e.name != f"{__name__}.{name}":
            raise
        raise ImportError(
            f"tfplace/_pb/{name}.py has not been generated from protos/*.proto; run `make protos` "
            "(or `python -m tfplace._pb.generate`, or reinstall with `pip install .`)") from None
