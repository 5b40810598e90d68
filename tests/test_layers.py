"""The layer rule: the pure core imports no orchestration, storage or application code; every
package installs under ``vcn``; and the clustering methods are one table that the config, the CLI
and the cluster task share."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from vcn.config import ClusterConfig, PipelineConfig
from vcn.errors import ConfigError
from vcn.method.registry import METHODS, get_method

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {"prefect", "prefect_dask", "dask", "distributed", "vcn.flows", "vcn.tasks", "vcn.storage"}
# Folders installed under another name (pyproject's package-dir); the rest install as they lie.
OUTER = {"flows": "vcn.flows", "tasks": "vcn.tasks", "storage": "vcn.storage"}


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, with each of its parent packages ("a.b.c" gives a, a.b, a.b.c)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    modules: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    parts = (m.split(".") for m in modules)
    return {".".join(p[:i]) for p in parts for i in range(1, len(p) + 1)}


@pytest.mark.parametrize("path", sorted((ROOT / "vcn").rglob("*.py")), ids=lambda p: p.name)
def test_the_core_imports_no_outer_layer(path: Path) -> None:
    assert not _imports(path) & FORBIDDEN, f"{path.relative_to(ROOT)} imports {_imports(path) & FORBIDDEN}"


def test_storage_and_tasks_import_no_flows() -> None:
    for layer in ("storage", "tasks"):
        for path in (ROOT / layer).rglob("*.py"):
            assert "vcn.flows" not in _imports(path), f"{path.relative_to(ROOT)} imports vcn.flows"


def test_every_package_installs_under_vcn() -> None:
    tomllib = pytest.importorskip("tomllib")
    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {p.parent.relative_to(ROOT) for top in ("vcn", *OUTER)
               for p in (ROOT / top).rglob("__init__.py")}
    expected = {OUTER.get(f.parts[0], f.parts[0]) + "".join("." + part for part in f.parts[1:])
                for f in folders}
    assert set(setup["packages"]) == expected
    assert all(p == "vcn" or p.startswith("vcn.") for p in setup["packages"])
    assert {name: folder for folder, name in OUTER.items()} == setup["package-dir"]


def test_every_method_has_a_clustering_and_a_cli_choice() -> None:
    from vcn.flows.cli import build_parser
    from vcn.tasks.cluster import CLUSTERERS

    assert set(CLUSTERERS) == set(METHODS)
    run = next(a for a in build_parser()._subparsers._group_actions[0].choices["run"]._actions
               if a.dest == "method")
    assert list(run.choices) == list(METHODS)


def test_a_method_decides_its_stages_and_its_settings() -> None:
    for name, method in METHODS.items():
        cfg = PipelineConfig(cluster=ClusterConfig(method=name))
        assert ("finetune" in cfg.stages()) == method.finetune
        cluster = cfg.stage_config("clusters")["cluster"]
        for other in METHODS.values():
            if other.settings:
                assert (other.settings in cluster) == (other.name == name)


def test_an_unknown_method_names_the_choices() -> None:
    with pytest.raises(ConfigError, match="choose one of vcn, hac, vct"):
        get_method("kmeans")
    with pytest.raises(ConfigError, match="unknown clustering method 'kmeans'"):
        PipelineConfig.from_dict({"cluster": {"method": "kmeans"}})
