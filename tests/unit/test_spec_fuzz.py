"""Journey, survey and action documents and the workspace configuration, fuzzed:
whatever the text, parsing returns a spec or raises ``ConfigError`` (an error that
says what and where) — never another exception — and within bounded time, also for
the shapes that hurt YAML loaders (deep nesting, aliases, huge scalars)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from polku.core.action_spec import parse_catalogue
from polku.core.errors import ConfigError
from polku.core.journey_spec import parse_journey
from polku.core.survey_spec import parse_survey
from polku.core.workspace import parse_config

VALID = {
    "journey": (parse_journey, "id: j\nentry: {event: Signed Up}\nsteps:\n  - id: pause\n    wait: 1h\n"),
    "survey": (
        parse_survey,
        "id: s\nmetric: csat\nquestion: {en: How was it?}\nchannels: [in_app]\ntriggers: [{event: Done}]\n",
    ),
    "actions": (parse_catalogue, "actions:\n  - {id: a, channels: [web], treatments: {web: {title: A}}}\n"),
    "config": (parse_config, "channels:\n  email: {type: smtp, port: 2525, sender: a@example.com}\n"),
}
PARSERS: list[Callable[..., Any]] = [parser for parser, _ in VALID.values()]
LIMIT_S = 2.0
YAML_PIECES = [
    "\n", ": ", "- ", "[", "]", "{", "}", ",", "&a ", "*a", "!!python/object:os.system ", "!!binary ", "? ",
    "|\n  ", ">", "'", '"', "#", "---\n", "...\n", "\t", "id", "steps", "entry", "event", "wait", "1h", "null",
    "~", "true", "0x1F", "1e999", "\\ud800", "é", "\x00", "%YAML 1.1\n", "<<: ", "=",
]  # fmt: skip


def parse_bounded(parser: Callable[..., Any], text: str | bytes) -> None:
    started = time.perf_counter()
    try:
        parser(text)
    except ConfigError:
        pass
    assert time.perf_counter() - started < LIMIT_S, f"{parser.__name__} took too long on {text[:80]!r}"


@pytest.mark.parametrize("parser", PARSERS, ids=list(VALID))
@pytest.mark.parametrize(
    "text",
    [
        "[" * 20_000 + "]" * 20_000,
        "a: " + "{b: " * 5_000 + "1" + "}" * 5_000,
        "- " * 3_000 + "x",
        "a: &a [x, x]\nb: &b [*a, *a]\nc: &c [*b, *b]\nd: [*c, *c]\n",  # a billion laughs, small
        "x: " + "y" * 900_000,
        b"\xff\xfe not utf-8",
        "id: " + "\\" * 10,
        "",
    ],
    ids=["deep-list", "deep-map", "deep-block", "aliases", "huge-scalar", "not-utf8", "backslashes", "empty"],
)
def test_hostile_shapes_are_refused_quickly(parser: Callable[..., Any], text: str | bytes) -> None:
    parse_bounded(parser, text)


@pytest.mark.parametrize("kind", list(VALID))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_documents_parse_or_say_what_is_wrong(kind: str, data: st.DataObject) -> None:
    parser, valid = VALID[kind]
    text = valid
    for _ in range(data.draw(st.integers(1, 6))):
        where = data.draw(st.integers(0, len(text)))
        action = data.draw(st.sampled_from(["insert", "delete", "replace"]))
        piece = data.draw(st.sampled_from(YAML_PIECES) | st.text(max_size=8))
        cut = data.draw(st.integers(0, 12))
        if action == "insert":
            text = text[:where] + piece + text[where:]
        elif action == "delete":
            text = text[:where] + text[where + cut :]
        else:
            text = text[:where] + piece + text[where + cut :]
    parse_bounded(parser, text)


@pytest.mark.parametrize("parser", PARSERS, ids=list(VALID))
@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=300) | st.binary(max_size=300))
def test_any_text_parses_or_says_what_is_wrong(parser: Callable[..., Any], text: str | bytes) -> None:
    parse_bounded(parser, text)
