"""SOURCE forms the CLI accepts: a SavedModel directory (with --signature) plans like any graph."""
from __future__ import annotations

import pytest

from tfplace import cli


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    import tensorflow as tf

    class Scorer(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(tf.random.stateless_normal([8, 4], seed=[1, 2]), name="w")
            self.b = tf.Variable(tf.zeros([4]), name="b")

        @tf.function(input_signature=[tf.TensorSpec([16, 8], tf.float32, name="x")])
        def score(self, x):
            return {"y": tf.nn.relu(tf.matmul(x, self.w) + self.b)}

    m = Scorer()
    path = str(tmp_path_factory.mktemp("sm") / "scorer")
    tf.saved_model.save(m, path, signatures={"score": m.score})
    return path


def test_saved_model_signature_is_planned(saved_model, capsys, tmp_path):
    out = tmp_path / "plan.pbtxt"
    code = cli.main(["plan", saved_model, "--signature", "score", "--cluster", "local:2",
                     "--placer", "round_robin", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "placer=round_robin" in printed and "device:CPU:1" in printed
    assert out.exists()
    from tfplace.plan import Plan
    plan = Plan.load(str(out))
    assert {v.shape for v in plan.variables} == {(8, 4), (4,)}


def test_saved_model_unknown_signature_lists_the_real_ones(saved_model, capsys):
    code = cli.main(["plan", saved_model, "--signature", "nope", "--cluster", "local:2"])
    assert code == 2
    err = capsys.readouterr().err
    assert "nope" in err and "score" in err and "Traceback" not in err
