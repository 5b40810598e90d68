"""The layer rule: the pure core imports no orchestration, storage or application code, and
the clustering methods are one table that the config, the CLI and the cluster task share."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from vcn.config import ClusterConfig, PipelineConfig
from vcn.errors import ConfigError
from vcn.method.registry import METHODS, get_method

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {"prefect", "prefect_dask", "dask", "distributed", "flows", "tasks", "storage"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", sorted((ROOT / "vcn").rglob("*.py")), ids=lambda p: p.name)
def test_the_core_imports_no_outer_layer(path: Path) -> None:
    assert not _imports(path) & FORBIDDEN, f"{path.relative_to(ROOT)} imports {_imports(path) & FORBIDDEN}"


def test_storage_and_tasks_import_no_flows() -> None:
    for layer in ("storage", "tasks"):
        for path in (ROOT / layer).rglob("*.py"):
            assert "flows" not in _imports(path), f"{path.relative_to(ROOT)} imports flows"


def test_every_method_has_a_clustering_and_a_cli_choice() -> None:
    from flows.cli import build_parser
    from tasks.cluster import CLUSTERERS

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
