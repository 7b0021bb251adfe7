"""Cluster descriptions from outside: the cluster YAML file and the TF_CONFIG environment variable."""
from __future__ import annotations

import difflib
import json
import os
import re
from typing import Any, cast

from tfplace.cluster import (DEFAULT_BANDWIDTH, DEFAULT_FLOPS, DEFAULT_LATENCY, DEFAULT_MEMORY,
                             GRPC_BANDWIDTH, GRPC_LATENCY, KINDS, Cluster, Device, Link, Task,
                             grpc_cluster, task_prefix)
from tfplace.errors import ClusterError, bullets

__all__ = ["load_yaml", "parse_yaml_text", "parse_tf_config", "parse_bytes", "parse_bandwidth",
           "parse_seconds", "parse_address"]

TOP_KEYS = ("devices", "links", "default_link", "tasks", "link_profile")
PROFILE_KEYS = ("message_seconds", "ring_bandwidth", "alltoall_bandwidth", "fanin_bandwidth",
                "fanout_bandwidth", "host")
DEVICE_KEYS = ("name", "kind", "memory", "flops")
LINK_KEYS = ("between", "bandwidth", "latency")
DEFAULT_LINK_KEYS = ("bandwidth", "latency")

_DEVICE_NAME = re.compile(r"^/job:[\w-]+/replica:\d+/task:\d+/device:([A-Z]+):\d+$")
_TASK_PREFIX = re.compile(r"^/job:[\w-]+/replica:\d+/task:\d+$")
_JOB = re.compile(r"^[A-Za-z_][\w-]*$")
_NUMBER = r"([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"
_BYTE_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
               "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
_BIT_UNITS = {"BPS": 1, "KBPS": 10**3, "MBPS": 10**6, "GBPS": 10**9, "TBPS": 10**12}
_TIME_UNITS = {"": 1.0, "S": 1.0, "MS": 1e-3, "US": 1e-6, "NS": 1e-9}
_EXAMPLE_DEVICE = "/job:worker/replica:0/task:0/device:CPU:0"


# -- scalar parsers: each returns a value or raises ValueError with the fix -----------------------
def _split_unit(value: str) -> tuple[float, str]:
    m = re.fullmatch(_NUMBER + r"\s*([A-Za-z/]*)", value.strip())
    if not m:
        raise ValueError("not a number")
    return float(m.group(1)), m.group(2).upper()


def parse_bytes(value: Any) -> int:
    """8589934592, '8GiB', '512 MB' -> bytes (> 0)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError("expected bytes as an integer or a string like '8GiB'")
    if isinstance(value, str):
        try:
            number, unit = _split_unit(value)
        except ValueError:
            number, unit = 0.0, "?"
        if unit not in _BYTE_UNITS:
            raise ValueError("expected an integer or a number with B/KB/MB/GB/TB/KiB/MiB/GiB/TiB "
                             "(e.g. '8GiB')")
        value = number * _BYTE_UNITS[unit]
    if value <= 0:
        raise ValueError("must be > 0 bytes")
    return int(value)


def parse_bandwidth(value: Any) -> float:
    """1.25e9, '1.25GB/s', '10Gbps' -> bytes per second (> 0)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError("expected bytes/s as a number or a string like '10Gbps' or '1.25GB/s'")
    if isinstance(value, str):
        try:
            number, unit = _split_unit(value)
        except ValueError:
            number, unit = 0.0, "?"
        if unit in _BIT_UNITS:
            value = number * _BIT_UNITS[unit] / 8
        elif unit.endswith("/S") and unit[:-2] in _BYTE_UNITS:
            value = number * _BYTE_UNITS[unit[:-2]]
        elif unit == "":
            value = number
        else:
            raise ValueError("expected bytes/s as a number or a string like '10Gbps' or '1.25GB/s'")
    if value <= 0:
        raise ValueError("must be > 0 bytes/s")
    return float(value)


def parse_seconds(value: Any) -> float:
    """5e-5, '50us', '0.1ms' -> seconds (>= 0)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError("expected seconds as a number or a string like '50us'")
    if isinstance(value, str):
        try:
            number, unit = _split_unit(value)
        except ValueError:
            number, unit = 0.0, "?"
        if unit not in _TIME_UNITS:
            raise ValueError("expected seconds as a number or a string with s/ms/us/ns")
        value = number * _TIME_UNITS[unit]
    if value < 0:
        raise ValueError("must be >= 0 seconds")
    return float(value)


def _parse_flops(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError("expected peak FLOP/s as a number like 2e10")
    try:
        flops = float(value)
    except ValueError:
        raise ValueError("expected peak FLOP/s as a number like 2e10") from None
    if not flops > 0:
        raise ValueError("must be > 0 FLOP/s")
    return flops


def parse_address(value: Any) -> str:
    """'host:port' with a port in 1..65535 (IPv6 as '[::1]:2222')."""
    if not isinstance(value, str) or ":" not in value:
        raise ValueError("expected a 'host:port' string")
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("expected a 'host:port' string with a port in 1..65535")
    return value


# -- YAML ----------------------------------------------------------------------------------------
def _unknown_keys(where: str, mapping: dict, allowed: tuple[str, ...], problems: list[str]) -> None:
    for key in mapping:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            problems.append(f"unknown key {key!r} in {where}; {hint}"
                            f"allowed keys: {', '.join(allowed)}")


def _field(where: str, mapping: dict, key: str, parse: Any, default: Any,
           problems: list[str]) -> Any:
    if key not in mapping:
        return default
    try:
        return parse(mapping[key])
    except ValueError as e:
        problems.append(f"{where}.{key} = {mapping[key]!r}: {e}")
        return default


def _parse_devices(raw: Any, problems: list[str]) -> list[Device]:
    if raw is None or raw == []:
        problems.append("'devices' is missing or empty; list at least one device, e.g. "
                        f"devices: [{{name: {_EXAMPLE_DEVICE}, memory: 8GiB}}]")
        return []
    if not isinstance(raw, list):
        problems.append(f"'devices' must be a list of mappings (got {type(raw).__name__})")
        return []
    devices: list[Device] = []
    seen: dict[str, int] = {}
    for i, d in enumerate(raw):
        where = f"devices[{i}]"
        if not isinstance(d, dict):
            problems.append(f"{where} must be a mapping with keys {', '.join(DEVICE_KEYS)} "
                            f"(got {d!r})")
            continue
        _unknown_keys(where, d, DEVICE_KEYS, problems)
        name = d.get("name")
        m = _DEVICE_NAME.match(name) if isinstance(name, str) else None
        if m is None:
            problems.append(f"{where}.name = {name!r}: expected a full TF device name like "
                            f"{_EXAMPLE_DEVICE!r}")
            name = f"<{where}>"
        elif name in seen:
            problems.append(f"duplicate device name {name!r} (devices[{seen[name]}] and {where}); "
                            "give every device a unique name")
        else:
            seen[cast(str, name)] = i                # m matched, so name is a str
        named_kind = m.group(1) if m and m.group(1) in KINDS else "CPU"
        kind = d.get("kind", named_kind)
        if kind not in KINDS:
            problems.append(f"{where}.kind = {kind!r}: unknown kind; use one of {', '.join(KINDS)}")
            kind = "CPU"
        memory = _field(where, d, "memory", parse_bytes, DEFAULT_MEMORY, problems)
        flops = _field(where, d, "flops", _parse_flops, DEFAULT_FLOPS, problems)
        devices.append(Device(str(name), str(kind), memory, flops))
    return devices


def _known_ends(devices: list[Device], tasks: list[Task]) -> set[str]:
    ends = {d.name for d in devices} | {task_prefix(d.name) for d in devices}
    return ends | {t.prefix for t in tasks}


def _parse_links(raw: Any, devices: list[Device], tasks: list[Task],
                 problems: list[str]) -> list[Link]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        problems.append(f"'links' must be a list of mappings (got {type(raw).__name__})")
        return []
    known = _known_ends(devices, tasks)
    links: list[Link] = []
    for i, ln in enumerate(raw):
        where = f"links[{i}]"
        if not isinstance(ln, dict):
            problems.append(f"{where} must be a mapping with keys {', '.join(LINK_KEYS)} (got {ln!r})")
            continue
        _unknown_keys(where, ln, LINK_KEYS, problems)
        between = ln.get("between")
        if (not isinstance(between, list) or len(between) != 2
                or not all(isinstance(e, str) for e in between)):
            problems.append(f"{where}.between = {between!r}: expected two device names or task "
                            "prefixes, e.g. [/job:worker/replica:0/task:0, /job:worker/replica:0/task:1]")
            continue
        for end in between:
            if end not in known:
                kind = "task" if _TASK_PREFIX.match(end) else "device"
                problems.append(f"{where}.between names the {kind} {end!r}, which is not in this "
                                f"cluster; use one of: {', '.join(sorted(known))}")
        if "bandwidth" not in ln:
            problems.append(f"{where} has no bandwidth; add e.g. bandwidth: 1.25GB/s")
        bw = _field(where, ln, "bandwidth", parse_bandwidth, DEFAULT_BANDWIDTH, problems)
        lat = _field(where, ln, "latency", parse_seconds, 0.0, problems)
        links.append(Link(between[0], between[1], bw, lat))
    return links


def _parse_tasks(raw: Any, where: str, problems: list[str]) -> list[Task]:
    """{job: [host:port, ...]} -> Tasks sorted by job then index."""
    if raw is None:
        return []
    if not isinstance(raw, dict):
        problems.append(f"{where} must map job names to lists of 'host:port' (got {raw!r})")
        return []
    tasks: list[Task] = []
    for job in sorted(raw, key=str):
        addrs = raw[job]
        if not isinstance(job, str) or not _JOB.match(job):
            problems.append(f"{where} job name {job!r} is not a valid name (letters, digits, _ or -)")
            continue
        if not isinstance(addrs, list) or not addrs:
            problems.append(f"{where}.{job} = {addrs!r}: expected a non-empty list of 'host:port' "
                            'strings, e.g. ["host1:2222", "host2:2222"]')
            continue
        for i, addr in enumerate(addrs):
            try:
                tasks.append(Task(job, i, parse_address(addr)))
            except ValueError as e:
                problems.append(f"{where}.{job}[{i}] = {addr!r}: {e}")
    return tasks


def parse_yaml_text(text: str, *, source: str = "<cluster yaml>") -> Cluster:
    """A Cluster from the text of a cluster YAML; every problem is reported in one ClusterError."""
    import yaml

    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ClusterError(f"{source}: invalid YAML{where}: {problem}") from None
    if not isinstance(doc, dict):
        raise ClusterError(f"{source}: a cluster file must be a mapping with keys "
                           f"{', '.join(TOP_KEYS)} (got {type(doc).__name__})")
    problems: list[str] = []
    _unknown_keys("the cluster file", doc, TOP_KEYS, problems)
    devices = _parse_devices(doc.get("devices"), problems)
    tasks = _parse_tasks(doc.get("tasks"), "tasks", problems)
    links = _parse_links(doc.get("links"), devices, tasks, problems)
    if tasks:
        prefixes = {t.prefix for t in tasks}
        for d in devices:
            if d.name.startswith("/job:") and task_prefix(d.name) not in prefixes:
                problems.append(f"device {d.name!r} belongs to no task in 'tasks' "
                                f"(tasks: {', '.join(sorted(prefixes))}); add its task's address")
    spans_tasks = len({task_prefix(d.name) for d in devices}) > 1
    bandwidth = GRPC_BANDWIDTH if spans_tasks else DEFAULT_BANDWIDTH
    latency = GRPC_LATENCY if spans_tasks else DEFAULT_LATENCY
    dl = doc.get("default_link")
    if dl is not None:
        if not isinstance(dl, dict):
            problems.append(f"default_link = {dl!r}: expected a mapping like "
                            "{bandwidth: 1e9, latency: 1e-4}")
        else:
            _unknown_keys("default_link", dl, DEFAULT_LINK_KEYS, problems)
            bandwidth = _field("default_link", dl, "bandwidth", parse_bandwidth, bandwidth, problems)
            latency = _field("default_link", dl, "latency", parse_seconds, latency, problems)
    profile = (_parse_profile("link_profile", doc["link_profile"], problems)
               if doc.get("link_profile") is not None else None)
    if problems:
        raise ClusterError(bullets(f"{source}: invalid cluster ({len(problems)} problem"
                                   f"{'s' if len(problems) > 1 else ''}):", problems))
    return Cluster(devices=tuple(devices), links=tuple(links), default_bandwidth=bandwidth,
                   default_latency=latency, tasks=tuple(tasks), link_profile=profile)


def _parse_profile(where: str, raw: Any, problems: list[str]) -> Any:
    """link_profile: {message_seconds: 190us, ring_bandwidth: {3: 447MB/s}, ..., host: {...}}."""
    from tfplace.link_profile import LinkProfile
    if not isinstance(raw, dict):
        problems.append(f"{where} = {raw!r}: expected a mapping like "
                        "{message_seconds: 190us, ring_bandwidth: {3: 447MB/s}}")
        return None
    _unknown_keys(where, raw, PROFILE_KEYS if where == "link_profile" else PROFILE_KEYS[:-1],
                  problems)
    figures: dict[str, Any] = {}
    for key in PROFILE_KEYS[1:-1]:
        table = raw.get(key) or {}
        if not isinstance(table, dict):
            problems.append(f"{where}.{key} = {table!r}: expected a mapping of peer count to "
                            "bytes/s, like {2: 628MB/s, 3: 447MB/s}")
            continue
        rows = []
        for count, bw in table.items():
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                problems.append(f"{where}.{key}: count {count!r} must be an int >= 1")
                continue
            try:
                rows.append((count, parse_bandwidth(bw)))
            except ValueError as e:
                problems.append(f"{where}.{key}[{count}] = {bw!r}: {e}")
        figures[key] = tuple(rows)
    o = _field(where, raw, "message_seconds", parse_seconds, 0.0, problems)
    host = (_parse_profile(f"{where}.host", raw["host"], problems)
            if where == "link_profile" and raw.get("host") is not None else None)
    return LinkProfile(message_seconds=o, host=host, **figures)


def load_yaml(path: str | os.PathLike[str]) -> Cluster:
    """A Cluster from a cluster YAML file (see README, "Cluster files")."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ClusterError(f"cluster file {os.fspath(path)!r} does not exist; pass the path of a "
                           "cluster YAML, or local:N, launch:WxD or tf_config") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ClusterError(f"cannot read cluster file {os.fspath(path)!r}: {e}") from None
    return parse_yaml_text(text, source=os.fspath(path))


# -- TF_CONFIG -----------------------------------------------------------------------------------
_TF_CONFIG_EXAMPLE = ('{"cluster": {"worker": ["host1:2222", "host2:2222"]}, '
                      '"task": {"type": "worker", "index": 0}}')


def parse_tf_config(value: str | None = None, *, devices_per_task: int = 1,
                    memory: int = DEFAULT_MEMORY, flops: float = DEFAULT_FLOPS) -> Cluster:
    """A gRPC Cluster from TF_CONFIG JSON (the environment variable when value is None)."""
    if value is None:
        value = os.environ.get("TF_CONFIG")
        if value is None:
            raise ClusterError("TF_CONFIG is not set; export it as JSON like "
                               f"{_TF_CONFIG_EXAMPLE} or pass a cluster YAML instead")
    if isinstance(devices_per_task, bool) or not isinstance(devices_per_task, int) \
            or devices_per_task < 1:
        raise ClusterError(f"devices_per_task must be an integer >= 1 (got {devices_per_task!r})")
    try:
        doc = json.loads(value)
    except json.JSONDecodeError as e:
        raise ClusterError(f"TF_CONFIG is not valid JSON: {e.msg} at line {e.lineno}, column "
                           f"{e.colno} (char {e.pos}); expected e.g. {_TF_CONFIG_EXAMPLE}") from None
    if not isinstance(doc, dict):
        raise ClusterError(f"TF_CONFIG must be a JSON object (got {type(doc).__name__}); "
                           f"expected e.g. {_TF_CONFIG_EXAMPLE}")
    if "cluster" not in doc or not doc["cluster"]:
        raise ClusterError('TF_CONFIG has no "cluster" (or it is empty); expected e.g. '
                           f"{_TF_CONFIG_EXAMPLE}")
    problems: list[str] = []
    tasks = _parse_tasks(doc["cluster"], 'TF_CONFIG "cluster"', problems)
    task = doc.get("task")
    if task is not None and not problems:
        if not isinstance(task, dict):
            problems.append(f'TF_CONFIG "task" = {task!r}: expected {{"type": JOB, "index": N}}')
        else:
            jobs = sorted({t.job for t in tasks})
            kind, index = task.get("type"), task.get("index", 0)
            sizes = {j: sum(1 for t in tasks if t.job == j) for j in jobs}
            if kind not in sizes:
                problems.append(f'TF_CONFIG "task" type {kind!r} is not a job of the cluster '
                                f"(jobs: {', '.join(jobs)})")
            elif isinstance(index, bool) or not isinstance(index, int) \
                    or not 0 <= index < sizes[kind]:
                problems.append(f'TF_CONFIG "task" index {index!r} is not a task of job {kind!r} '
                                f"(valid: 0..{sizes[kind] - 1})")
    if problems:
        raise ClusterError(bullets(f"TF_CONFIG is malformed ({len(problems)} problem"
                                   f"{'s' if len(problems) > 1 else ''}):", problems))
    return grpc_cluster(tasks, devices_per_task, memory=memory, flops=flops)
