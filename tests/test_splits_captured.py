"""Split propagation over real captured Keras training steps (tests/models.py): the Megatron
MLP and Transformer block, a row-split Embedding table, a Conv2D split on output channels."""
from __future__ import annotations

import pytest

from tfplace.splits import B, P, S, node_attrs, propagate, resolve_splits

DEVICES = ("/device:CPU:0", "/device:CPU:1")


def _plan(kind: str, spec: str):
    import keras
    import models
    from tfplace.analysis import analyse
    from tfplace.capture import capture
    keras.backend.clear_session()           # layer and op names as in a fresh process
    model = models.build(kind)
    step = models.make_step(model)
    captured = capture(step, models.data(kind, batch=16))
    splits = resolve_splits(spec, [v.name for v in captured.variables],
                            shapes={v.name: v.shape for v in captured.variables})
    dag = analyse(captured.graph_def, captured.variables)
    plan = propagate(dag, splits, devices=DEVICES, variables=captured.variables,
                     attrs=node_attrs(captured.graph_def), outputs=captured.outputs)
    return captured, plan


def _updates_are_local(captured, plan) -> None:
    """Every assign to a split variable (and its slots) runs on its shard, no boxing on the way."""
    split_nodes = {v.node: v.layout for v in plan.variables}
    ops = {o.name: o for o in plan.ops}
    for nd in captured.graph_def.node:
        if nd.op.startswith("Assign") and nd.input[0] in split_nodes:
            assert ops[nd.name].inputs == (split_nodes[nd.input[0]],) * 2, nd.name
    boxed = {b.tensor.rsplit(":", 1)[0] for b in plan.boxing}
    for nd in captured.graph_def.node:
        if nd.op.startswith("Assign") and nd.input[0] in split_nodes:
            assert nd.input[1].split(":")[0] not in boxed


@pytest.fixture(scope="module")
def mlp():
    return _plan("mlp", "dense:S(1);dense_1:S(0)")


def test_mlp_column_then_row_split_needs_one_all_reduce(mlp) -> None:
    captured, plan = mlp
    assert [(b.tensor, b.src, b.dst, b.collective, b.bytes) for b in plan.boxing] == [
        ("mlp_1/dense_1_2/BiasAdd/ReadVariableOp:0", B, P, "zeros", 0),
        ("mlp_1/dense_1_2/BiasAdd:0", P, B, "all_reduce", 2048)]
    assert [(v.variable, str(v.layout), v.shapes[0]) for v in plan.variables] == [
        ("adam/dense_1_kernel_momentum", "S(0)", (16, 32)),
        ("adam/dense_1_kernel_velocity", "S(0)", (16, 32)),
        ("adam/dense_bias_momentum", "S(0)", (16,)),
        ("adam/dense_bias_velocity", "S(0)", (16,)),
        ("adam/dense_kernel_momentum", "S(1)", (12, 16)),
        ("adam/dense_kernel_velocity", "S(1)", (12, 16)),
        ("dense/bias", "S(0)", (16,)),
        ("dense/kernel", "S(1)", (12, 16)),
        ("dense_1/kernel", "S(0)", (16, 32))]
    _updates_are_local(captured, plan)
    assert plan.op("gradient_tape/mlp_1/dense_1/MatMul/MatMul").outputs == (S(1),)
    assert plan.op("gradient_tape/mlp_1/dense_1_2/MatMul/MatMul_1").outputs == (S(0),)


def test_node_attrs_reads_transposes_and_constant_axes(mlp) -> None:
    captured, _ = mlp
    attrs = node_attrs(captured.graph_def)
    assert attrs["gradient_tape/mlp_1/dense_2_1/MatMul/MatMul"] == {"transpose_a": False,
                                                                   "transpose_b": True}
    assert attrs["mean_squared_error/Mean/reduction_indices"] == {"value": (-1,)}
    assert attrs["mean_squared_error/Mean"] == {"keep_dims": False}
    # a multi-element constant comes packed in tensor_content
    assert attrs["gradient_tape/mean_squared_error/Reshape_1/shape"] == {"value": (16, 1)}
    assert attrs["gradient_tape/mean_squared_error/Tile_1/multiples"] == {"value": (1, 4)}


def test_transformer_megatron_block_keeps_two_forward_all_reduces() -> None:
    captured, plan = _plan(
        "transformer", "multi_head_attention/query:S(1);multi_head_attention/key:S(1);"
        "multi_head_attention/value:S(1);multi_head_attention/attention_output:S(0);"
        "dense:S(1);dense_1:S(0)")
    reduces = [b.tensor for b in plan.boxing if b.collective == "all_reduce"]
    # Megatron's g: after the attention output projection and the MLP, before each residual
    # add; and its f in backward, where the MLP's input gradient joins the residual stream
    assert reduces == ["transformer_1/multi_head_attention_1/attention_output_1/BiasAdd:0",
                       "transformer_1/dense_1_2/BiasAdd:0",
                       "gradient_tape/transformer_1/dense_1/Tensordot/Reshape_1:0"]
    assert plan.collectives() == {"all_reduce": 3, "zeros": 2}
    assert plan.op("transformer_1/multi_head_attention_1/Softmax").inputs == (S(1),)
    _updates_are_local(captured, plan)


def test_embedding_table_split_by_rows() -> None:
    captured, plan = _plan("embedding", "embedding:S(0)")
    assert plan.op("embedding_1/embedding_1/GatherV2").outputs == (P,)
    assert plan.op("embedding_1/embedding_1/GatherV2").local == "masked_lookup"
    assert [(b.tensor, b.collective, b.bytes) for b in plan.boxing] == [
        ("embedding_1/global_average_pooling1d_1/Mean:0", "all_reduce", 512)]
    # the table's gradient (and Adam's squared one) is summed only over each shard's rows
    for name in ("adam/UnsortedSegmentSum", "adam/UnsortedSegmentSum_1"):
        assert plan.op(name).outputs == (S(0),) and plan.op(name).local == "masked_segments"
    _updates_are_local(captured, plan)


def test_cnn_conv_split_on_output_channels() -> None:
    captured, plan = _plan("cnn", "conv2d:S(3)")
    assert plan.op("cnn_1/conv2d_1/convolution").inputs == (B, S(3))
    assert plan.op("cnn_1/conv2d_1/convolution").outputs == (S(3),)
    grads = [o for o in plan.ops if o.op == "Conv2DBackpropFilter"]
    assert [o.outputs for o in grads] == [(S(2),), (S(3),)]
    _updates_are_local(captured, plan)
