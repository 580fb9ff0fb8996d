"""``polku demo`` end to end: it starts a real server, backfills the demo company
through the ingestion API, and the analyses — which know none of the demo's names —
find the problems the demo planted (polku/demo/world.py)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from polku.engine.analytics_registry import analysis_named, parse, run


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data_dir = tmp_path_factory.mktemp("demo") / "store"
    result = subprocess.run(
        [sys.executable, "-m", "polku", "demo", "--data-dir", str(data_dir), "--port", str(_free_port()),
         "--customers", "500", "--days", "30", "--no-live"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "polku analyze root-causes" in result.stdout and "admin token" in result.stdout
    return data_dir


def analyze(data_dir: Path, name: str, **parameters: str) -> dict[str, object]:
    analysis = analysis_named(name)
    scope, arguments = parse(analysis, "default", parameters)
    return run(analysis, data_dir, scope, arguments)


def test_root_causes_find_the_failed_reset_behind_critical_phone_csat(demo_dir: Path) -> None:
    found = analyze(demo_dir, "root-causes", metric="csat", channel="phone")
    top = found["findings"][0]  # type: ignore[index]
    assert "Password Reset Failed" in " ".join([top["pattern"], *top["together_with"]])
    assert top["significant"] and top["lift"] > 2


def test_switching_finds_the_self_service_that_ends_in_contacts(demo_dir: Path) -> None:
    found = analyze(demo_dir, "switching", assisted="phone,chat")
    top = [step["step"] for step in found["steps"][:6]]  # type: ignore[index]
    assert top[0] == "app:Password Reset Failed"
    assert "web:Payment Failed" in top


def test_the_channel_mix_shows_consumers_are_the_majority(demo_dir: Path) -> None:
    found = analyze(demo_dir, "channel-mix")
    types = found["customer_types"]  # type: ignore[index]
    assert types["consumers"]["share_of_people"] > 70  # not the 80 % B2B the company believes


def test_the_funnel_loses_most_at_the_delivery_options(demo_dir: Path) -> None:
    steps = "Added to Cart,Checkout Started,Delivery Options Viewed,Order Completed"
    found = analyze(demo_dir, "funnel", steps=steps)
    drops = [step.get("dropped", 0) for step in found["steps"]]  # type: ignore[union-attr]
    assert max(drops) == drops[2]  # Delivery Options Viewed → Order Completed
    assert found["steps"][2]["went_instead"]  # type: ignore[index]


def test_every_analysis_answers_on_the_demo(demo_dir: Path) -> None:
    examples = {
        "paths": {"start": "app:Password Reset Failed"},
        "funnel": {"steps": "Checkout Started,Order Completed"},
        "switching": {"assisted": "phone,chat"},
        "root-causes": {"metric": "csat"},
        "opportunities": {"metric": "csat", "assisted": "phone,chat"},
        "attribution": {"goal": "Order Completed"},
    }
    from polku.engine.analytics_registry import ANALYSES

    for name in ANALYSES:
        found = analyze(demo_dir, name, **examples.get(name, {}))
        assert found["analysis"] == name


def test_the_analyses_know_no_demo_names() -> None:
    """The planted facts stay in the simulator: no analysis module names them."""
    source = Path(__file__).resolve().parents[2] / "src" / "polku" / "engine"
    text = "".join(path.read_text() for path in source.glob("analytics*.py"))
    for name in ("Password Reset", "Payment Failed", "Delivery Options", "Order Completed", "Call Started", "Chat"):
        assert name not in text, name
