"""The feedback page against a real server on the demo company: the scores, week
lines and tables are what ``GET /v1/feedback/metrics`` answers for the same query;
the root causes read as sentences naming the top finding's pattern and lift, with
its example customers; bad parameters get a message; an empty store says how to
deploy a survey."""

from __future__ import annotations

import html
import json
import re
from typing import Any

import httpx

from tests.conftest import ServerProcess
from tests.dashboard.conftest import log_in


def api_metrics(demo_server: ServerProcess, **parameters: str) -> dict[str, Any]:
    """``GET /v1/feedback/metrics`` (its default period is the page's: 90 days)."""
    with demo_server.admin() as admin:
        response = admin.get("/v1/feedback/metrics", params=parameters)
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def tile(page: str, metric: str) -> tuple[str, int]:
    """(score, n) of a metric's tile."""
    score = re.search(rf'data-metric="{metric}">(.*?)</p>', page)
    answers = re.search(rf'data-answers="{metric}">(.*?)</span>', page)
    assert score and answers, f"no {metric} tile"
    return html.unescape(score.group(1)), int(answers.group(1).replace("\u202f", ""))


def csat_text(score: float) -> str:
    return f"{score:.1f}\u202f%"


def nps_text(score: float) -> str:
    return f"{score:+.0f}".replace("-", "−")


def named(kind: str, pattern: str) -> str:
    """A finding's pattern as a sentence names it: ``app: Password Reset Failed``,
    ``web: Home then app: App Opened``, ``from web to app``."""
    steps = pattern.split(" → ")
    if kind == "transition":
        return f"from {steps[0]} to {steps[1]}"
    return " then ".join(step.replace(":", ": ", 1) for step in steps)


def test_the_page_answers_at_once_with_its_form(ui: httpx.Client) -> None:
    page = ui.get("/ui/feedback")
    assert page.status_code == 200
    assert page.text.count("<h1>") == 1 and 'class="filters' in page.text
    # Without a choice, the metric most answered: the demo asks CSAT after calls.
    assert '<option value="csat" selected>' in page.text
    for fragment in ("feedback-metrics", "feedback-causes", "feedback-opportunities"):
        assert f'data-fragment="/ui/fragments/{fragment}?metric=csat&amp;period=90"' in page.text
    assert float(page.headers["server-timing"].split("dur=")[1]) < 300


def test_the_scores_are_the_apis(ui: httpx.Client, demo_server: ServerProcess) -> None:
    fragment = ui.get("/ui/fragments/feedback-metrics", params={"metric": "csat", "period": "90"})
    assert fragment.status_code == 200, fragment.text
    for metric, text in (("csat", csat_text), ("nps", nps_text)):
        overall = api_metrics(demo_server, metric=metric)["groups"][0]
        assert overall["answers"] > 0, metric
        assert tile(fragment.text, metric) == (text(overall["score"]), overall["answers"])
        low, high = overall["interval"]
        assert f"interval {text(low)} to {text(high)}" in html.unescape(fragment.text)


def test_the_week_lines_and_tables_are_the_apis(ui: httpx.Client, demo_server: ServerProcess) -> None:
    fragment = ui.get("/ui/fragments/feedback-metrics", params={"metric": "nps", "period": "90"}).text
    channels = [group["key"] for group in api_metrics(demo_server, metric="nps", by="channel")["groups"]]
    assert len(channels) > 1
    spec = json.loads(re.search(r'id="feedback-trend-spec">(.*?)</script>', fragment, re.S).group(1))  # type: ignore[union-attr]
    lines = {trace["name"]: dict(zip(trace["x"], trace["y"], strict=True)) for trace in spec["data"]}
    assert set(lines) == {"All channels", *channels}
    for channel in channels:
        weekly = api_metrics(demo_server, metric="nps", by="week", channel=channel)["groups"]
        assert lines[channel] == {group["key"]: group["score"] for group in weekly if group["score"] is not None}
    journeys = api_metrics(demo_server, metric="nps", by="journey")["groups"]
    table = fragment[fragment.index('id="journeys-title"') :]
    for group in journeys:
        assert f'<td class="num">{group["answers"]}</td>' in table


def test_a_channel_filter_is_the_apis(ui: httpx.Client, demo_server: ServerProcess) -> None:
    fragment = ui.get("/ui/fragments/feedback-metrics", params={"metric": "nps", "period": "90", "channel": "web"})
    overall = api_metrics(demo_server, metric="nps", channel="web")["groups"][0]
    assert tile(fragment.text, "nps") == (nps_text(overall["score"]), overall["answers"])
    page = ui.get("/ui/feedback", params={"metric": "nps", "channel": "web"})
    assert 'value="web"' in page.text and "channel=web" in page.text


def test_root_causes_read_as_sentences_with_example_customers(ui: httpx.Client, demo_server: ServerProcess) -> None:
    fragment = ui.get("/ui/fragments/feedback-causes", params={"metric": "csat", "period": "90"})
    assert fragment.status_code == 200, fragment.text
    with demo_server.admin() as admin:
        found = admin.get("/v1/analytics/root-causes", params={"metric": "csat"}).json()
    top = found["findings"][0]
    first = fragment.text.split("<li>")[1]
    sentence = re.sub(r"<[^>]+>", "", html.unescape(first.split("</p>")[0]))
    assert named(top["kind"], top["pattern"]) in sentence
    assert f"gave a critical CSAT {top['lift']:.1f}× as often" in sentence
    verdict = "significant" if top["significant"] else "could still be chance"
    assert f"{top['customers']} customers; {verdict})." in sentence
    assert [f"/ui/customers/{customer}" for customer in top["examples"]] == re.findall(
        r'href="(/ui/customers/[^"]+)"', first
    )
    opportunities = ui.get("/ui/fragments/feedback-opportunities", params={"metric": "csat", "period": "90"})
    assert opportunities.status_code == 200 and "fewer critical CSAT answers" in opportunities.text


def test_bad_parameters_get_a_message_not_a_crash(ui: httpx.Client) -> None:
    cases = [
        ({"metric": "happiness"}, "metric must be one of"),
        ({"period": "12"}, "period must be one of"),
        ({"channel": "x" * 300}, "channel is longer than 256 characters"),
    ]
    for params, message in cases:
        page = ui.get("/ui/feedback", params=params)
        assert page.status_code == 400, params
        assert 'class="flash error" role="alert"' in page.text and message in page.text
        assert page.text.count("<h1>") == 1 and 'class="filters' in page.text
        for name in ("feedback-metrics", "feedback-causes", "feedback-opportunities"):
            fragment = ui.get(f"/ui/fragments/{name}", params={"metric": "csat", **params})
            assert fragment.status_code == 400 and message in fragment.text, (name, params)


def test_no_answers_yet_says_how_to_deploy_a_survey(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert log_in(client).status_code == 303
        page = client.get("/ui/feedback")
        assert page.status_code == 200
        assert "No survey answers" in page.text and "polku surveys deploy FILE" in page.text
        assert "data-fragment" not in page.text
        causes = client.get("/ui/fragments/feedback-causes", params={"metric": "nps"})
        assert causes.status_code == 200 and "polku surveys deploy FILE" in causes.text
