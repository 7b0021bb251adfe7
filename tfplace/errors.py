"""The one small hierarchy of errors tfplace raises for bad input and lost workers."""
from __future__ import annotations

__all__ = ["TfplaceError", "PlanError", "ClusterError", "GraphError", "WorkerLost", "StageFailed", "BackendError", "bullets"]


class TfplaceError(Exception):
    """Base of every error tfplace raises on purpose; the CLI maps it to exit code 2."""


class PlanError(TfplaceError, ValueError):
    """A plan cannot be made or is invalid: memory, unknown placer, bad options."""


class ClusterError(TfplaceError, ValueError):
    """A cluster description is malformed or cannot be realised on this machine."""


class GraphError(TfplaceError, ValueError):
    """A graph is missing, truncated, malformed or cannot be captured."""


class WorkerLost(TfplaceError, RuntimeError):
    """A worker process died or stopped answering during a run."""


class StageFailed(TfplaceError, RuntimeError):
    """An op of one pipeline stage failed during a step; the TF error is chained as the cause."""


class BackendError(TfplaceError, RuntimeError):
    """An optional backend (Horovod, custom ops) is missing or unusable."""


def bullets(header: str, problems: list[str]) -> str:
    """One message with a bullet per problem, as every multi-problem check reports."""
    return header + "\n" + "\n".join(f"  - {p}" for p in problems)
