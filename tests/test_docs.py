"""Docs are part of the feature: reference pages are generated and current, every
setting has a flag, and every page is reachable from the README."""

from __future__ import annotations

import importlib.util
import re
from dataclasses import fields
from pathlib import Path
from types import ModuleType

import typer.main

from polku.cli.main import app
from polku.config import Settings

ROOT = Path(__file__).resolve().parent.parent


def _reference_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("reference_docs", ROOT / "scripts" / "reference_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_reference_pages_are_current() -> None:
    reference = _reference_module()
    for name, render in reference.PAGES.items():
        assert (ROOT / "docs" / name).read_text() == render(), (
            f"docs/{name} is out of date: run .venv/bin/python scripts/reference_docs.py"
        )


def test_every_setting_is_a_serve_flag() -> None:
    serve = typer.main.get_command(app).commands["serve"]  # type: ignore[attr-defined]
    flags = {option for param in serve.params for option in param.opts}
    for field in fields(Settings):
        assert "--" + field.name.replace("_", "-") in flags, f"setting {field.name} has no `polku serve` flag"


def test_every_docs_page_is_linked_from_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"docs/{page.name}" in readme, f"README does not link docs/{page.name}"


def test_changelog_has_an_unreleased_section() -> None:
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert re.search(r"^## \[Unreleased\]", changelog, re.MULTILINE)


def test_every_route_is_in_the_openapi_document(tmp_path: Path) -> None:
    from starlette.routing import Route

    from polku.web.app import create_app
    from polku.web.openapi import build_openapi

    app = create_app(Settings(data_dir=tmp_path))
    documented = build_openapi()["paths"]
    for route in app.routes:
        assert isinstance(route, Route)
        if route.path == "/" or route.path == "/ui" or route.path.startswith("/ui/"):
            continue  # the dashboard's pages are for browsers (docs/dashboard.md); its data is the API
        assert route.path in documented or route.path == "/openapi.json", f"{route.path} is not in the OpenAPI document"
        for method in (route.methods or set()) - {"HEAD"}:
            assert method.lower() in documented.get(route.path, {"get": 1}), f"{method} {route.path} is undocumented"
