"""Cluster YAML and TF_CONFIG parsing: valid input and every malformed case, by message."""
from __future__ import annotations

import dataclasses
import json

import pytest

from tfplace.cluster import DEFAULT_FLOPS, GRPC_BANDWIDTH, Task
from tfplace.cluster_spec import load_yaml, parse_tf_config, parse_yaml_text
from tfplace.errors import ClusterError

W0 = "/job:worker/replica:0/task:0/device:CPU:0"
W1 = "/job:worker/replica:0/task:1/device:CPU:0"

VALID = f"""
devices:
  - name: {W0}
    kind: CPU
    memory: 8GiB
    flops: 2e10
  - name: {W1}
    memory: 536870912
links:
  - between: [/job:worker/replica:0/task:0, /job:worker/replica:0/task:1]
    bandwidth: 10Gbps
    latency: 5e-5
default_link: {{bandwidth: 1e9, latency: 1e-4}}
tasks:
  worker: ["host1:2222", "host2:2222"]
"""


def _error(text: str) -> str:
    with pytest.raises(ClusterError) as info:
        parse_yaml_text(text, source="bad.yaml")
    return str(info.value)


def test_valid_yaml() -> None:
    c = parse_yaml_text(VALID)
    assert c.names == (W0, W1)
    assert c.devices[0].memory == 8 * 2**30 and c.devices[0].flops == 2e10
    assert c.devices[1].memory == 2**29 and c.devices[1].flops == DEFAULT_FLOPS
    assert c.link(W0, W1) == (1.25e9, 5e-5)
    assert (c.default_bandwidth, c.default_latency) == (1e9, 1e-4)
    assert c.tasks == (Task("worker", 0, "host1:2222"), Task("worker", 1, "host2:2222"))


def test_defaults_and_units() -> None:
    c = parse_yaml_text(f"devices:\n  - name: {W0}\n    memory: 512 MB\n"
                        f"  - name: {W1}\n"
                        f"links:\n  - between: [{W0}, {W1}]\n    bandwidth: 1.25GB/s\n")
    assert c.devices[0].memory == 512 * 10**6 and c.devices[0].kind == "CPU"
    assert c.link(W0, W1) == (1.25e9, 0.0)
    assert c.default_bandwidth == GRPC_BANDWIDTH        # devices span two tasks


def test_kind_defaults_to_the_name() -> None:
    c = parse_yaml_text("devices: [{name: /job:localhost/replica:0/task:0/device:GPU:0}]")
    assert c.devices[0].kind == "GPU"


def test_load_yaml_file(tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(VALID)
    assert load_yaml(path) == parse_yaml_text(VALID)


def test_missing_file_names_the_path(tmp_path) -> None:
    with pytest.raises(ClusterError, match="nope.yaml.*does not exist"):
        load_yaml(tmp_path / "nope.yaml")


def test_invalid_yaml_gives_the_line() -> None:
    msg = _error(f"devices:\n  - name: {W0}\n    memory: [1, 2\n")
    assert "invalid YAML" in msg and "line" in msg and "bad.yaml" in msg


def test_not_a_mapping() -> None:
    assert "must be a mapping" in _error("- a\n- b\n")


def test_unknown_keys_at_every_level() -> None:
    msg = _error(f"devices:\n  - name: {W0}\n    memroy: 1GiB\n"
                 f"links:\n  - between: [{W0}, {W0}]\n    bandwidth: 1e9\n    speed: 3\n"
                 "default_link: {bandwidth: 1e9, jitter: 1}\n"
                 "extra: 1\n")
    assert "'extra'" in msg and "allowed keys: devices, links, default_link, tasks" in msg
    assert "'memroy' in devices[0]; did you mean 'memory'?" in msg
    assert "allowed keys: name, kind, memory, flops" in msg
    assert "'speed' in links[0]" in msg and "allowed keys: between, bandwidth, latency" in msg
    assert "'jitter' in default_link" in msg
    assert msg.count("\n  - ") == 4              # all four, one bullet each


def test_duplicate_devices_are_named() -> None:
    msg = _error(f"devices:\n  - name: {W0}\n  - name: {W0}\n")
    assert f"duplicate device name '{W0}' (devices[0] and devices[1])" in msg


@pytest.mark.parametrize("field,value,text", [
    ("memory", "0", "must be > 0 bytes"),
    ("memory", "-5", "must be > 0 bytes"),
    ("memory", "8 parsecs", "KiB/MiB/GiB"),
    ("flops", "0", "must be > 0 FLOP/s"),
    ("flops", "fast", "expected peak FLOP/s"),
    ("kind", "FPGA", "unknown kind; use one of CPU, GPU, TPU"),
])
def test_bad_device_values(field: str, value: str, text: str) -> None:
    msg = _error(f"devices:\n  - name: {W0}\n    {field}: {value}\n")
    assert f"devices[0].{field} = " in msg and value in msg and text in msg


def test_bad_links() -> None:
    msg = _error(f"devices:\n  - name: {W0}\n"
                 "links:\n  - between: [/job:worker/replica:0/task:0, /job:worker/replica:0/task:9]\n"
                 "    bandwidth: -1\n    latency: -2\n"
                 "  - between: [x]\n    bandwidth: 1e9\n")
    assert "links[0].bandwidth = -1: must be > 0 bytes/s" in msg
    assert "links[0].latency = -2: must be >= 0 seconds" in msg
    assert "'/job:worker/replica:0/task:9', which is not in this cluster" in msg
    assert "links[1].between = ['x']" in msg


def test_empty_devices_and_bad_names() -> None:
    assert "'devices' is missing or empty" in _error("devices: []\n")
    assert "'devices' is missing or empty" in _error("links: []\n")
    assert "expected a full TF device name" in _error("devices: [{name: cpu0}]\n")


def test_all_problems_reported_at_once() -> None:
    msg = _error(f"devices:\n  - name: {W0}\n    memory: 0\n    flops: -1\n  - name: {W0}\n"
                 "bogus: 1\n")
    assert "(4 problems)" in msg and msg.count("\n  - ") == 4


def test_tasks_validation() -> None:
    msg = _error(f"devices:\n  - name: {W0}\n  - name: {W1}\n"
                 "tasks:\n  worker: [\"host1\"]\n")
    assert "tasks.worker[0] = 'host1'" in msg and "host:port" in msg
    msg = _error(f"devices:\n  - name: {W0}\n  - name: {W1}\n"
                 "tasks:\n  worker: [\"host1:2222\"]\n")
    assert f"device '{W1}' belongs to no task" in msg


# -- TF_CONFIG -----------------------------------------------------------------------------
TF_CONFIG = {"cluster": {"worker": ["h1:2222", "h2:2222"], "chief": ["c:2222"],
                         "ps": ["p:2222"]},
             "task": {"type": "worker", "index": 1}}


def test_tf_config_valid() -> None:
    c = parse_tf_config(json.dumps(TF_CONFIG), devices_per_task=2)
    assert [(t.job, t.index, t.address) for t in c.tasks] == [
        ("chief", 0, "c:2222"), ("ps", 0, "p:2222"), ("worker", 0, "h1:2222"),
        ("worker", 1, "h2:2222")]
    assert c.names[:2] == ("/job:chief/replica:0/task:0/device:CPU:0",
                           "/job:chief/replica:0/task:0/device:CPU:1")
    assert len(c.devices) == 8 and c.is_remote


def test_tf_config_from_environment(monkeypatch) -> None:
    monkeypatch.setenv("TF_CONFIG", json.dumps(TF_CONFIG))
    assert len(parse_tf_config().tasks) == 4


def test_tf_config_missing(monkeypatch) -> None:
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ClusterError, match="TF_CONFIG is not set"):
        parse_tf_config()


@pytest.mark.parametrize("value,text", [
    ('{"cluster": ', "not valid JSON"),
    ("[1]", "must be a JSON object"),
    ('{"task": {"type": "worker", "index": 0}}', 'has no "cluster"'),
    ('{"cluster": {"worker": "h1:2222"}}', "expected a non-empty list of 'host:port'"),
    ('{"cluster": {"worker": [2222]}}', "worker[0] = 2222"),
    ('{"cluster": {"worker": ["h1"]}}', "worker[0] = 'h1'"),
    ('{"cluster": {"worker": ["h1:99999"]}}', "port in 1..65535"),
    ('{"cluster": {"worker": ["h1:1"]}, "task": {"type": "ps", "index": 0}}',
     "type 'ps' is not a job of the cluster (jobs: worker)"),
    ('{"cluster": {"worker": ["h1:1"]}, "task": {"type": "worker", "index": 4}}',
     "index 4 is not a task of job 'worker' (valid: 0..0)"),
])
def test_tf_config_malformed(value: str, text: str) -> None:
    with pytest.raises(ClusterError) as info:
        parse_tf_config(value)
    assert text in str(info.value)


def test_tf_config_json_error_has_position() -> None:
    with pytest.raises(ClusterError, match=r"line 1, column \d+ \(char \d+\)"):
        parse_tf_config('{"cluster": {"worker": ["h:1",]}}')


def test_link_profile_parses_round_trips_and_reports_bad_figures() -> None:
    from tfplace.cluster import Cluster
    from tfplace.link_profile import LinkProfile
    c = parse_yaml_text(VALID + """
link_profile:
  message_seconds: 190us
  ring_bandwidth: {2: 628MB/s, 3: 447MB/s}
  fanin_bandwidth: {1: 1GB/s}
  host: {alltoall_bandwidth: {3: 2.4Gbps}}
""")
    assert c.link_profile.message_seconds == pytest.approx(1.9e-4)
    assert dataclasses.replace(c.link_profile, message_seconds=0.0) == LinkProfile(
        ring_bandwidth=((2, 6.28e8), (3, 4.47e8)),
        fanin_bandwidth=((1, 1e9),), host=LinkProfile(alltoall_bandwidth=((3, 3e8),)))
    assert Cluster.from_proto(c.to_proto()) == c
    assert parse_yaml_text(VALID).link_profile is None
    msg = _error(VALID + "link_profile: {message_second: 1, ring_bandwidth: {0: fast}, "
                 "fanout_bandwidth: {2: -1}, host: {host: {}}}\n")
    assert "unknown key 'message_second' in link_profile; did you mean 'message_seconds'?" in msg
    assert "link_profile.ring_bandwidth: count 0 must be an int >= 1" in msg
    assert "link_profile.fanout_bandwidth[2] = -1: must be > 0 bytes/s" in msg
    assert "unknown key 'host' in link_profile.host" in msg
    assert "4 problems" in msg
