"""runtime.prefetch: batches arrive in order on the asked device, ahead of the caller."""
from __future__ import annotations

import pytest


def test_to_device_prefetches_a_dataset_onto_a_local_device(local4):
    import tensorflow as tf
    from tfplace.runtime.prefetch import to_device
    ds = tf.data.Dataset.range(6).map(lambda i: (tf.fill([2], i), i * 10)).batch(2)
    got = list(to_device(ds, local4.names[3]))
    assert [b[1].numpy().tolist() for b in got] == [[0, 10], [20, 30], [40, 50]]
    assert {b[0].device for b in got} == {local4.names[3]}
    assert [b[1].numpy().tolist() for b in to_device(ds, "")] == [[0, 10], [20, 30], [40, 50]]


def test_lookahead_reads_one_batch_ahead_in_order(local4):
    import tensorflow as tf
    from tfplace.runtime.prefetch import Lookahead
    ds = tf.data.Dataset.range(3)
    it = iter(ds)
    ahead = Lookahead(local4.names[2])
    first = ahead.next(it)
    ahead._pending[0].join()                # the next batch was read while the caller worked
    assert "data" in ahead._pending[1] and ahead._pending[1]["data"].device == local4.names[2]
    assert [int(first), int(ahead.next(it)), int(ahead.next(it))] == [0, 1, 2]
    with pytest.raises((StopIteration, tf.errors.OutOfRangeError)):
        ahead.next(it)
    # a new iterator (the next epoch) starts afresh
    assert int(ahead.next(iter(ds))) == 0
    ahead.close()
