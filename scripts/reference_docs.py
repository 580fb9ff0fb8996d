"""Write the reference pages from the code, so they cannot drift from it:
docs/cli.md (the Typer app), docs/api.md (the OpenAPI document),
docs/configuration.md (``Settings``), docs/journey.schema.json and
docs/survey.schema.json (the JSON Schemas of journey and survey documents).

Run: .venv/bin/python scripts/reference_docs.py   (tests/test_docs.py checks they are current)
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer.main

from polku.cli.main import app

HEADER = """# CLI reference

Generated from the code by `scripts/reference_docs.py`; `tests/test_docs.py` fails when
it is out of date. Every command that reads or writes the store takes `--data-dir` (env
`POLKU_DATA_DIR`, default `./polku-data`) and works on the embedded store directly, with or
without a running server. Errors print `error CODE: message` on stderr and exit 2 (bad
input) or 1.

"""


def _walk(command: Any, path: list[str]) -> list[tuple[list[str], Any]]:
    if hasattr(command, "commands"):
        found: list[tuple[list[str], Any]] = []
        for name, sub in command.commands.items():
            found += _walk(sub, [*path, name])
        return found
    return [(path, command)]


def render_cli() -> str:
    lines = [HEADER]
    for path, command in _walk(typer.main.get_command(app), ["polku"]):
        arguments = [p for p in command.params if p.param_type_name == "argument"]
        usage = " ".join([*path, *(p.name.upper() + ("…" if p.nargs == -1 else "") for p in arguments), "[OPTIONS]"])
        lines.append(f"## `{' '.join(path)}`\n")
        lines.append((command.help or "").strip() + "\n")
        lines.append(f"```\n{usage}\n```\n")
        rows = []
        for param in command.params:
            if param.param_type_name == "argument":
                rows.append(f"| `{param.name.upper()}` | {getattr(param, 'help', None) or ''} | required |")
            else:
                names = " / ".join(f"`{o}`" for o in [*param.opts, *param.secondary_opts])
                default = (
                    ""
                    if param.default in (None, "") or (param.is_flag and param.default is False)
                    else f"`{param.default}`"
                )
                rows.append(f"| {names} | {param.help or ''} | {default} |")
        if rows:
            lines.append("| argument / option | meaning | default |\n|---|---|---|")
            lines.extend(rows)
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


API_HEADER = """# HTTP API reference

Generated from the OpenAPI document (`GET /openapi.json`) by `scripts/reference_docs.py`.
Ingestion routes take a **write key** (HTTP Basic username, empty password, or `writeKey` in
the body); the others an **admin token** (`Authorization: Bearer …`). Every error is JSON
`{"code", "message", …}`; see [ingestion.md](ingestion.md) for the ingestion semantics.

| method | path | auth | what | answers |
|---|---|---|---|---|
"""


def render_api() -> str:
    from polku.web.openapi import build_openapi

    document = build_openapi()
    rows = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            security = operation.get("security") or [{}]
            auth = {"writeKey": "write key", "adminToken": "admin token"}.get(next(iter(security[0]), ""), "none")
            statuses = ", ".join(sorted(operation["responses"]))
            rows.append(f"| `{method.upper()}` | `{path}` | {auth} | {operation['summary']} | {statuses} |")
    return API_HEADER + "\n".join(rows) + "\n"


CONFIG_HEADER = """# Configuration

`polku serve` reads each setting from its flag, else from the environment variable
`POLKU_<NAME>`, else the default. Generated from `polku.config.Settings` by
`scripts/reference_docs.py`. The workspace configuration (webhook mappings) is separate:
see [webhooks.md](webhooks.md).

| setting | flag | environment | default | meaning |
|---|---|---|---|---|
"""


def render_configuration() -> str:
    from dataclasses import fields

    from polku.config import Settings

    rows = []
    for field in fields(Settings):
        flag = "--" + field.name.replace("_", "-")
        if field.name == "access_log":
            flag = "--access-log / --no-access-log"
        default = "" if field.default is None else f"`{field.default}`"
        rows.append(
            f"| `{field.name}` | `{flag}` | `POLKU_{field.name.upper()}` | {default} | {field.metadata['help']} |"
        )
    return CONFIG_HEADER + "\n".join(rows) + "\n"


def render_journey_schema() -> str:
    import json

    from polku.core.journey_spec import journey_schema

    return json.dumps(journey_schema(), indent=2, ensure_ascii=False) + "\n"


def render_survey_schema() -> str:
    import json

    from polku.core.survey_spec import survey_schema

    return json.dumps(survey_schema(), indent=2, ensure_ascii=False) + "\n"


PAGES = {
    "cli.md": render_cli,
    "api.md": render_api,
    "configuration.md": render_configuration,
    "journey.schema.json": render_journey_schema,
    "survey.schema.json": render_survey_schema,
}

if __name__ == "__main__":
    docs = Path(__file__).resolve().parent.parent / "docs"
    for name, render in PAGES.items():
        (docs / name).write_text(render())
        sys.stdout.write(f"wrote docs/{name}\n")
