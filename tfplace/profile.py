"""Measurement: time real ops on a TF device and turn the figures into a cost-model `Calibration`.

`calibrate()` is the only part of the planning stack that runs TensorFlow; the cost model
(`tfplace.costs`) takes what it returns as data::

    calibrate(device) -> figures (plain dict, YAML) -> to_calibration(figures, peak) -> Calibration

Each figure times one `tf.function` whose body chains the same op N times (every op consumes
the previous result, so the inter-op pool cannot overlap them) and takes the median over
`repeats` calls. Grappler is switched off while measuring so that it neither folds nor fuses
the chain (it rewrites `x + y + y + ...` into one AddN, for instance): the figures are the
kernels' own speed.
"""
from __future__ import annotations

import contextlib
import math
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from tfplace.costs import Calibration
from tfplace.errors import PlanError, bullets

__all__ = ["calibrate", "to_calibration", "load_calibration", "FIGURES"]

MATMUL_SIZES = (256, 512, 1024)
CONV_SHAPE = (8, 32, 32, 32)                   # NHWC input; 3x3 filter to 64 channels and back
CONV_OUT_CHANNELS = 64
ELEMENTWISE_ELEMS = 4 * 1024 * 1024            # 16 MiB of float32 per operand
OVERHEAD_CHAIN = (16, 400)                     # tiny-op chain lengths; the difference is timed
TARGET_FLOPS_PER_CALL = 1.5e9                  # sizes N so each timed call is ~tens of ms

# The numeric figures, each a positive finite float; `to_calibration` needs all of them.
FIGURES = ("matmul_flops_per_second", "conv2d_flops_per_second",
           "elementwise_bytes_per_second", "elementwise_flops_per_second",
           "op_overhead_seconds")

# Families without a benchmark of their own are memory bound like elementwise ops.
_FAMILY_FIGURE = {
    "matmul": "matmul_flops_per_second",
    "conv": "conv2d_flops_per_second",
    "elementwise": "elementwise_flops_per_second",
    "reduction": "elementwise_flops_per_second",
    "norm": "elementwise_flops_per_second",
    "pool": "elementwise_flops_per_second",
    "optimizer": "elementwise_flops_per_second",
}


@contextlib.contextmanager
def _grappler_off() -> Iterator[None]:
    import tensorflow as tf
    before = tf.config.optimizer.get_experimental_options()
    level = tf.get_logger().level
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    tf.get_logger().setLevel("ERROR")                   # one tf.function per chain: "retracing"
    try:
        yield
    finally:
        tf.get_logger().setLevel(level)
        tf.config.optimizer.set_experimental_options(
            {"disable_meta_optimizer": bool(before.get("disable_meta_optimizer", False))})


def _median_seconds(fn: Callable[..., Any], args: tuple, repeats: int) -> float:
    fn(*args).numpy()                                   # trace, build kernels, warm caches
    times: list[float] = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(*args).numpy()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _chain(op: Callable[..., Any], n: int, device: str) -> Callable[..., Any]:
    """A tf.function applying `op(x, i)` n times in sequence; returns one element of the end."""
    import tensorflow as tf

    @tf.function(autograph=False)
    def body(x: Any, *consts: Any) -> Any:
        with tf.device(device):
            for i in range(n):
                x = op(x, i, *consts)
            return tf.reshape(x, [-1])[0]               # a scalar: the copy-out costs nothing
    return body


def _chain_length(flops_per_op: float) -> int:
    return max(2, min(64, round(TARGET_FLOPS_PER_CALL / flops_per_op)))


def _matmul_rate(n: int, device: str, repeats: int) -> float:
    import tensorflow as tf
    with tf.device(device):
        a = tf.random.stateless_normal((n, n), seed=(1, n))
        eye = tf.eye(n)                                 # exact values: no overflow, no denormals
    flops = 2.0 * n ** 3
    k = _chain_length(flops)
    fn = _chain(lambda x, i, b: tf.linalg.matmul(x, b), k, device)
    return k * flops / _median_seconds(fn, (a, eye), repeats)


def _conv_rate(device: str, repeats: int) -> float:
    import tensorflow as tf
    b, h, w, c = CONV_SHAPE
    co = CONV_OUT_CHANNELS
    with tf.device(device):
        x = tf.random.stateless_normal(CONV_SHAPE, seed=(2, 0))
        up = tf.random.stateless_normal((3, 3, c, co), seed=(2, 1)) / math.sqrt(9 * c)
        down = tf.random.stateless_normal((3, 3, co, c), seed=(2, 2)) / math.sqrt(9 * co)
    flops = 2.0 * b * h * w * co * 9 * c                # both directions: 3*3*32*64 MACs a pixel
    k = _chain_length(flops)
    k += k % 2                                          # end on the input's channel count

    def op(x: Any, i: int, up: Any, down: Any) -> Any:
        return tf.nn.conv2d(x, down if i % 2 else up, strides=1, padding="SAME")
    return k * flops / _median_seconds(_chain(op, k, device), (x, up, down), repeats)


def _elementwise_rates(device: str, repeats: int) -> tuple[float, float]:
    """(bytes/s, elements/s) for alternating AddV2 (2 reads, 1 write) and Relu (1 read, 1 write)."""
    import tensorflow as tf
    n = ELEMENTWISE_ELEMS
    with tf.device(device):
        x = tf.random.stateless_normal((n,), seed=(3, 0))
        y = tf.random.stateless_normal((n,), seed=(3, 1))
    k = 16

    def op(x: Any, i: int, y: Any) -> Any:
        return tf.nn.relu(x) if i % 2 else tf.raw_ops.AddV2(x=x, y=y)
    t = _median_seconds(_chain(op, k, device), (x, y), repeats)
    moved = (k // 2) * (3 + 2) * 4 * n                  # float32 bytes read + written
    return moved / t, k * n / t


def _op_overhead(device: str, repeats: int) -> float:
    """Seconds per tiny op: the slope of call time against chain length (call cost cancels).

    Short and long calls alternate, so a busy neighbour slows both alike; the median of the
    per-pair slopes is reported."""
    import tensorflow as tf
    with tf.device(device):
        x = tf.constant([1.0])
        one = tf.constant([1.0])

    def op(x: Any, i: int, one: Any) -> Any:
        return tf.raw_ops.Sub(x=x, y=one) if i % 2 else tf.raw_ops.AddV2(x=x, y=one)
    short, long = OVERHEAD_CHAIN
    fns = [_chain(op, short, device), _chain(op, long, device)]
    slopes = []
    for _ in range(max(repeats, 5) * 3):               # tiny calls: cheap, and noisier
        t = [_median_seconds(fn, (x, one), 1) for fn in fns]
        slopes.append((t[1] - t[0]) / (long - short))
    return max(statistics.median(slopes), 1e-9)


def _resolve_device(device: str | None) -> str:
    """The full TF name of `device` (`CPU:1`, `/device:CPU:1` or the full name), or PlanError."""
    import tensorflow as tf
    local = "/job:localhost/replica:0/task:0"
    names = [d.name if d.name.startswith("/job:") else local + d.name
             for d in tf.config.list_logical_devices()]
    if device is None:
        return next(n for n in names if n.endswith("/device:CPU:0"))
    by_short = {n.rsplit("device:", 1)[-1]: n for n in names}
    full = by_short.get(device.rsplit("device:", 1)[-1].lstrip("/"), device)
    if full not in names:
        raise PlanError(f"--device {device!r} is not a device of this process "
                        f"(devices: {', '.join(names)})")
    return full


def calibrate(device: str | None = None, *, repeats: int = 5) -> dict[str, Any]:
    """Measure op speed on `device` (default: the first CPU) and return the figures.

    Keys: device, tensorflow, repeats, matmul_flops_per_second (median over MATMUL_SIZES),
    matmul_flops_per_second_by_size, conv2d_flops_per_second, elementwise_bytes_per_second,
    elementwise_flops_per_second, op_overhead_seconds. Values are plain Python (YAML-ready).
    """
    if repeats < 1:
        raise PlanError(f"repeats must be >= 1 (got {repeats})")
    import tensorflow as tf
    dev = _resolve_device(device)
    with _grappler_off():
        by_size = {n: _matmul_rate(n, dev, repeats) for n in MATMUL_SIZES}
        conv = _conv_rate(dev, repeats)
        ew_bytes, ew_flops = _elementwise_rates(dev, repeats)
        overhead = _op_overhead(dev, repeats)
    return {
        "device": dev,
        "tensorflow": tf.__version__,
        "repeats": repeats,
        "matmul_flops_per_second": statistics.median(by_size.values()),
        "matmul_flops_per_second_by_size": {n: float(v) for n, v in by_size.items()},
        "conv2d_flops_per_second": float(conv),
        "elementwise_bytes_per_second": float(ew_bytes),
        "elementwise_flops_per_second": float(ew_flops),
        "op_overhead_seconds": float(overhead),
    }


def _check(figures: Mapping[str, Any], where: str) -> None:
    problems = []
    for key in FIGURES:
        value = figures.get(key)
        if value is None:
            problems.append(f"missing {key}; rerun `tfplace profile --out FILE`")
            continue
        try:
            ok = math.isfinite(float(value)) and float(value) > 0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            problems.append(f"{key} = {value!r} must be a positive finite number")
    if problems:
        raise PlanError(bullets(f"{where}: invalid calibration ({len(problems)} problem"
                                f"{'s' if len(problems) > 1 else ''}):", problems))


def to_calibration(figures: Mapping[str, Any], device_flops: float) -> Calibration:
    """The cost model's Calibration: each family's measured rate as a fraction of `device_flops`
    (the peak FLOP/s the cluster YAML gives the devices), and the per-op overhead."""
    _check(figures, "calibration figures")
    if not (math.isfinite(device_flops) and device_flops > 0):
        raise PlanError(f"device_flops must be a positive finite FLOP/s (got {device_flops!r})")
    scales = {fam: float(figures[fig]) / device_flops for fam, fig in _FAMILY_FIGURE.items()}
    return Calibration(flops_per_second_scale=tuple(scales.items()),
                       overhead_seconds=float(figures["op_overhead_seconds"]))


def load_calibration(path: str | Path, *, device_flops: float | None = None) -> Calibration:
    """Read a `tfplace profile --out` YAML; scales are relative to `device_flops` (default: the
    default device peak, as in a cluster YAML that gives no `flops`)."""
    import yaml
    from tfplace.cluster import DEFAULT_FLOPS
    p = Path(path)
    if not p.is_file():
        raise PlanError(f"calibration file {str(p)!r} does not exist; write one with "
                        "`tfplace profile --out FILE`")
    try:
        figures = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise PlanError(f"calibration file {str(p)!r} is not valid YAML ({e})") from None
    if not isinstance(figures, dict):
        raise PlanError(f"calibration file {str(p)!r} must be a mapping of figures, as "
                        "`tfplace profile --out FILE` writes")
    _check(figures, str(p))
    return to_calibration(figures, DEFAULT_FLOPS if device_flops is None else device_flops)
