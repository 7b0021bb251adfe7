"""Model-parallel splits, planning layer: SBP layouts, op signatures, boxing, propagation.

Pure Python (no TensorFlow at import). The pipeline:

    spec ("dense_3:S(1)" | dict | "auto")
      -> resolve_splits(spec, variable names)        {variable: Layout}
         (or fit_memory(...) for "auto")
      -> propagate(dag, splits, devices=..., variables=..., attrs=node_attrs(graph_def))
      -> SplitPlan (split ops, boxing steps, variable shards; proto in protos/splits.proto)
"""
from __future__ import annotations

from tfplace.splits.boxing import COLLECTIVES, Boxing, boxing_routes, choose_boxing
from tfplace.splits.layout import B, P, S, Layout, parse_layout
from tfplace.splits.memory_fit import MemoryFit, MemorySplit, VariableSize, fit_memory
from tfplace.splits.node_attrs import node_attrs
from tfplace.splits.propagation import propagate
from tfplace.splits.signatures import (RULES, OpContext, Signature, find_signature, register,
                                       signatures)
from tfplace.splits.spec import parse_split_spec, resolve_splits
from tfplace.splits.splitplan import BoxingStep, SplitOp, SplitPlan, VariableShard
from tfplace.splits.summary import summary_table

__all__ = ["Layout", "B", "P", "S", "parse_layout", "parse_split_spec", "resolve_splits",
           "OpContext", "Signature", "RULES", "register", "signatures", "find_signature",
           "COLLECTIVES", "Boxing", "boxing_routes", "choose_boxing", "node_attrs", "propagate",
           "SplitPlan", "SplitOp", "BoxingStep", "VariableShard", "summary_table",
           "VariableSize", "MemorySplit", "MemoryFit", "fit_memory"]
