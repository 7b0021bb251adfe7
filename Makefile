# tfplace developer targets. `make demo` and `make test` work on a machine with only python3 + pip.
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.tfplace-installed

.PHONY: venv install protos test typecheck demo horovod clean

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

test: $(STAMP) protos
	$(VPY) -m pytest -q -p no:cacheprovider tests

typecheck: $(STAMP)
	$(VPY) -m mypy tfplace --ignore-missing-imports

demo: $(STAMP) protos
	$(VPY) examples/demo.py

# Horovod 0.28.1 patched for this TF (see README "Horovod backend"): the first run builds a wheel
# into $TFPLACE_CACHE (default ~/.cache/tfplace; 10-20 min on 2 cores), later runs only install it.
horovod: $(STAMP)
	PYTHON=$(VPY) tools/build_horovod.sh

clean:
	rm -rf build dist *.egg-info tfplace/_pb/*_pb2.py tfplace/_pb/*_pb2.pyi
	find . -name __pycache__ -not -path './$(VENV)/*' -prune -exec rm -rf {} +
