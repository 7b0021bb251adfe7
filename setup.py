"""Build hook: generate tfplace/_pb/*_pb2.py from protos/*.proto before the package is copied."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class BuildPyWithProtos(build_py):
    """build_py that first runs tfplace/_pb/generate.py into the source tree (so -e installs work too)."""

    def run(self) -> None:
        # Loaded by path: importing the tfplace package during the build is not needed.
        spec = importlib.util.spec_from_file_location("_tfplace_generate",
                                                      ROOT / "tfplace" / "_pb" / "generate.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        for path in module.generate(ROOT / "tfplace" / "_pb", ROOT / "protos"):
            print(f"generated {path.relative_to(ROOT)}")
        super().run()


setup(cmdclass={"build_py": BuildPyWithProtos})
