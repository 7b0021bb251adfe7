#!/usr/bin/env bash
# Build Horovod 0.28.1 for the venv's TensorFlow (CPU, Gloo only), cache the wheel outside the
# repo, and install it. Used by `make horovod`; see "Horovod backend" in README.md.
#
# First run: download the sdist, patch horovod/tensorflow/CMakeLists.txt so it no longer compiles
# xla_mpi_ops.cc (its XLA headers are not shipped by TF 2.21), build a wheel, cache it. Later runs
# find the cached wheel (keyed by Horovod version, TF version and Python ABI) and only install it.
#
# Environment:
#   PYTHON                 interpreter to build for and install into (default: <repo>/.venv/bin/python)
#   TFPLACE_CACHE          cache directory (default: $HOME/.cache/tfplace)
#   HOROVOD_BUILD_JOBS     parallel compile jobs (default: number of CPUs)
#   HOROVOD_BUILD_VERBOSE  1: also echo the compiler output (it always goes to the build log)
#   HOROVOD_REBUILD        1: ignore a cached wheel and build again
set -euo pipefail

HOROVOD_VERSION=0.28.1
# sha256 of horovod-0.28.1.tar.gz as published on PyPI
HOROVOD_SDIST_SHA256=92a43f5a94c43907a56805bad15f19700c62ffc83b7ca483f9e104e229f67ef0

die() { echo "build_horovod: error: $*" >&2; exit 1; }
say() { echo "build_horovod: $*"; }

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-$repo/.venv/bin/python}
[ -x "$PYTHON" ] || die "no interpreter at $PYTHON; run 'make install' first (or set PYTHON)"
PYTHON=$(cd "$(dirname "$PYTHON")" && pwd)/$(basename "$PYTHON")   # absolute: later steps cd
cache=$(realpath -m "${TFPLACE_CACHE:-$HOME/.cache/tfplace}")
case "$cache/" in "$(realpath "$repo")"/*) die "cache $cache is inside the repo; set TFPLACE_CACHE elsewhere";; esac
mkdir -p "$cache"

# TF version from the installed distribution's metadata (cheap: does not import TensorFlow).
read -r tf_version py_tag < <("$PYTHON" - <<'EOF'
import importlib.metadata as md, sys
for name in ("tensorflow", "tensorflow-cpu", "tensorflow-intel", "tf-nightly", "tf-nightly-cpu"):
    try:
        v = md.version(name)
        break
    except md.PackageNotFoundError:
        pass
else:
    v = "none"
print(v, "cp%d%d" % sys.version_info[:2])
EOF
)
[ "$tf_version" != none ] || die "TensorFlow is not installed for $PYTHON; run 'make install' first"

key="horovod-$HOROVOD_VERSION-tf$tf_version-$py_tag"
wheel_dir=$cache/wheels/$key
work=$cache/build/horovod-$HOROVOD_VERSION
log=$cache/build/$key.log

# Runtime dependencies of horovod (also its setup_requires: without them setup.py falls back to
# easy_install during the build).
deps="cloudpickle psutil pyyaml packaging"

install_wheel() {
    local whl=$1
    say "installing $whl"
    "$PYTHON" -m pip install --quiet --disable-pip-version-check "$whl" $deps
    say "done: $("$PYTHON" -m pip show horovod 2>/dev/null | sed -n 's/^Version: /horovod /p') in $("$PYTHON" -c 'import sys; print(sys.prefix)')"
}

shopt -s nullglob
cached=("$wheel_dir"/horovod-"$HOROVOD_VERSION"-*.whl)
if [ ${#cached[@]} -gt 0 ] && [ "${HOROVOD_REBUILD:-0}" != 1 ]; then
    say "using cached wheel ($key)"
    install_wheel "${cached[0]}"
    exit 0
fi

if ! command -v cmake >/dev/null; then     # a bare machine: cmake's PyPI wheel, into the venv
    say "cmake not found; installing it from PyPI into the venv"
    "$PYTHON" -m pip install --quiet --disable-pip-version-check "cmake>=3.13" \
        || die "cmake (>= 3.13) is required to build horovod; install it (apt-get install cmake)"
    export PATH="$(dirname "$PYTHON"):$PATH"
fi
command -v "${CXX:-g++}" >/dev/null || die "a C++17 compiler is required (g++ >= 9); install it (apt-get install g++)"

# 1. The sdist (cached; checked against the published sha256).
sdist=$cache/sdist/horovod-$HOROVOD_VERSION.tar.gz
if [ ! -f "$sdist" ]; then
    say "downloading horovod $HOROVOD_VERSION sdist"
    mkdir -p "$cache/sdist"
    "$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
        "horovod==$HOROVOD_VERSION" -d "$cache/sdist"
    [ -f "$sdist" ] || die "pip download did not produce $sdist"
fi
echo "$HOROVOD_SDIST_SHA256  $sdist" | sha256sum -c --quiet - \
    || die "$sdist does not match the published sha256; delete it and rerun"

# 2. A fresh source tree, patched.
rm -rf "$work"
mkdir -p "$work"
tar -xzf "$sdist" -C "$work" --strip-components=1
cmakelists=$work/horovod/tensorflow/CMakeLists.txt
pattern='^list(APPEND TF_SOURCES "\${PROJECT_SOURCE_DIR}/horovod/tensorflow/xla_mpi_ops.cc")$'
grep -q "$pattern" "$cmakelists" \
    || die "patch failed: the xla_mpi_ops.cc line was not found in $cmakelists (did the sdist change?)"
sed -i "\\#$pattern#d" "$cmakelists"
! grep -q 'xla_mpi_ops' "$cmakelists" || die "patch failed: xla_mpi_ops.cc is still listed in $cmakelists"
say "patched horovod/tensorflow/CMakeLists.txt: xla_mpi_ops.cc removed from TF_SOURCES"

# 3. Build dependencies into the target environment (--no-build-isolation builds against it).
"$PYTHON" -m pip install --quiet --disable-pip-version-check setuptools wheel $deps

# 4. The wheel. MAKEFLAGS also stops horovod's setup.py from forcing `make -j8`.
jobs=${HOROVOD_BUILD_JOBS:-$(nproc 2>/dev/null || echo 2)}
export HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 \
       HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 HOROVOD_CPU_OPERATIONS=gloo \
       HOROVOD_WITHOUT_NVTX=1 \
       MAKEFLAGS="-j$jobs"
unset HOROVOD_WITH_MPI HOROVOD_WITH_PYTORCH HOROVOD_WITH_MXNET HOROVOD_GPU HOROVOD_GPU_OPERATIONS \
      HOROVOD_GPU_ALLREDUCE HOROVOD_GPU_ALLGATHER HOROVOD_GPU_BROADCAST
out=$cache/build/wheel-out
rm -rf "$out"
mkdir -p "$out"
say "building horovod $HOROVOD_VERSION for TensorFlow $tf_version ($py_tag), $jobs jobs; this takes 10-20 minutes on 2 cores"
say "build log: $log"
start=$(date +%s)
build=("$PYTHON" -m pip wheel --verbose --disable-pip-version-check --no-build-isolation --no-deps
       --wheel-dir "$out" "$work")
if [ "${HOROVOD_BUILD_VERBOSE:-0}" = 1 ]; then
    "${build[@]}" 2>&1 | tee "$log" || { die "wheel build failed; full log: $log"; }
else
    if ! "${build[@]}" >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        die "wheel build failed (last lines above); full log: $log"
    fi
fi
built=("$out"/horovod-"$HOROVOD_VERSION"-*.whl)
[ ${#built[@]} -eq 1 ] || die "expected one horovod wheel in $out; full log: $log"
# The wheel must contain the TensorFlow op library, or `import horovod.tensorflow` fails later.
"$PYTHON" - "${built[0]}" <<'EOF' || die "the wheel has no horovod/tensorflow/mpi_lib; full log: $log"
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
sys.exit(0 if any(n.startswith("horovod/tensorflow/mpi_lib") and n.endswith(".so") for n in names) else 1)
EOF
say "built in $(( $(date +%s) - start ))s: $(basename "${built[0]}") ($(du -h "${built[0]}" | cut -f1))"

# 5. Cache it (rename within the cache filesystem, so a half-copied wheel is never picked up).
mkdir -p "$wheel_dir"
rm -f "$wheel_dir"/horovod-*.whl
mv "${built[0]}" "$wheel_dir/"
rm -rf "$out" "$work"
cached=("$wheel_dir"/horovod-"$HOROVOD_VERSION"-*.whl)
say "cached: ${cached[0]}"
install_wheel "${cached[0]}"
