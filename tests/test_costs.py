"""Exact FLOP counts per op family, calibration, and op/transfer seconds."""
import pytest

from tfplace import costs
from tfplace.analysis import OpNode
from tfplace.cluster import Cluster, Device
from tfplace.errors import PlanError

F = costs.node_flops


def test_matmul_honours_transposes():
    assert F("MatMul", {}, [(4, 8), (8, 16)], [(4, 16)]) == 2 * 4 * 16 * 8
    assert F("MatMul", {"transpose_a": True}, [(8, 4), (8, 16)], [(4, 16)]) == 2 * 4 * 16 * 8
    assert F("MatMul", {"transpose_b": True}, [(4, 8), (16, 8)], [(4, 16)]) == 2 * 4 * 16 * 8


def test_batch_matmul_and_einsum():
    assert F("BatchMatMulV2", {}, [(2, 3, 4), (2, 4, 5)], [(2, 3, 5)]) == 2 * 2 * 3 * 5 * 4
    assert F("BatchMatMulV3", {"adj_x": True}, [(2, 4, 3), (2, 4, 5)], [(2, 3, 5)]) == 240
    assert F("Einsum", {"equation": "bij,bjk->bik"}, [(2, 3, 4), (2, 4, 5)], [(2, 3, 5)]) == 240
    assert F("Einsum", {"equation": "...ij,jk->...ik"}, [(2, 3, 4), (4, 5)], [(2, 3, 5)]) == 240


def test_convolutions_and_their_gradients_cost_the_forward_conv():
    fwd = 2 * (1 * 8 * 8 * 16) * 3 * 3 * 3
    assert F("Conv2D", {}, [(1, 8, 8, 3), (3, 3, 3, 16)], [(1, 8, 8, 16)]) == fwd
    assert F("Conv2DBackpropInput", {}, [(4,), (3, 3, 3, 16), (1, 8, 8, 16)],
             [(1, 8, 8, 3)]) == fwd
    assert F("Conv2DBackpropFilter", {}, [(1, 8, 8, 3), (4,), (1, 8, 8, 16)],
             [(3, 3, 3, 16)]) == fwd
    dw = 2 * (1 * 8 * 8 * 6) * 3 * 3
    assert F("DepthwiseConv2dNative", {}, [(1, 8, 8, 3), (3, 3, 3, 2)], [(1, 8, 8, 6)]) == dw
    assert F("DepthwiseConv2dNativeBackpropFilter", {}, [(1, 8, 8, 3), (4,), (1, 8, 8, 6)],
             [(3, 3, 3, 2)]) == dw


def test_elementwise_reductions_norms_pools_updates():
    assert F("Relu", {}, [(4, 5)], [(4, 5)]) == 20
    assert F("Softmax", {}, [(4, 5)], [(4, 5)]) == 100
    assert F("BiasAddGrad", {}, [(4, 5)], [(5,)]) == 20
    assert F("Mean", {}, [(4, 5), (2,)], [()]) == 20
    assert F("FusedBatchNormV3", {}, [(2, 4, 4, 3)] + [(3,)] * 4, [(2, 4, 4, 3)]) == 960
    assert F("MaxPool", {"ksize": (1, 2, 2, 1)}, [(1, 8, 8, 3)], [(1, 4, 4, 3)]) == 192
    assert F("ResourceApplyAdam", {}, [()] * 9 + [(10, 10)], []) == 1000
    assert F("AssignSubVariableOp", {}, [(), (10, 10)], []) == 100
    assert F("AddN", {}, [(4,), (4,), (4,)], [(4,)]) == 8
    assert F("SomeCustomOp", {}, [(100,)], [(100,)]) == 0
    assert F("MatMul", {}, [None, (8, 16)], [(4, 16)]) == 0          # unknown rank: no crash


def test_calibration_scales_op_seconds():
    cal = costs.Calibration({"matmul": 0.5}, overhead_seconds=1e-3)
    assert cal.flops_per_second_scale == (("matmul", 0.5),)
    assert hash(cal) == hash(costs.Calibration((("matmul", 0.5),), overhead_seconds=1e-3))
    dev = Device("d", flops=1e9)
    mm = OpNode("m", "MatMul", flops=1e9)
    relu = OpNode("r", "Relu", flops=1e9)
    assert costs.op_seconds(mm, dev, cal) == pytest.approx(1e-3 + 2.0)
    assert costs.op_seconds(relu, dev, cal) == pytest.approx(1e-3 + 1.0)
    assert costs.op_seconds(OpNode("c", "Const"), dev, cal) == 1e-3
    assert costs.Calibration().overhead_seconds == 5e-6


def test_calibration_rejects_bad_scales():
    with pytest.raises(PlanError, match="matmul=0.0"):
        costs.Calibration({"matmul": 0.0})
    with pytest.raises(PlanError, match="families"):
        costs.Calibration({"gpu_magic": 2.0})


def test_transfer_seconds_uses_the_cluster_links():
    c = Cluster.local(2, configure=False)
    a, b = c.names
    assert costs.transfer_seconds(c, a, a, 10**9) == 0.0
    assert costs.transfer_seconds(c, a, b, 10**6) == pytest.approx(5e-6 + 10**6 / 5e9)
