"""tfplace's public surface, resolved lazily so `import tfplace` never imports TensorFlow."""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

__all__ = ["Cluster", "Plan", "parallelize", "keras", "errors", "TfplaceError", "PlanError",
           "ClusterError", "GraphError", "WorkerLost", "__version__"]

# public name -> (module, attribute or None for the module itself)
_LAZY: dict[str, tuple[str, str | None]] = {
    "Cluster": ("tfplace.cluster", "Cluster"),
    "Plan": ("tfplace.plan", "Plan"),
    "parallelize": ("tfplace.api", "parallelize"),
    "keras": ("tfplace.keras", None),
    "errors": ("tfplace.errors", None),
    "TfplaceError": ("tfplace.errors", "TfplaceError"),
    "PlanError": ("tfplace.errors", "PlanError"),
    "ClusterError": ("tfplace.errors", "ClusterError"),
    "GraphError": ("tfplace.errors", "GraphError"),
    "WorkerLost": ("tfplace.errors", "WorkerLost"),
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'tfplace' has no attribute {name!r}")
    module_name, attr = _LAZY[name]
    module = importlib.import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
