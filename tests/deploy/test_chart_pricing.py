"""The chart's price files: the catalog and its FX table, mounted together where the services
read them. Uses the helm that deploy/check.sh installs, like tests/deploy/test_chart.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from civicmeter.core.pricing import load_catalog
from tests.deploy.test_chart import (
    CHART,
    RELEASE,
    REPO,
    Manifest,
    _container,
    _env,
    _named,
    _render,
    _workload,
    default_render,
    helm,
)

__all__ = ["default_render", "helm"]  # fixtures used by the tests below


def _pricing_files(render: list[Manifest], component: str) -> tuple[Path, dict[str, str]]:
    """Where the component reads the catalog, and the files its pricing volume holds."""
    container = _container(render, component)
    prices_file = Path(_env(container)["CIVICMETER_PRICES_FILE"]["value"])
    [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == str(prices_file.parent)]
    deployment = _workload(render, component)
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    [volume] = [v for v in volumes if v["name"] == mount["name"]]
    config_map = _named(render, "ConfigMap", volume["configMap"]["name"])
    files = {item["path"]: config_map["data"][item["key"]] for item in volume["configMap"]["items"]}
    return prices_file, files


def test_the_default_fx_table_is_the_project_fx_table() -> None:
    values: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["pricing"]["fx"] == (REPO / "config" / "fx.yaml").read_text()


@pytest.mark.parametrize("component", ["processor", "billing", "query"])
def test_the_fx_table_is_mounted_next_to_the_catalog_and_both_load(
    default_render: list[Manifest], component: str, tmp_path: Path
) -> None:
    prices_file, files = _pricing_files(default_render, component)
    catalog_text = files[prices_file.name]
    fx_name = yaml.safe_load(catalog_text)["fx_file"]
    assert files[fx_name] == (REPO / "config" / "fx.yaml").read_text()
    # The directory as the pod sees it loads as a catalog.
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    loaded = load_catalog(tmp_path / prices_file.name)
    assert [f.path.name for f in loaded.files] == [prices_file.name, fx_name]


def test_without_an_fx_key_only_the_catalog_is_mounted(helm: str, tmp_path: Path) -> None:
    render = _render(helm, tmp_path, {"pricing": {"fxKey": ""}})
    prices_file, files = _pricing_files(render, "processor")
    assert list(files) == [prices_file.name]
    config_map = _named(render, "ConfigMap", f"{RELEASE}-pricing")
    assert list(config_map["data"]) == [prices_file.name]
