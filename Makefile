# tfplace developer targets. `make demo` and `make test` work on a machine with only python3 + pip.
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.tfplace-installed

.PHONY: venv install protos ops test typecheck demo horovod clean

venv: $(VPY)

$(VPY):
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install --upgrade pip

# Reinstall only when the packaging changes; `make install` forces it.
$(STAMP): $(VPY) pyproject.toml setup.py
	$(VPY) -m pip install -e '.[cpu,dev]'
	touch $(STAMP)

install: $(VPY)
	$(VPY) -m pip install -e '.[cpu,dev]'
	touch $(STAMP)
	$(MAKE) protos

# Regenerated with the venv's own grpcio-tools so the code matches its protobuf runtime.
protos: $(STAMP)
	$(VPY) -m tfplace._pb.generate

# The inter-stage channel kernel (custom_ops/channel.cc), built against the venv's TensorFlow.
# Rebuilt when the source is newer; the TF version is compiled in and checked at load
# (tfplace/runtime/channel.py). About a minute on 2 cores.
OPS_SO := custom_ops/_tfplace_channel.so
TF_CFLAGS = $$($(VPY) -c 'import tensorflow as tf; print(" ".join(tf.sysconfig.get_compile_flags()))' 2>/dev/null)
TF_LFLAGS = $$($(VPY) -c 'import tensorflow as tf; print(" ".join(tf.sysconfig.get_link_flags()))' 2>/dev/null)
TF_VERSION = $$($(VPY) -c 'import tensorflow as tf; print(tf.__version__)' 2>/dev/null)

ops: $(OPS_SO)

$(OPS_SO): custom_ops/channel.cc | $(STAMP)
	g++ -std=c++17 -shared -fPIC -O2 -Wno-deprecated-declarations $(TF_CFLAGS) -DTFPLACE_TF_VERSION="\"$(TF_VERSION)\"" \
	    $< -o $@ $(TF_LFLAGS)

# TFPLACE_REQUIRE_OPS: the C++ channel tests fail instead of skipping when the op is missing.
# Two pytest processes (pytest-xdist): many tests wait on worker start-up and RPCs, and the
# suite took 194-206 s with two against 329-401 s with one on 2 cores (2026-11-28).
# TEST_PROCS=0 runs it in one.
TEST_PROCS ?= 2
test: $(STAMP) protos ops
	TFPLACE_REQUIRE_OPS=1 $(VPY) -m pytest -q -p no:cacheprovider --durations=25 -n $(TEST_PROCS) tests

typecheck: $(STAMP)
	$(VPY) -m mypy tfplace --ignore-missing-imports

demo: $(STAMP) protos ops
	$(VPY) examples/demo.py

# Horovod 0.28.1 patched for this TF (see README "Horovod backend"): the first run builds a wheel
# into $TFPLACE_CACHE (default ~/.cache/tfplace; 10-20 min on 2 cores), later runs only install it.
horovod: $(STAMP)
	PYTHON=$(VPY) tools/build_horovod.sh

clean:
	rm -rf build dist *.egg-info tfplace/_pb/*_pb2.py tfplace/_pb/*_pb2.pyi $(OPS_SO)
	find . -name __pycache__ -not -path './$(VENV)/*' -prune -exec rm -rf {} +
