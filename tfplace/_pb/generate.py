"""Generates tfplace/_pb/*_pb2.py from protos/*.proto with grpc_tools.protoc (build, make, tests)."""
from __future__ import annotations

import re
import sys
from pathlib import Path

__all__ = ["PROTO_DIR", "PB_DIR", "MODULES", "generate"]

PB_DIR = Path(__file__).resolve().parent
PROTO_DIR = PB_DIR.parents[1] / "protos"
MODULES = ("cluster_pb2.py", "plan_pb2.py", "splits_pb2.py")

# protoc writes `import cluster_pb2` for `import "cluster.proto"`; the package needs an absolute import.
_BARE_IMPORT = re.compile(r"^import (\w+_pb2) as (\w+)$", re.MULTILINE)


def generate(out_dir: str | Path, proto_dir: str | Path = PROTO_DIR) -> list[Path]:
    """Write one *_pb2.py per protos/*.proto (MODULES) into out_dir; returns the paths written."""
    import subprocess
    from importlib import resources

    out, src = Path(out_dir), Path(proto_dir)
    protos = sorted(p.name for p in src.glob("*.proto"))
    if not protos:
        raise FileNotFoundError(f"no .proto files in {src}; run from a tfplace source checkout")
    out.mkdir(parents=True, exist_ok=True)
    well_known = str(resources.files("grpc_tools") / "_proto")
    # A child process: protoc's C++ protobuf clashes with TensorFlow's when both are loaded.
    args = [sys.executable, "-m", "grpc_tools.protoc", f"-I{src}", f"-I{well_known}",
            f"--python_out={out}", *protos]
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"grpc_tools.protoc failed on {', '.join(protos)} in {src}:\n"
                           f"{done.stderr.strip()}")
    written = []
    for proto in protos:
        path = out / (Path(proto).stem + "_pb2.py")
        text = path.read_text()
        fixed = _BARE_IMPORT.sub(r"from tfplace._pb import \1 as \2", text)
        if fixed != text:
            path.write_text(fixed)
        written.append(path)
    return written


if __name__ == "__main__":
    for p in generate(sys.argv[1] if len(sys.argv) > 1 else PB_DIR):
        print(f"wrote {p}")
