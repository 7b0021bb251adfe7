"""TensorFlow's start-up log lines, held to ``TF_CPP_MIN_LOG_LEVEL`` for the CLI.

On hosts where TF runs oneDNN's kernels, TF 2.21 logs "oneDNN custom operations are on" (with
absl's notice that logging is not initialised yet) while its libraries load, before its own
level filter applies, so ``TF_CPP_MIN_LOG_LEVEL`` does not hide them. The CLI promises one
readable message on stderr: ``quiet_tensorflow_import()`` makes the process's first
``import tensorflow`` capture file descriptor 2, then write back only the entries at or above
the level. Nothing else is touched: later output goes straight to stderr.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import re
import sys
import tempfile
from types import ModuleType
from typing import Any, Sequence

# "I1128 01:05:31.786653    1868 port.cc:153] message": severity, date, time, thread, source;
# before absl is initialised the time reads "00:00:<epoch seconds>.<micros>"
_ENTRY = re.compile(r"^([IWEF])\d{4} \d\d:\d\d:\d+(?:\.\d+)? +\d+ [^\]\s]+\] ")
_SEVERITY = {"I": 0, "W": 1, "E": 2, "F": 3}
_NOTICE = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"


def min_level() -> int:
    try:
        return int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0"))
    except ValueError:
        return 0


def filter_log(text: str, level: int) -> str:
    """``text`` without the log entries below ``level`` (0 INFO, 1 WARNING, 2 ERROR). An entry
    runs from its prefixed line to the next one; absl's not-initialised notice counts as INFO;
    lines before the first entry are kept."""
    out = []
    keep = True
    for line in text.splitlines(keepends=True):
        entry = _ENTRY.match(line)
        if entry:
            keep = _SEVERITY[entry.group(1)] >= level
        elif line.rstrip("\r\n") == _NOTICE:
            keep = level < 1
        if keep:
            out.append(line)
    return "".join(out)


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        """Run the import with descriptor 2 in a file; Python's own writes to ``sys.stderr``
        (warnings) go past it to the real stderr, so only TF's C++ log is captured."""
        sys.stderr.flush()
        saved = os.dup(2)
        python_stderr = sys.stderr
        with tempfile.TemporaryFile(mode="w+b") as captured, \
                open(saved, "w", closefd=False) as real:
            os.dup2(captured.fileno(), 2)
            sys.stderr = real
            try:
                self._loader.exec_module(module)
            finally:
                real.flush()
                sys.stderr = python_stderr
                os.dup2(saved, 2)
                os.close(saved)
                captured.seek(0)
                kept = filter_log(captured.read().decode(errors="replace"), min_level())
                if kept:
                    sys.stderr.write(kept)
                    sys.stderr.flush()

    def __getattr__(self, name: str) -> Any:      # get_source, is_package, ... for tools
        return getattr(self._loader, name)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if name != "tensorflow":
            return None
        sys.meta_path[:] = [f for f in sys.meta_path if f is not self]     # the first import only
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def quiet_tensorflow_import() -> None:
    """Filter the first ``import tensorflow`` of this process (a no-op once it is imported)."""
    if "tensorflow" in sys.modules or any(isinstance(f, _Finder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _Finder())
