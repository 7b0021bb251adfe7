"""tfplace.splits.signatures and its rules: every supported op's signatures, by exact value."""
from __future__ import annotations

import pytest

from tfplace.errors import PlanError
from tfplace.splits import RULES, B, P, S, OpContext, find_signature, signatures
from tfplace.splits.rules_linear import parse_equation
from tfplace.splits.rules_shape import reshape_axis
from tfplace.splits.signatures import fits, format_signature


def sigs(op: str, ins, outs, attrs=None, consts=(), **kw) -> list[str]:
    ctx = OpContext(f"n/{op}", op, tuple(ins), tuple(outs), attrs or {}, tuple(consts), **kw)
    return [format_signature(op, s) for s in signatures(ctx)]


def test_matmul_examples_from_the_issue() -> None:
    ctx = OpContext("dense_3/MatMul", "MatMul", ((16, 12), (12, 32)), ((16, 32),))
    assert find_signature(ctx, ["B", "S(1)"]).outputs == (S(1),)
    assert find_signature(ctx, [S(1), S(0)]).outputs == (P,)
    assert find_signature(ctx, [S(0), B]).outputs == (S(0),)
    assert find_signature(ctx, [S(1), S(0)]).compute_share(4) == 0.25
    assert find_signature(ctx, [P, B]).compute_share(4) == 1.0
    assert sigs("MatMul", [(16, 12), (12, 32)], [(16, 32)]) == [
        "MatMul(S(0), B) -> S(0)", "MatMul(B, S(1)) -> S(1)", "MatMul(S(1), S(0)) -> P",
        "MatMul(P, B) -> P", "MatMul(B, P) -> P", "MatMul(B, B) -> B"]


def test_matmul_gradients_are_transposed_matmuls() -> None:
    # dx = dy . W^T: W [12, 32] is read with transpose_b
    assert sigs("MatMul", [(16, 32), (12, 32)], [(16, 12)], {"transpose_b": True})[:3] == [
        "MatMul(S(0), B) -> S(0)", "MatMul(B, S(0)) -> S(1)", "MatMul(S(1), S(1)) -> P"]
    # dW = x^T . dy: x [16, 12] is read with transpose_a; the batch contracts to P
    assert sigs("MatMul", [(16, 12), (16, 32)], [(12, 32)], {"transpose_a": True})[:3] == [
        "MatMul(S(1), B) -> S(0)", "MatMul(B, S(1)) -> S(1)", "MatMul(S(0), S(0)) -> P"]


def test_no_signature_names_the_op_and_what_it_supports() -> None:
    ctx = OpContext("dense_3/BiasAdd", "BiasAdd", ((16, 32), (32,)), ((16, 32),))
    with pytest.raises(PlanError) as e:
        find_signature(ctx, [P, B])
    assert str(e.value) == (
        "op 'dense_3/BiasAdd' (BiasAdd) has no signature for inputs (P, B); it supports: "
        "BiasAdd(S(0), B) -> S(0); BiasAdd(S(1), S(0)) -> S(1); BiasAdd(P, P) -> P; "
        "BiasAdd(B, B) -> B. Split its inputs another way, or leave them unsplit (B)")
    soft = OpContext("attn/Softmax", "Softmax", ((16, 8, 10),), ((16, 8, 10),))
    with pytest.raises(PlanError, match=r"\(Softmax\) has no signature for inputs \(S\(2\)\); "
                                        r"it supports: Softmax\(S\(0\)\) -> S\(0\); "
                                        r"Softmax\(S\(1\)\) -> S\(1\); Softmax\(B\) -> B\."):
        find_signature(soft, [S(2)])
    # with a device count, splits that do not divide evenly are not offered
    with pytest.raises(PlanError, match=r"it supports: .*MatMul\(B, S\(1\)\) -> S\(1\)"):
        find_signature(OpContext("m", "MatMul", ((6, 12), (12, 32)), ((6, 32),)), [S(0), B], 4)


def test_batch_matmul_broadcasts_batch_dims() -> None:
    assert sigs("BatchMatMulV2", [(4, 8, 16), (16, 32)], [(4, 8, 32)]) == [
        "BatchMatMulV2(S(0), B) -> S(0)", "BatchMatMulV2(S(1), B) -> S(1)",
        "BatchMatMulV2(B, S(1)) -> S(2)", "BatchMatMulV2(S(2), S(0)) -> P",
        "BatchMatMulV2(P, B) -> P", "BatchMatMulV2(B, P) -> P", "BatchMatMulV2(B, B) -> B"]
    assert sigs("BatchMatMulV2", [(4, 8, 16), (1, 32, 16)], [(4, 8, 32)],
                {"adj_y": True})[:4] == [
        "BatchMatMulV2(S(0), B) -> S(0)", "BatchMatMulV2(S(1), B) -> S(1)",
        "BatchMatMulV2(B, S(1)) -> S(2)", "BatchMatMulV2(S(2), S(2)) -> P"]


def test_einsum_splits_batch_free_and_contracted_indices() -> None:
    assert sigs("Einsum", [(2, 3, 4), (4, 5)], [(2, 3, 5)], {"equation": "abc,cd->abd"}) == [
        "Einsum(S(0), B) -> S(0)", "Einsum(S(1), B) -> S(1)", "Einsum(B, S(1)) -> S(2)",
        "Einsum(S(2), S(0)) -> P", "Einsum(P, B) -> P", "Einsum(B, P) -> P",
        "Einsum(B, B) -> B"]
    assert parse_equation("...ij,jk->...ik", [4, 2]) == (["abij", "jk"], "abik")
    assert parse_equation("bij->", [3]) == (["bij"], "")
    assert sigs("Einsum", [(2, 3)], [()], {"equation": "ij->"}) == [
        "Einsum(S(0)) -> P", "Einsum(S(1)) -> P", "Einsum(P) -> P", "Einsum(B) -> B"]
    assert sigs("Einsum", [(2, 3)], [(2,)], {"equation": "garbage"}) == [
        "Einsum(B) -> B", "Einsum(P) -> P"]


def test_conv2d_splits_batch_or_output_channels() -> None:
    assert sigs("Conv2D", [(8, 12, 12, 3), (3, 3, 3, 16)], [(8, 10, 10, 16)]) == [
        "Conv2D(S(0), B) -> S(0)", "Conv2D(B, S(3)) -> S(3)", "Conv2D(S(3), S(2)) -> P",
        "Conv2D(P, B) -> P", "Conv2D(B, P) -> P", "Conv2D(B, B) -> B"]
    assert sigs("Conv2D", [(8, 3, 12, 12), (3, 3, 3, 16)], [(8, 16, 10, 10)],
                {"data_format": "NCHW"})[:3] == [
        "Conv2D(S(0), B) -> S(0)", "Conv2D(B, S(3)) -> S(1)", "Conv2D(S(1), S(2)) -> P"]
    assert sigs("Conv2DBackpropInput", [(4,), (3, 3, 3, 16), (8, 10, 10, 16)],
                [(8, 12, 12, 3)]) == [
        "Conv2DBackpropInput(B, B, S(0)) -> S(0) [shard_shape_args]",
        "Conv2DBackpropInput(B, S(2), B) -> S(3) [shard_shape_args]",
        "Conv2DBackpropInput(B, S(3), S(3)) -> P", "Conv2DBackpropInput(B, P, B) -> P",
        "Conv2DBackpropInput(B, B, P) -> P", "Conv2DBackpropInput(B, B, B) -> B"]
    assert sigs("Conv2DBackpropFilter", [(8, 12, 12, 3), (4,), (8, 10, 10, 16)],
                [(3, 3, 3, 16)])[:3] == [
        "Conv2DBackpropFilter(S(3), B, B) -> S(2) [shard_shape_args]",
        "Conv2DBackpropFilter(B, B, S(3)) -> S(3) [shard_shape_args]",
        "Conv2DBackpropFilter(S(0), B, S(0)) -> P"]


def test_bias_add_and_its_gradient() -> None:
    assert sigs("BiasAdd", [(8, 10, 10, 16), (16,)], [(8, 10, 10, 16)])[:4] == [
        "BiasAdd(S(0), B) -> S(0)", "BiasAdd(S(1), B) -> S(1)", "BiasAdd(S(2), B) -> S(2)",
        "BiasAdd(S(3), S(0)) -> S(3)"]
    assert sigs("BiasAddGrad", [(16, 32)], [(32,)]) == [
        "BiasAddGrad(S(0)) -> P", "BiasAddGrad(S(1)) -> S(0)", "BiasAddGrad(P) -> P",
        "BiasAddGrad(B) -> B"]


def test_elementwise_broadcasting_and_linearity() -> None:
    assert sigs("AddV2", [(16, 32), (32,)], [(16, 32)]) == [
        "AddV2(S(0), B) -> S(0)", "AddV2(S(1), S(0)) -> S(1)", "AddV2(P, P) -> P",
        "AddV2(B, B) -> B"]
    assert sigs("Mul", [(16, 32), ()], [(16, 32)]) == [
        "Mul(S(0), B) -> S(0)", "Mul(S(1), B) -> S(1)", "Mul(P, B) -> P", "Mul(B, P) -> P",
        "Mul(B, B) -> B"]
    assert sigs("Sub", [(16, 1), (16, 4)], [(16, 4)]) == [
        "Sub(S(0), S(0)) -> S(0)", "Sub(B, S(1)) -> S(1)", "Sub(P, P) -> P", "Sub(B, B) -> B"]
    assert sigs("Relu", [(16, 32)], [(16, 32)]) == [
        "Relu(S(0)) -> S(0)", "Relu(S(1)) -> S(1)", "Relu(B) -> B"]
    assert sigs("ReluGrad", [(16, 32), (16, 32)], [(16, 32)])[2:] == [
        "ReluGrad(P, B) -> P", "ReluGrad(B, B) -> B"]
    assert sigs("TanhGrad", [(16, 32), (16, 32)], [(16, 32)])[2] == "TanhGrad(B, P) -> P"
    assert sigs("Tanh", [()], [()]) == ["Tanh(B) -> B"]
    assert sigs("AddN", [(4, 8)] * 3, [(4, 8)]) == [
        "AddN(S(0), S(0), S(0)) -> S(0)", "AddN(S(1), S(1), S(1)) -> S(1)",
        "AddN(P, P, P) -> P", "AddN(B, B, B) -> B"]


def test_reductions() -> None:
    assert sigs("Sum", [(16, 6, 8), (1,)], [(16, 8)], consts=[None, (1,)]) == [
        "Sum(S(0), B) -> S(0)", "Sum(S(1), B) -> P", "Sum(S(2), B) -> S(1)", "Sum(P, B) -> P",
        "Sum(B, B) -> B"]
    assert sigs("Mean", [(16, 6, 8), (1,)], [(16, 1, 8)], {"keep_dims": True},
                consts=[None, (-2,)])[:3] == [
        "Mean(S(0), B) -> S(0)", "Mean(S(1), B) -> P [global_count]", "Mean(S(2), B) -> S(2)"]
    assert sigs("Max", [(16, 6), (1,)], [(16,)], consts=[None, (1,)]) == [
        "Max(S(0), B) -> S(0)", "Max(B, B) -> B"]
    # axes from BroadcastGradientArgs: unchanged shape reduces nothing, a suffix the leading axes
    assert sigs("Sum", [(16, 16, 16), (-1,)], [(16, 16)],
                in_ops=("MatMul", "BroadcastGradientArgs"))[:3] == [
        "Sum(S(0), B) -> P", "Sum(S(1), B) -> S(0)", "Sum(S(2), B) -> S(1)"]
    assert sigs("Sum", [(4, 8), (-1,)], [(4, 8)])[:2] == ["Sum(S(0), B) -> S(0)",
                                                         "Sum(S(1), B) -> S(1)"]
    assert sigs("Sum", [(16, 16, 16), (-1,)], [(16, 16)]) == ["Sum(P, B) -> P", "Sum(B, B) -> B"]


def test_gather_and_its_segment_sum_gradient() -> None:
    assert sigs("GatherV2", [(50, 8), (16, 6), ()], [(16, 6, 8)], consts=[None, None, (0,)]) == [
        "GatherV2(S(0), B, B) -> P [masked_lookup]", "GatherV2(S(1), B, B) -> S(2)",
        "GatherV2(B, S(0), B) -> S(0)", "GatherV2(B, S(1), B) -> S(1)",
        "GatherV2(P, B, B) -> P", "GatherV2(B, B, B) -> B"]
    assert sigs("GatherV2", [(50, 8), (16, 6), ()], [(16, 6, 8)], consts=[None, None, (1,)]) == [
        "GatherV2(B, B, B) -> B"]
    assert sigs("ResourceGather", [(), (16, 6)], [(16, 6, 8)], in_dtypes=(20, 3))[:2] == [
        "ResourceGather(S(0), B) -> P [masked_lookup]", "ResourceGather(S(1), B) -> S(2)"]
    assert sigs("ResourceScatterAdd", [(), (12,), (12, 8)], [], in_dtypes=(20, 3, 1)) == [
        "ResourceScatterAdd(S(0), B, B) -> () [masked_segments]",
        "ResourceScatterAdd(S(1), B, S(1)) -> ()", "ResourceScatterAdd(B, B, B) -> ()"]
    assert sigs("UnsortedSegmentSum", [(96, 8), (96,), ()], [(50, 8)]) == [
        "UnsortedSegmentSum(S(1), B, B) -> S(1)", "UnsortedSegmentSum(S(0), S(0), B) -> P",
        "UnsortedSegmentSum(P, B, B) -> P", "UnsortedSegmentSum(B, B, B) -> B",
        "UnsortedSegmentSum(B, B, B) -> S(0) [masked_segments]"]


def test_variables_and_optimizer_updates() -> None:
    assert sigs("ReadVariableOp", [()], [(12, 32)], in_dtypes=(20,)) == [
        "ReadVariableOp(S(0)) -> S(0)", "ReadVariableOp(S(1)) -> S(1)",
        "ReadVariableOp(B) -> B"]
    assert sigs("AssignSubVariableOp", [(), (12, 32)], [], in_dtypes=(20, 1)) == [
        "AssignSubVariableOp(S(0), S(0)) -> ()", "AssignSubVariableOp(S(1), S(1)) -> ()",
        "AssignSubVariableOp(B, B) -> ()"]
    adam = sigs("ResourceApplyAdam", [(), (), (), (), (), (), (), (), (), (12, 32)], [],
                in_dtypes=(20, 20, 20) + (1,) * 7)
    assert adam[1] == "ResourceApplyAdam(S(1), S(1), S(1), B, B, B, B, B, B, S(1)) -> ()"


def test_shape_ops() -> None:
    assert reshape_axis((16, 6, 8), (96, 8), 0) == 0
    assert reshape_axis((16, 6, 8), (96, 8), 2) == 1
    assert reshape_axis((16, 6, 8), (96, 8), 1) is None
    assert reshape_axis((16, 2, 8), (16, 16), 1) == 1
    assert reshape_axis((96, 8), (16, 6, 8), 0) == 0
    assert reshape_axis((16, 8), (16, 1, 8), 1) == 2
    assert reshape_axis((-1, 8), (-1, 2, 4), 0) == 0
    assert sigs("Reshape", [(16, 6, 8), (2,)], [(96, 8)]) == [
        "Reshape(S(0), B) -> S(0) [shard_shape_args]",
        "Reshape(S(2), B) -> S(1) [shard_shape_args]",
        "Reshape(P, B) -> P",
        "Reshape(B, B) -> B"]
    assert sigs("Transpose", [(4, 8, 2), (3,)], [(2, 4, 8)], consts=[None, (2, 0, 1)])[:3] == [
        "Transpose(S(2), B) -> S(0)", "Transpose(S(0), B) -> S(1)", "Transpose(S(1), B) -> S(2)"]
    assert sigs("ConcatV2", [(4, 8), (4, 8), ()], [(4, 16)], consts=[None, None, (1,)]) == [
        "ConcatV2(S(0), S(0), B) -> S(0)", "ConcatV2(P, P, B) -> P", "ConcatV2(B, B, B) -> B"]
    assert sigs("Tile", [(16, 1), (2,)], [(16, 4)]) == [
        "Tile(S(0), B) -> S(0)", "Tile(P, B) -> P", "Tile(B, B) -> B"]
    assert sigs("Shape", [(16, 8)], [(2,)], in_layouts=(S(1),)) == [
        "Shape(S(1)) -> B [full_shape]", "Shape(B) -> B"]
    assert sigs("IdentityN", [(4,), (4, 2)], [(4,), (4, 2)], in_layouts=(P, S(1))) == [
        "IdentityN(P, S(1)) -> (P, S(1))", "IdentityN(B, B) -> (B, B)"]


def test_pooling_keeps_batch_and_channel_splits() -> None:
    assert sigs("MaxPool", [(8, 10, 10, 16)], [(8, 5, 5, 16)]) == [
        "MaxPool(S(0)) -> S(0)", "MaxPool(S(3)) -> S(3)", "MaxPool(B) -> B"]
    assert sigs("AvgPoolGrad", [(4,), (8, 5, 5, 16)], [(8, 10, 10, 16)]) == [
        "AvgPoolGrad(B, S(0)) -> S(0) [shard_shape_args]",
        "AvgPoolGrad(B, S(3)) -> S(3) [shard_shape_args]", "AvgPoolGrad(B, P) -> P",
        "AvgPoolGrad(B, B) -> B"]
    assert sigs("MaxPoolGrad", [(8, 10, 10, 16), (8, 5, 5, 16), (8, 5, 5, 16)],
                [(8, 10, 10, 16)])[1] == "MaxPoolGrad(S(3), S(3), S(3)) -> S(3)"


def test_unregistered_ops_run_replicated_and_the_registry_covers_the_issue() -> None:
    assert sigs("StridedSlice", [(4, 8), (1,), (1,), (1,)], [(8,)]) == [
        "StridedSlice(B, B, B, B) -> B"]
    wanted = {"MatMul", "BatchMatMulV2", "Einsum", "Conv2D", "Conv2DBackpropInput",
              "Conv2DBackpropFilter", "BiasAdd", "BiasAddGrad", "AddV2", "Mul", "Sub", "Relu",
              "ReluGrad", "Tanh", "TanhGrad", "Sigmoid", "SigmoidGrad", "Erf", "Cast", "Sum",
              "Mean", "Softmax", "GatherV2", "ResourceGather", "UnsortedSegmentSum",
              "ReadVariableOp", "AssignSubVariableOp", "ResourceApplyAdam", "Reshape", "AddN",
              "IdentityN", "MaxPool", "MaxPoolGrad", "AvgPoolGrad"}
    assert wanted <= set(RULES)


def test_fits_rejects_uneven_splits() -> None:
    ctx = OpContext("m", "MatMul", ((6, 12), (12, 32)), ((6, 32),))
    ok = [format_signature("MatMul", s) for s in signatures(ctx) if fits(s, ctx, 4)]
    assert ok == ["MatMul(B, S(1)) -> S(1)", "MatMul(S(1), S(0)) -> P", "MatMul(P, B) -> P",
                  "MatMul(B, P) -> P", "MatMul(B, B) -> B"]
