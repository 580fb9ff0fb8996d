"""``polku surveys`` and ``polku feedback metrics`` on a real store."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tests.conftest import ServerProcess
from tests.journeys.test_journey_api import polku
from tests.surveys.helpers import CSAT


def test_cli_validate_deploy_list_pause_invitations_and_metrics(
    start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    catalog_server = start_server(extra_args=["--no-processor"])
    data_dir = str(catalog_server.data_dir)
    document = tmp_path / "call-csat.yaml"
    document.write_text(CSAT.replace("    delay: 10m\n", "    delay: soon\n"))
    result = polku("surveys", "validate", str(document))
    assert result.returncode == 2
    assert f"{document}:" in result.stdout and "triggers[0].delay" in result.stdout
    document.write_text(CSAT.replace("channels: [email, sms, in_app]", "channels: [in_app]"))
    assert polku("surveys", "validate", str(document), "--data-dir", data_dir).returncode == 0
    deployed = polku("surveys", "deploy", str(document), "--data-dir", data_dir)
    assert deployed.returncode == 0, deployed.stderr
    assert json.loads(deployed.stdout) == {"id": "call-csat", "version": 1, "created": True, "status": "active"}
    listed = json.loads(polku("surveys", "list", "--data-dir", data_dir, "--format", "json").stdout)
    assert [(s["id"], s["metric"], s["status"], s["sent"]) for s in listed] == [("call-csat", "csat", "active", 0)]
    assert json.loads(polku("surveys", "pause", "call-csat", "--data-dir", data_dir).stdout)["status"] == "paused"
    with catalog_server.admin() as admin:
        assert admin.get("/v1/surveys/call-csat").json()["status"] == "paused"
    report = json.loads(polku("surveys", "invitations", "call-csat", "--data-dir", data_dir, "--format", "json").stdout)
    assert report["invitations"] == []
    metrics = polku("feedback", "metrics", "--metric", "csat", "--data-dir", data_dir, "--format", "json")
    assert metrics.returncode == 0, metrics.stderr
    (overall,) = json.loads(metrics.stdout)["groups"]
    assert overall["answers"] == 0 and overall["score"] is None
    wrong = polku("feedback", "metrics", "--metric", "happiness", "--data-dir", data_dir)
    assert wrong.returncode == 2 and "metric must be one of" in wrong.stderr
