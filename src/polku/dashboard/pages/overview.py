"""Overview: the live event rate by channel, people, what waits, what was refused and
what failed to deliver, each linking into its area; and the channel mix."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from polku.core.errors import PolkuError
from polku.dashboard import formatting
from polku.dashboard.frame import View, json_route, page_route
from polku.dashboard.reads import analyze, days_ago, workspace_overview

LIVE_INTERVAL_MS = 2000


def display(found: dict[str, Any]) -> dict[str, str]:
    """The tiles' texts, as the page shows them (the poller swaps them in)."""
    people = found["people"]
    return {
        "events-per-s": formatting.number(found["rate"]["events_per_s"]),
        "customers": formatting.compact(people["customers"]),
        "accounts": formatting.compact(people["accounts"]),
        "consumers-share": formatting.percent(
            people["consumers"] / people["customers"] if people["customers"] else None
        ),
        "lag": formatting.number(found["processing"]["lag"]),
        "quarantine": formatting.number(found["quarantine"]["open"]),
        "delivery-failures": formatting.number(found["deliveries"]["failed_24h"]),
        "deliveries-pending": formatting.number(found["deliveries"]["pending"]),
        "sent-24h": formatting.compact(found["deliveries"]["sent_24h"]),
        **{f"rate-{channel}": formatting.number(rate) for channel, rate in found["rate"]["by_channel"].items()},
    }


def rate_chart(found: dict[str, Any]) -> dict[str, Any]:
    series = found["rate"]["series"]
    return {
        "data": [{"type": "bar", "name": name, "x": series["x"], "y": values} for name, values in series["y"].items()],
        "layout": {
            "barmode": "stack",
            "yaxis": {"title": {"text": f"events per {series['bucket_s']} s"}, "rangemode": "tozero"},
            "xaxis": {"type": "date", "range": [series["x"][0], series["x"][-1]]},
            "margin": {"l": 56, "r": 8, "t": 32, "b": 40},
        },
    }


async def overview_page(view: View) -> Response:
    found = await workspace_overview(view)
    return view.render(
        "pages/overview.html",
        title="Overview",
        area="overview",
        found=found,
        shown=display(found),
        rate_chart=rate_chart(found),
        interval=LIVE_INTERVAL_MS,
    )


async def overview_json(view: View) -> dict[str, Any]:
    found = await workspace_overview(view)
    return {**found, "display": display(found), "live_rate": found["rate"]["series"]}


async def channel_mix_fragment(view: View) -> Response:
    try:
        found = await analyze(view, "channel-mix", since=days_ago(30))
    except PolkuError as error:
        return view.render("fragments/unavailable.html", error=error)
    channels = found["channels"]
    chart = {
        "data": [
            {"type": "bar", "orientation": "h", "name": "consumers", "y": [c["channel"] for c in channels],
             "x": [c["consumer_events"] for c in channels], "marker": {"color": "#1d5bbf"}},
            {"type": "bar", "orientation": "h", "name": "account holders", "y": [c["channel"] for c in channels],
             "x": [c["account_events"] for c in channels], "marker": {"color": "#e8833a"}},
        ],
        "layout": {"barmode": "stack", "yaxis": {"autorange": "reversed"}, "margin": {"l": 72, "r": 8, "t": 32, "b": 40},
                   "xaxis": {"title": {"text": "events, last 30 days"}}},
    }  # fmt: skip
    return view.render("fragments/channel_mix.html", found=found, mix_chart=chart)


routes = [
    page_route("/ui/", overview_page),
    json_route("/ui/api/overview", overview_json),
    page_route("/ui/fragments/channel-mix", channel_mix_fragment),
]
