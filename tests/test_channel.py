"""tfplace.runtime.channel: both backends (C++ op, FIFOQueue) behave alike, from threads and
inside tf.function, across logical devices."""
from __future__ import annotations

import os
import threading
import time

import pytest

tf = pytest.importorskip("tensorflow")

from tfplace.errors import BackendError, PlanError  # noqa: E402
from tfplace.runtime import channel as channel_mod  # noqa: E402
from tfplace.runtime.channel import Channel  # noqa: E402

CPU = "/job:localhost/replica:0/task:0/device:CPU:{}"


@pytest.fixture(params=["op", "fifo"])
def backend(request: pytest.FixtureRequest) -> str:
    if (request.param == "op" and not channel_mod.library_path().is_file()
            and not os.environ.get("TFPLACE_REQUIRE_OPS")):
        pytest.skip("channel op not built (`make ops`) and TFPLACE_REQUIRE_OPS unset")
    return request.param


def _ch(backend: str, capacity: int = 2, shape: list | None = None, **kw) -> Channel:
    return Channel(capacity=capacity, dtypes=[tf.float32], shapes=[shape or [2]],
                   backend=backend, **kw)


def _wait_until(pred, timeout: float = 2.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.01)
    return pred()


class _Thread(threading.Thread):
    """Runs ``fn``; keeps its result or exception and when it finished."""

    def __init__(self, fn) -> None:
        super().__init__(daemon=True)
        self.fn, self.result, self.error, self.finished = fn, None, None, None

    def run(self) -> None:
        try:
            self.result = self.fn()
        except Exception as e:  # noqa: BLE001 - the test inspects it
            self.error = e
        self.finished = time.monotonic()


def test_backend_is_the_one_asked_for(backend: str) -> None:
    assert _ch(backend).backend == backend


def test_fifo_order_of_tuples(backend: str) -> None:
    ch = Channel(capacity=5, dtypes=[tf.float32, tf.int64], shapes=[[2], []], backend=backend)
    for i in range(5):
        ch.enqueue([[i, -i], i * 10])
    assert int(ch.size()) == 5
    got = []
    for _ in range(5):
        x, n = ch.dequeue()
        assert x.dtype == tf.float32 and n.dtype == tf.int64
        got.append((x.numpy().tolist(), int(n)))
    assert got == [([float(i), float(-i)], i * 10) for i in range(5)]
    assert int(ch.size()) == 0


def test_producer_blocks_at_capacity_and_resumes_after_a_dequeue(backend: str) -> None:
    ch = _ch(backend, capacity=2)
    progress: list[int] = []

    def produce() -> None:
        for i in range(3):
            ch.enqueue([[i, i]])
            progress.append(i)

    t = _Thread(produce)
    t.start()
    assert _wait_until(lambda: progress == [0, 1])
    time.sleep(0.3)                                   # room for a wrong third enqueue
    assert progress == [0, 1] and t.is_alive() and int(ch.size()) == 2
    assert ch.dequeue()[0].numpy().tolist() == [0.0, 0.0]
    t.join(2)
    assert not t.is_alive() and t.error is None and progress == [0, 1, 2]
    assert [ch.dequeue()[0].numpy().tolist() for _ in range(2)] == [[1.0, 1.0], [2.0, 2.0]]


def test_shape_mismatch_names_expected_and_got(backend: str) -> None:
    ch = _ch(backend, shape=[2, 3], name=f"shapes_{backend}")
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=rf"channel 'shapes_{backend}' component 0: expected shape \[2,3\], "
                             r"got \[3,3\]; reshape"):
        ch.enqueue([tf.zeros([3, 3])])
    assert int(ch.size()) == 0


def test_dtype_mismatch_names_expected_and_got(backend: str) -> None:
    ch = _ch(backend, name=f"dtypes_{backend}")
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=rf"channel 'dtypes_{backend}' component 0: expected dtype float32, "
                             "got int32; cast"):
        ch.enqueue([tf.constant([1, 2], tf.int32)])


def test_component_count_mismatch(backend: str) -> None:
    ch = _ch(backend, name=f"count_{backend}")
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=rf"channel 'count_{backend}' carries 1 component\(s\) but enqueue "
                             "got 2"):
        ch.enqueue([[1.0, 2.0], [3.0, 4.0]])


def test_runtime_shape_check_in_the_kernel(backend: str) -> None:
    # The static check passes ([None, 3] fits [2, 3]); the kernel must catch [3, 3].
    ch = _ch(backend, shape=[2, 3], name=f"rt_{backend}")

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32)])
    def put(x):
        ch.enqueue([x])

    put(tf.zeros([2, 3]))
    expected = (r"channel 'rt_op' component 0: expected shape \[2,3\], got \[3,3\]"
                if backend == "op" else
                r"Shape mismatch in tuple component 0\. Expected \[2,3\], got \[3,3\]")
    with pytest.raises(tf.errors.InvalidArgumentError, match=expected):
        put(tf.zeros([3, 3]))
    assert int(ch.size()) == 1


def test_kernel_dtype_check() -> None:
    if not channel_mod.library_path().is_file() and not os.environ.get("TFPLACE_REQUIRE_OPS"):
        pytest.skip("channel op not built")
    ch = _ch("op", name="kernel_dtype")
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="channel 'kernel_dtype' component 0: expected dtype float, got int32"):
        channel_mod.load_ops().tfplace_channel_enqueue(ch._handle, [tf.constant([1, 2])])


def test_yield_orders_what_waits_for_it_after_what_it_follows() -> None:
    """TfplaceYield (the pipeline rewrite's hand-off marker) completes from its own thread:
    what waits for it runs after what it follows, every time, and a step that fails after a
    yield started still ends. In a v1 graph, so that only the yield orders the read after the
    increment (tf.function's automatic control dependencies would order them anyway)."""
    if not channel_mod.library_path().is_file() and not os.environ.get("TFPLACE_REQUIRE_OPS"):
        pytest.skip("channel op not built")
    ops = channel_mod.load_ops()
    g = tf.Graph()
    with g.as_default():
        v = tf.compat.v1.get_variable("v", initializer=0.0, use_resource=True)
        fail = tf.compat.v1.placeholder(tf.bool, [])
        first = v.assign_add(1.0, read_value=False)
        with tf.control_dependencies([first]):
            marker = ops.tfplace_yield()
        with tf.control_dependencies([marker]):
            after = v.read_value()
            checked = tf.debugging.assert_equal(fail, False, message="step asked to fail")
        with tf.control_dependencies([checked]):
            out = tf.identity(after)
        with tf.compat.v1.Session(graph=g) as sess:
            sess.run(v.initializer)
            for i in range(1, 201):
                assert sess.run(out, {fail: False}) == i   # the read waited for the increment
            with pytest.raises(tf.errors.InvalidArgumentError, match="step asked to fail"):
                sess.run(out, {fail: True})
            assert sess.run(out, {fail: False}) == 202.0


def test_close_with_error_wakes_a_blocked_dequeue(backend: str) -> None:
    ch = _ch(backend, name=f"wake_deq_{backend}")
    t = _Thread(ch.dequeue)
    t.start()
    time.sleep(0.3)
    assert t.is_alive()                               # really blocked on the empty channel
    closed = time.monotonic()
    ch.close("stage 1 failed: boom")
    t.join(2)
    assert not t.is_alive() and t.finished - closed < 2.0
    assert isinstance(t.error, tf.errors.AbortedError)
    assert (f"stage 1 failed: boom [channel 'wake_deq_{backend}' was closed with this error]"
            in t.error.message)
    for later in (ch.dequeue, lambda: ch.enqueue([[1.0, 2.0]])):
        with pytest.raises(tf.errors.AbortedError, match="stage 1 failed: boom"):
            later()


def test_close_with_error_wakes_a_blocked_enqueue(backend: str) -> None:
    ch = _ch(backend, capacity=1)
    ch.enqueue([[1.0, 1.0]])
    t = _Thread(lambda: ch.enqueue([[2.0, 2.0]]))
    t.start()
    time.sleep(0.3)
    assert t.is_alive()
    ch.close("stage 0 lost its worker")
    t.join(2)
    assert not t.is_alive()
    assert isinstance(t.error, tf.errors.AbortedError)
    assert "stage 0 lost its worker" in t.error.message
    assert int(ch.size()) == 0                         # close(error) drops queued items
    with pytest.raises(tf.errors.AbortedError, match="stage 0 lost its worker"):
        ch.dequeue()


def test_graceful_close_drains_then_ends(backend: str) -> None:
    ch = _ch(backend)
    ch.enqueue([[1.0, 2.0]])
    ch.close()
    with pytest.raises(tf.errors.CancelledError):
        ch.enqueue([[3.0, 4.0]])
    assert ch.dequeue()[0].numpy().tolist() == [1.0, 2.0]
    with pytest.raises(tf.errors.OutOfRangeError):
        ch.dequeue()


def test_graceful_close_wakes_waiters_with_end_of_stream(backend: str) -> None:
    full = _ch(backend, capacity=1)
    full.enqueue([[1.0, 1.0]])
    empty = _ch(backend)
    waiters = [_Thread(lambda: full.enqueue([[2.0, 2.0]])), _Thread(empty.dequeue)]
    for w in waiters:
        w.start()
    time.sleep(0.3)
    assert all(w.is_alive() for w in waiters)
    full.close()
    empty.close()
    for w in waiters:
        w.join(2)
    assert not any(w.is_alive() for w in waiters)
    assert isinstance(waiters[0].error, tf.errors.CancelledError)
    assert isinstance(waiters[1].error, tf.errors.OutOfRangeError)
    assert full.dequeue()[0].numpy().tolist() == [1.0, 1.0]   # queued before the close: kept


def test_inside_tf_function_producer_and_consumer_threads(backend: str) -> None:
    ch = Channel(capacity=2, dtypes=[tf.float32, tf.int32], shapes=[[4], []], backend=backend)
    n = 10

    @tf.function
    def produce():
        for i in tf.range(n):
            ch.enqueue([tf.fill([4], tf.cast(i, tf.float32)), i])

    @tf.function
    def consume():
        total, order = tf.constant(0.0), tf.constant(0)
        for i in tf.range(n):
            x, k = ch.dequeue()
            total += tf.reduce_sum(x)
            order += tf.cast(tf.equal(k, i), tf.int32)   # counts tuples that arrive in order
        return total, order

    t = _Thread(produce)
    t.start()
    total, order = consume()
    t.join(2)
    assert t.error is None and not t.is_alive()
    assert float(total) == 4.0 * sum(range(n)) and int(order) == n


def test_producer_and_consumer_on_different_devices(backend: str) -> None:
    with tf.device(CPU.format(1)):
        ch = Channel(capacity=2, dtypes=[tf.float32], shapes=[[3]], backend=backend)
    assert ch.device == CPU.format(1)

    @tf.function
    def produce(i):
        with tf.device(CPU.format(0)):
            x = tf.fill([3], tf.cast(i, tf.float32)) * 2.0
        ch.enqueue([x])

    def consume():                                    # eagerly, to see where tensors live
        (x,) = ch.dequeue()
        with tf.device(CPU.format(2)):
            return x, x + 1.0

    t = _Thread(lambda: [produce(tf.constant(i)) for i in range(4)])
    t.start()
    outs = [consume() for _ in range(4)]
    t.join(2)
    assert t.error is None
    assert [y.numpy().tolist() for _, y in outs] == [[2.0 * i + 1.0] * 3 for i in range(4)]
    assert all(x.device == CPU.format(1) for x, _ in outs)   # dequeued on the channel's device
    assert all(y.device == CPU.format(2) for _, y in outs)


def test_blocked_dequeues_do_not_starve_a_producer(backend: str) -> None:
    # More waiting consumers than inter-op threads (2 on this machine): kernels that slept on a
    # condition variable in a pool thread could leave none for the producer.
    ch = Channel(capacity=1, dtypes=[tf.int32], shapes=[[]], backend=backend)
    take = tf.function(lambda: ch.dequeue()[0])
    put = tf.function(lambda i: ch.enqueue([i]))
    consumers = [_Thread(take) for _ in range(8)]
    producer = _Thread(lambda: [put(tf.constant(i)) for i in range(8)])
    try:
        for c in consumers:
            c.start()
        time.sleep(0.3)
        producer.start()
        for th in [producer, *consumers]:
            th.join(5)
        assert not producer.is_alive() and producer.error is None
        assert all(not c.is_alive() and c.error is None for c in consumers)
        assert sorted(int(c.result) for c in consumers) == list(range(8))
    finally:
        ch.close("test over")                          # frees anything left waiting


def test_same_name_with_another_spec_is_an_error() -> None:
    if not channel_mod.library_path().is_file() and not os.environ.get("TFPLACE_REQUIRE_OPS"):
        pytest.skip("channel op not built")
    _ch("op", capacity=2, name="twice")
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"channel 'twice' exists with capacity 2, types float, shapes "
                             r"\[\[2\]\] but was asked for with capacity 3"):
        _ch("op", capacity=3, name="twice")


def test_invalid_options_report_every_problem() -> None:
    with pytest.raises(PlanError) as info:
        Channel(capacity=0, dtypes=[tf.float32, tf.int32], shapes=[[2]], backend="fifo",
                name="stage 0 -> 1")
    assert str(info.value) == (
        "invalid channel stage 0 -> 1:\n"
        "  - capacity=0: give a positive int (items in flight)\n"
        "  - 1 shape(s) for 2 dtype(s): give one shape per component (None for a dimension "
        "that varies)")


def test_any_name_works(backend: str) -> None:
    ch = _ch(backend, name="stage 0 -> 1 (activations)")
    ch.enqueue([[1.0, 2.0]])
    assert ch.dequeue()[0].numpy().tolist() == [1.0, 2.0]


def test_backend_choice(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    with pytest.raises(BackendError, match="unknown channel backend 'grpc'.*auto, op, fifo"):
        channel_mod.resolve_backend("grpc")
    monkeypatch.setenv(channel_mod.ENV_BACKEND, "fifo")
    assert channel_mod.resolve_backend() == "fifo"
    monkeypatch.setenv(channel_mod.ENV_BACKEND, "auto")
    monkeypatch.setenv(channel_mod.ENV_LIBRARY, str(tmp_path / "absent.so"))
    assert channel_mod.resolve_backend() == "fifo"
    with pytest.raises(BackendError, match=r"absent\.so is missing\): run `make ops`"):
        channel_mod._load(tmp_path / "absent.so")


def test_version_mismatch_says_make_ops(monkeypatch: pytest.MonkeyPatch) -> None:
    path = channel_mod.library_path()
    if not path.is_file() and not os.environ.get("TFPLACE_REQUIRE_OPS"):
        pytest.skip("channel op not built")
    assert channel_mod.load_ops().tfplace_channel_version().numpy().decode() == tf.__version__
    monkeypatch.setattr(tf, "__version__", "9.9.9")
    with pytest.raises(BackendError, match=rf"built for TensorFlow {tf.version.VERSION} but "
                                           r"TensorFlow 9\.9\.9 is running: run `make ops`"):
        channel_mod._load(path)


def test_a_failing_op_in_the_step_cancels_a_blocked_dequeue(backend: str) -> None:
    # The step's cancellation must reach the waiter (else this function would hang), and the
    # cancelled waiter must not swallow a later item. `gate` delays the failure until the
    # dequeue on `ch` (a different resource, so not ordered after it) is waiting.
    ch = _ch(backend, name=f"cancel_{backend}")
    gate = Channel(capacity=1, dtypes=[tf.float32], shapes=[[]], backend=backend)

    @tf.function
    def step():
        (x,) = ch.dequeue()                          # blocks: nothing is enqueued on ch here
        (v,) = gate.dequeue()
        return x, tf.debugging.check_numerics(tf.math.log(v), "stage failed")

    t = _Thread(step)
    t.start()
    time.sleep(0.5)
    assert t.is_alive()
    gate.enqueue([-1.0])                             # log(-1) = nan: the step fails
    t.join(5)
    assert not t.is_alive()
    assert isinstance(t.error, tf.errors.InvalidArgumentError) and "stage failed" in t.error.message
    ch.enqueue([[7.0, 8.0]])
    assert int(ch.size()) == 1
    assert ch.dequeue()[0].numpy().tolist() == [7.0, 8.0]
