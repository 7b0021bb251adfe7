"""A measured link profile: what a calibration found beyond one link's bandwidth and latency."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tfplace.errors import PlanError

__all__ = ["LinkProfile", "PATTERNS"]

# the measured patterns: field name, proto field, YAML key
PATTERNS = (("ring_bandwidth", "ring"), ("alltoall_bandwidth", "alltoall"),
            ("fanin_bandwidth", "fanin"), ("fanout_bandwidth", "fanout"))


@dataclass(frozen=True)
class LinkProfile:
    """Contended bandwidths and per-message host cost, as a link calibration measured them.

    message_seconds     o, host seconds per message while many are in flight (>= 0)
    ring_bandwidth      ((m, bytes/s per flow while m ring flows run at once), ...)
    alltoall_bandwidth  ((m, bytes/s into each node while m nodes all send to each other), ...)
    fanin_bandwidth     ((k, aggregate bytes/s into one node from k senders at once), ...)
    fanout_bandwidth    ((k, aggregate bytes/s out of one node to k receivers at once), ...)
    host                the same patterns when the hosts, not the link, are the limit (measured
                        over loopback): what copying the bytes costs the hosts' cores. None:
                        copies are free and only the messages load the hosts.

    A count with no entry uses the cluster's link bandwidth (the plain model); a count the host
    profile does not cover costs the hosts nothing for its bytes.
    """

    message_seconds: float = 0.0
    ring_bandwidth: tuple[tuple[int, float], ...] = ()
    alltoall_bandwidth: tuple[tuple[int, float], ...] = ()
    fanin_bandwidth: tuple[tuple[int, float], ...] = ()
    fanout_bandwidth: tuple[tuple[int, float], ...] = ()
    host: "LinkProfile | None" = None

    def __post_init__(self) -> None:
        for attr, _field in PATTERNS:          # one order, so equal profiles compare equal
            object.__setattr__(self, attr, tuple(sorted((int(m), float(bw))
                                                        for m, bw in getattr(self, attr))))
        bad = [f"message_seconds={self.message_seconds!r}"] if not self.message_seconds >= 0 \
            else []
        bad += [f"{m}: {bw!r}" for m, bw in self.ring_bandwidth + self.alltoall_bandwidth
                + self.fanin_bandwidth + self.fanout_bandwidth if not bw > 0]
        if bad:
            raise PlanError(f"link profile figures must be positive ({', '.join(bad)}); "
                            "recalibrate the links")

    def ring_bw(self, n: int, default: float | None) -> float | None:
        return dict(self.ring_bandwidth).get(n, default)

    def alltoall_bw(self, n: int, default: float | None) -> float | None:
        return dict(self.alltoall_bandwidth).get(n, default)

    def fanin_bw(self, k: int, default: float | None) -> float | None:
        return dict(self.fanin_bandwidth).get(k, default)

    def fanout_bw(self, k: int, default: float | None) -> float | None:
        return dict(self.fanout_bandwidth).get(k, default)

    def to_proto(self) -> Any:
        from tfplace._pb import cluster_pb2
        p = cluster_pb2.LinkProfile(message_seconds=self.message_seconds)
        for attr, field in PATTERNS:
            getattr(p, field).extend(cluster_pb2.BandwidthAt(count=m, bandwidth=bw)
                                     for m, bw in sorted(getattr(self, attr)))
        if self.host is not None:
            p.host.CopyFrom(self.host.to_proto())
        return p

    @classmethod
    def from_proto(cls, p: Any) -> "LinkProfile":
        figures = {attr: tuple((int(e.count), float(e.bandwidth)) for e in getattr(p, field))
                   for attr, field in PATTERNS}
        host = cls.from_proto(p.host) if p.HasField("host") else None
        return cls(message_seconds=float(p.message_seconds), host=host, **figures)
