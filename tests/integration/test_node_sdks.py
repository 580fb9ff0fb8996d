"""The official Node SDKs, ``@segment/analytics-node`` and
``@rudderstack/rudder-sdk-node`` (versions pinned in ``node/package.json``), sending
every message type to a real ``polku serve`` process through ``node/send.mjs``."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest
from tests.conftest import WRITE_KEY, ServerProcess

pytestmark = pytest.mark.slow

NODE_DIR = Path(__file__).parent / "node"
SDK_PACKAGES = ("@segment/analytics-node", "@rudderstack/rudder-sdk-node")


@pytest.fixture(scope="module")
def node_project() -> Path:
    """``node/`` with its locked dependencies installed (``npm ci`` once, if absent)."""
    assert shutil.which("node") and shutil.which("npm"), "these tests need node (v18+) and npm on PATH"
    if not all((NODE_DIR / "node_modules" / package / "package.json").exists() for package in SDK_PACKAGES):
        # --ignore-scripts: the one install script in the tree builds an optional
        # native msgpack codec for RudderStack's Redis-backed queue, unused here.
        install = subprocess.run(
            ["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund"],
            cwd=NODE_DIR,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert install.returncode == 0, f"npm ci failed:\n{install.stdout}\n{install.stderr}"
    return NODE_DIR


def run_sdk(node_project: Path, sdk: str, server: ServerProcess, prefix: str) -> dict[str, object]:
    result = subprocess.run(
        ["node", "send.mjs", sdk, server.url, WRITE_KEY, prefix],
        cwd=node_project,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, f"send.mjs {sdk} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    report: dict[str, object] = json.loads(result.stdout.splitlines()[-1])
    return report


def parse(value: object) -> datetime:
    assert isinstance(value, str), value
    return datetime.fromisoformat(value)


@pytest.mark.parametrize("sdk", ["segment", "rudder"])
def test_node_sdk_sends_every_message_type(node_project: Path, server: ServerProcess, sdk: str) -> None:
    first = run_sdk(node_project, sdk, server, sdk)
    expected = {
        f"{sdk}-track": ("track", "web"),
        f"{sdk}-track-app": ("track", "app"),
        f"{sdk}-identify": ("identify", "web"),
        f"{sdk}-page": ("page", "web"),
        f"{sdk}-screen": ("screen", "web"),
        f"{sdk}-group": ("group", "web"),
        f"{sdk}-alias": ("alias", "web"),
    }
    assert first == {"sent": list(expected), "errors": [], "timestamp": first["timestamp"]}
    stored_first = server.all_events()

    # Running the same script again is a client retry: same messageIds, new sentAt.
    run_sdk(node_project, sdk, server, sdk)
    events = server.all_events()
    assert Counter(str(event["messageId"]) for event in events) == dict.fromkeys(expected, 1)
    assert events == stored_first

    for event in events:
        assert (event["type"], event["channel"]) == expected[str(event["messageId"])], event
        assert parse(event["originalTimestamp"]) == parse(first["timestamp"]), event
        skew = parse(event["sentAt"]) - parse(event["originalTimestamp"])
        assert skew.total_seconds() >= 60, event  # the script sends times a minute old
        assert parse(event["receivedAt"]) - parse(event["timestamp"]) == skew, event
