"""The generated tfplace/_pb modules match protos/*.proto (fails when they are stale)."""
from __future__ import annotations

from tfplace._pb import generate


def test_generated_modules_are_current(tmp_path) -> None:
    fresh = generate.generate(tmp_path)
    assert [p.name for p in fresh] == list(generate.MODULES)
    for path in fresh:
        installed = generate.PB_DIR / path.name
        assert installed.exists(), f"{installed} is missing; run `make protos`"
        assert installed.read_bytes() == path.read_bytes(), \
            f"{installed} is stale against protos/; run `make protos`"


def test_plan_pb2_imports_cluster_from_the_package(tmp_path) -> None:
    text = (generate.generate(tmp_path)[1]).read_text()
    assert "from tfplace._pb import cluster_pb2 as cluster__pb2" in text
    assert "\nimport cluster_pb2" not in text
