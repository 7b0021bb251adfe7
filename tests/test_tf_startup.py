"""TF's start-up log lines are held to TF_CPP_MIN_LOG_LEVEL in the CLI (tfplace/tf_startup.py)."""
from __future__ import annotations

import os
import subprocess
import sys

from tfplace.tf_startup import filter_log

LOG = (
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
    "I0000 00:00:1795828005.786653    1868 port.cc:153] oneDNN custom operations are on.\n"
    "I0000 00:00:1795829113.607960    9134 cpu_feature_guard.cc:227] This TensorFlow binary is "
    "optimized\n"
    "To enable the following instructions: AVX2 AVX512F, rebuild TensorFlow.\n"
    "W0000 00:00:1795829113.700000    9134 loader.cc:10] a warning\n"
    "  its second line\n"
    "E0000 00:00:1795829113.800000    9134 loader.cc:11] an error\n")


def test_entries_below_the_level_go_with_their_continuation_lines() -> None:
    assert filter_log(LOG, 0) == LOG
    assert filter_log(LOG, 1) == (
        "W0000 00:00:1795829113.700000    9134 loader.cc:10] a warning\n  its second line\n"
        "E0000 00:00:1795829113.800000    9134 loader.cc:11] an error\n")
    assert filter_log(LOG, 2) == "E0000 00:00:1795829113.800000    9134 loader.cc:11] an error\n"
    assert filter_log(LOG, 3) == ""


def test_text_that_is_not_a_log_entry_is_kept() -> None:
    text = "Traceback (most recent call last):\n  boom\n"
    assert filter_log(text, 3) == text
    assert filter_log(text + LOG, 2).startswith(text)


def test_the_first_tensorflow_import_is_filtered_and_works() -> None:
    code = ("import sys; from tfplace.tf_startup import quiet_tensorflow_import, _Finder\n"
            "quiet_tensorflow_import()\n"
            "import tensorflow as tf\n"
            "assert not any(isinstance(f, _Finder) for f in sys.meta_path)\n"
            "print(int(tf.constant(2) + 3))\n"
            "print('after', file=sys.stderr)\n")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "5\n"
    assert out.stderr == "after\n", out.stderr


def test_python_warnings_during_the_import_are_not_filtered(tmp_path) -> None:
    """Python's own writes to sys.stderr during the import pass the filter untouched."""
    pkg = tmp_path / "tensorflow"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        "import os, sys, warnings\n"
        "os.write(2, b'I0000 00:00:1795828005.786653    1868 port.cc:153] info line\\n')\n"
        "warnings.warn('from python')\n"
        "os.write(2, b'E0000 00:00:1795828005.786653    1868 port.cc:154] error line\\n')\n")
    code = ("from tfplace.tf_startup import quiet_tensorflow_import\n"
            "quiet_tensorflow_import()\n"
            "import tensorflow\n")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="1",
               PYTHONPATH=os.pathsep.join([str(tmp_path), *sys.path]))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert "UserWarning: from python" in out.stderr
    assert "info line" not in out.stderr
    assert "error line" in out.stderr
