"""The paths page against a real server on the demo company: the page answers at
once, its fragments show what ``GET /v1/analytics/paths`` and ``…/variants`` answer
for the same parameters, a Sankey click re-opens the page on the clicked step, the
example customers lead to customer pages, and bad parameters get a message."""

from __future__ import annotations

import html
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests.conftest import ServerProcess
from tests.dashboard.conftest import log_in

START = "app:Password Reset Failed"
"""The demo plants it: customers whose reset failed call the phone line."""
PARAMS = {"start": START, "granularity": "channel:event", "steps": "3", "period": "90"}


def since_days(days: int) -> str:
    return (datetime.now(UTC) - timedelta(days=days)).isoformat(timespec="seconds").replace("+00:00", "Z")


def api_paths(demo_server: ServerProcess, **parameters: str) -> dict[str, Any]:
    with demo_server.admin() as admin:
        response = admin.get("/v1/analytics/paths", params={"since": since_days(90), **parameters})
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def number(text: str) -> int:
    return int(text.replace("\u202f", "").strip())


def transitions(page: str) -> list[tuple[int, str, str, int]]:
    """The transitions table: (step, from, to, customers) per row."""
    rows = re.findall(
        r'<tr><td class="num">(\d+)</td><td>(.*?)</td><td>(.*?)</td><td class="num">(.*?)</td></tr>', page
    )
    return [(int(depth), html.unescape(a), html.unescape(b), number(count)) for depth, a, b, count in rows]


def chart_spec(page: str, chart_id: str) -> dict[str, Any]:
    found = re.search(rf'<script type="application/json" id="{chart_id}-spec">(.*?)</script>', page, re.S)
    assert found, f"no chart {chart_id}"
    spec: dict[str, Any] = json.loads(found.group(1))
    return spec


def example_links(page: str) -> list[str]:
    return re.findall(r'href="(/ui/customers/[^"?]+)"', page)


def test_the_page_answers_at_once_and_loads_the_analyses_as_fragments(ui: httpx.Client) -> None:
    page = ui.get("/ui/paths", params=PARAMS)
    assert page.status_code == 200
    text = page.text
    assert text.count("<h1>") == 1 and 'class="filters' in text
    assert 'data-fragment="/ui/fragments/paths?start=app%3APassword+Reset+Failed' in text
    assert 'data-fragment="/ui/fragments/paths-variants?' in text
    assert 'value="app:Password Reset Failed"' in text  # the form keeps the choice
    assert float(page.headers["server-timing"].split("dur=")[1]) < 300


def test_the_sankey_shows_what_the_api_answers(ui: httpx.Client, demo_server: ServerProcess) -> None:
    fragment = ui.get("/ui/fragments/paths", params=PARAMS)
    assert fragment.status_code == 200, fragment.text
    found = api_paths(demo_server, start=START, granularity="channel:event", steps="3")
    assert found["customers"] > 0
    steps = {node["id"]: node["step"] for node in found["nodes"]}
    expected = {
        (abs(int(link["target"].split(":", 1)[0])), steps[link["source"]], steps[link["target"]]): link["customers"]
        for link in found["links"]
    }
    shown = transitions(fragment.text)
    assert shown, "no transitions table"
    for depth, source, target, customers in shown:
        assert expected[(depth, source, target)] == customers
    # The most taken transition leads the table: the failed reset is followed by a call.
    top = max(found["links"], key=lambda link: link["customers"])
    assert shown[0][3] == top["customers"]
    assert (1, START, "phone:Call Started") in {(d, a, b) for d, a, b, _ in shown[:3]}
    assert f"{found['customers']} customers took <strong>{START}</strong>" in fragment.text

    spec = chart_spec(fragment.text, "paths-sankey")
    trace = spec["data"][0]
    assert trace["type"] == "sankey"
    node, link = trace["node"], trace["link"]
    drawn = {
        (node["customdata"][source], node["customdata"][target]): value
        for source, target, value in zip(link["source"], link["target"], link["value"], strict=True)
    }
    assert drawn[(START, "phone:Call Started")] == expected[(1, START, "phone:Call Started")]
    # A step taken again later is a node of its own: labels repeat, nodes do not.
    assert len(node["label"]) == len({(label, index) for index, label in enumerate(node["label"])})
    assert spec["follow"].endswith("start={value}") and "granularity=channel%3Aevent" in spec["follow"]


def test_the_top_paths_name_example_customers_who_open(ui: httpx.Client, demo_server: ServerProcess) -> None:
    fragment = ui.get("/ui/fragments/paths", params=PARAMS).text
    found = api_paths(demo_server, start=START, granularity="channel:event", steps="3")
    first = found["top"][0]
    assert first["examples"], "the API names example customers of each path"
    links = example_links(fragment)
    assert links[: len(first["examples"])] == [f"/ui/customers/{customer}" for customer in first["examples"]]
    for link in links[:3]:
        assert re.fullmatch(r"/ui/customers/c_[0-9a-f]+", link)
        customer = ui.get(link)
        assert customer.status_code == 200, (link, customer.text[:300])


def test_paths_to_a_step_follow_back_in_time(ui: httpx.Client, demo_server: ServerProcess) -> None:
    fragment = ui.get("/ui/fragments/paths", params={"end": "phone:Call Started", "period": "90"})
    assert fragment.status_code == 200
    spec = chart_spec(fragment.text, "paths-sankey")
    assert spec["follow"].endswith("end={value}")
    found = api_paths(demo_server, end="phone:Call Started", granularity="channel:event", steps="3")
    assert found["top"][0]["path"][-1] == "phone:Call Started"  # in time order
    assert " → ".join(found["top"][0]["path"]) in re.sub(r"<[^>]+>", "", html.unescape(fragment.text))


def test_the_variants_show_what_the_api_answers(ui: httpx.Client, demo_server: ServerProcess) -> None:
    fragment = ui.get("/ui/fragments/paths-variants", params=PARAMS)
    assert fragment.status_code == 200
    with demo_server.admin() as admin:
        found = admin.get(
            "/v1/analytics/variants",
            params={"since": since_days(90), "granularity": "channel:event", "top": "15", "max_length": "6"},
        ).json()
    rows = re.findall(r'<tr>\s*<td>(.*?)</td>\s*<td class="num">(.*?)</td>', fragment.text)
    assert [(html.unescape(path), number(count)) for path, count in rows] == [
        (" → ".join(row["path"]), row["customers"]) for row in found["top"]
    ]
    assert f"/ui/customers/{found['top'][0]['examples'][0]}" in fragment.text


def test_no_start_suggests_the_most_taken_steps(ui: httpx.Client) -> None:
    fragment = ui.get("/ui/fragments/paths", params={"period": "90"})
    assert fragment.status_code == 200
    assert "Choose a step" in fragment.text
    assert re.search(r'<a href="/ui/paths\?start=[^"]+">', fragment.text)
    assert '<datalist id="paths-steps">' in fragment.text and f'<option value="{START}">' in fragment.text


def test_a_start_nobody_took_says_so_and_suggests_another(ui: httpx.Client) -> None:
    fragment = ui.get("/ui/fragments/paths", params={"start": "web:Nothing Like This", "period": "90"})
    assert fragment.status_code == 200
    assert "No customer took web:Nothing Like This" in fragment.text
    assert "Steps to start from instead" in fragment.text


def test_bad_parameters_get_a_message_not_a_crash(ui: httpx.Client) -> None:
    cases = [
        ({"start": START, "granularity": "colour"}, "granularity must be one of"),
        ({"start": "x" * 300}, "start is longer than 256 characters"),
        ({"start": START, "end": START}, "not both"),
        ({"start": START, "period": "12"}, "period must be one of"),
        ({"start": START, "steps": "99"}, "steps must be 1-10"),
        ({"start": START, "customers": "robots"}, "customers must be one of"),
    ]
    for params, message in cases:
        page = ui.get("/ui/paths", params=params)
        assert page.status_code == 400, params
        assert 'class="flash error" role="alert"' in page.text and message in page.text, (params, page.text[-2000:])
        assert page.text.count("<h1>") == 1 and 'class="filters' in page.text  # the form stays, to correct it
        fragment = ui.get("/ui/fragments/paths", params=params)
        assert fragment.status_code == 400 and message in fragment.text, params
    assert ui.get("/ui/fragments/paths-variants", params={"granularity": "colour"}).status_code == 400


def test_an_empty_store_says_it_fills_as_events_are_processed(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert log_in(client).status_code == 303
        fragment = client.get("/ui/fragments/paths", params={"start": START})
        assert fragment.status_code == 200
        assert "fills as events are processed" in fragment.text
        variants = client.get("/ui/fragments/paths-variants")
        assert variants.status_code == 200 and "fills as events are processed" in variants.text
