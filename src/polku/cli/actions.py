"""``polku actions``: validate, deploy, show the action catalogue, and what the model
learned (docs/decisions.md). On the embedded store directly."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from polku.adapters.sqlite import SqliteCatalog
from polku.cli.journeys import _now, _with_catalog, validate_documents
from polku.cli.manage import DataDir, Format, Workspace
from polku.cli.profiles import _with_views
from polku.cli.store import console, emit
from polku.core.action_spec import Catalogue, compile_catalogue, parse_catalogue
from polku.core.errors import InvalidInput, NotFound
from polku.engine.action_admin import check_catalogue, deploy_catalogue, learned
from polku.engine.decision_service import CATALOGUE_ID
from polku.engine.setup import DEFAULT_WORKSPACE

actions_app = typer.Typer(
    help="Next-best-action: the action catalogue and what the model learned.", no_args_is_help=True
)


@actions_app.command("validate")
def actions_validate(
    files: Annotated[list[Path], typer.Argument(help="Action catalogues (YAML or JSON).")],
    data_dir: Annotated[
        Path | None, typer.Option(envvar="POLKU_DATA_DIR", help="Also check segments against this store's workspace.")
    ] = None,
    workspace: Workspace = DEFAULT_WORKSPACE,
) -> None:
    """Check action catalogues; prints `file:line: field: message` per problem, exits 2 if any."""

    def check(text: bytes, filename: str) -> object:
        if data_dir is None:
            return parse_catalogue(text, filename=filename)
        _with_catalog(data_dir, lambda catalog: check_catalogue(catalog, workspace, text, filename))
        return None

    validate_documents(files, check)


@actions_app.command("deploy")
def actions_deploy(
    file: Annotated[Path, typer.Argument(help="The action catalogue (YAML or JSON).")],
    data_dir: DataDir = Path("polku-data"),
    workspace: Workspace = DEFAULT_WORKSPACE,
) -> None:
    """Deploy the catalogue as its next version; decisions use it within a second."""
    try:
        text = file.read_bytes()
    except OSError as error:
        raise InvalidInput(f"{file}: cannot read: {error.strerror}") from None

    async def deploy(catalog: SqliteCatalog) -> dict[str, Any]:
        version, created = await deploy_catalogue(catalog, workspace, text, _now())
        return {"version": version, "created": created}

    emit(_with_catalog(data_dir, deploy), "json")


@actions_app.command("show")
def actions_show(data_dir: DataDir = Path("polku-data"), workspace: Workspace = DEFAULT_WORKSPACE) -> None:
    """The catalogue as deployed, with its version."""
    stored = _with_catalog(data_dir, lambda catalog: catalog.definition("actions", workspace, CATALOGUE_ID))
    console.print(
        f"action catalogue version {stored.version} ({stored.status}; versions {', '.join(map(str, stored.versions))})"
    )
    sys.stdout.write(stored.body if stored.body.endswith("\n") else stored.body + "\n")


@actions_app.command("stats")
def actions_stats(
    data_dir: DataDir = Path("polku-data"), workspace: Workspace = DEFAULT_WORKSPACE, output_format: Format = "table"
) -> None:
    """What the model learned: offers, acceptances, rejections and the propensity per
    action and learning group; the global holdout's uplift."""

    async def load(catalog: SqliteCatalog) -> Catalogue | None:
        try:
            stored = await catalog.definition("actions", workspace, CATALOGUE_ID)
        except NotFound:
            return None
        return compile_catalogue(parse_catalogue(stored.body), version=stored.version)

    catalogue = _with_catalog(data_dir, load)
    report = _with_views(data_dir, workspace, lambda views, _: learned(views.sql, workspace, catalogue))
    if output_format == "json":
        emit(report, "json")
        return
    rows = [
        {"action": action, **group, "interval": " to ".join(map(str, group.get("acceptance_rate_ci95", [])))}
        for action, entry in report["actions"].items()
        for group in entry["groups"]
    ]
    emit(
        rows,
        "table",
        columns=["action", "group", "offers", "accepted", "rejected", "propensity", "interval"],
        title="learned",
    )
    holdout = report["holdout"]
    uplift = holdout["uplift"]
    console.print(
        f"treatment {holdout['treatment']['converted']}/{holdout['treatment']['decisions']}, "
        f"holdout {holdout['holdout']['converted']}/{holdout['holdout']['decisions']}"
        + (
            f"; uplift {uplift['absolute']:+.1%} ({uplift['ci95'][0]:+.1%} to {uplift['ci95'][1]:+.1%})"
            if uplift
            else ""
        )
    )
