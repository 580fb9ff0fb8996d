"""``polku overview``: the dashboard's first page on the command line."""

from __future__ import annotations

from pathlib import Path

from polku.cli.manage import DataDir, Format, Workspace
from polku.cli.profiles import _with_views
from polku.cli.store import emit
from polku.engine.overview import overview as read_overview
from polku.engine.setup import DEFAULT_WORKSPACE
from polku.engine.worker import wall_clock_ms


def overview(
    data_dir: DataDir = Path("polku-data"), workspace: Workspace = DEFAULT_WORKSPACE, output_format: Format = "json"
) -> None:
    """The live overview (as GET /v1/overview): events per second by channel, people,
    processing lag, open quarantine and deliveries."""
    now = wall_clock_ms()
    found = _with_views(
        data_dir,
        workspace,
        lambda views, runtime: read_overview(
            views.log_sql,
            views.sql,
            data_dir,
            workspace,
            now,
            checkpoint=views.state.checkpoint(),
            log_end=views.log.last_seq(),
        ),
    )
    if output_format == "json":
        emit(found, "json")
        return
    rows = [
        {"what": "events per second (last minute)", "value": found["rate"]["events_per_s"]},
        *({"what": f"  {channel}", "value": rate} for channel, rate in found["rate"]["by_channel"].items()),
        *({"what": name.replace("_", " "), "value": value} for name, value in found["people"].items()),
        {"what": "waiting to be processed", "value": found["processing"]["lag"]},
        {"what": "quarantined (open)", "value": found["quarantine"]["open"]},
        *(
            {"what": f"deliveries {name.replace('_', ' ')}", "value": value}
            for name, value in found["deliveries"].items()
        ),
    ]
    emit(rows, "table", columns=["what", "value"], title=f"polku overview at {found['at']}")
