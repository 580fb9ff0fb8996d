"""The hosted survey page: each state renders accessible, escaped, script-free HTML."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from polku.web import survey_page
from polku.web.survey_page import STATES, STYLESHEET_PATH, UI_TEXT, render_survey_page, ui_text

CSS = Path(survey_page.__file__).parent / "static" / "survey.css"
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


# --- a small DOM from the stdlib parser --------------------------------------------------


@dataclass
class Element:
    tag: str
    attrs: dict[str, str | None]
    parent: Element | None = None
    content: list[Element | str] = field(default_factory=list)
    """Child elements and text, in document order."""

    @property
    def children(self) -> list[Element]:
        return [child for child in self.content if isinstance(child, Element)]

    def text(self) -> str:
        parts = [child if isinstance(child, str) else child.text() for child in self.content]
        return " ".join(" ".join(parts).split())

    def ancestors(self) -> list[Element]:
        found, node = [], self.parent
        while node is not None:
            found.append(node)
            node = node.parent
        return found

    def iter(self) -> list[Element]:
        return [self, *(element for child in self.children for element in child.iter())]


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {})
        self.current = self.root

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, dict(attrs), parent=self.current)
        self.current.content.append(element)
        if tag not in VOID:
            self.current = element

    def handle_endtag(self, tag: str) -> None:
        node: Element | None = self.current
        while node is not None and node.tag != tag:
            node = node.parent
        assert node is not None and node.parent is not None, f"stray </{tag}>"
        self.current = node.parent

    def handle_data(self, data: str) -> None:
        self.current.content.append(data)


class Page:
    def __init__(self, html: str) -> None:
        builder = _TreeBuilder()
        builder.feed(html)
        builder.close()
        assert builder.current is builder.root, f"unclosed <{builder.current.tag}>"
        self.html = html
        self.elements = builder.root.iter()[1:]

    def all(self, tag: str, **attrs: str) -> list[Element]:
        return [
            element
            for element in self.elements
            if element.tag == tag and all(element.attrs.get(name.rstrip("_")) == value for name, value in attrs.items())
        ]

    def one(self, tag: str, **attrs: str) -> Element:
        found = self.all(tag, **attrs)
        assert len(found) == 1, f"{len(found)} <{tag} {attrs}>"
        return found[0]

    def by_id(self, element_id: str) -> Element:
        found = [element for element in self.elements if element.attrs.get("id") == element_id]
        assert len(found) == 1, f"{len(found)} elements with id {element_id!r}"
        return found[0]

    def radios(self, name: str) -> list[Element]:
        return [element for element in self.all("input", type="radio") if element.attrs["name"] == name]


# --- factories -------------------------------------------------------------------------


def make_survey(metric: str = "nps", **overrides: Any) -> dict[str, Any]:
    scale = {"csat": [1, 5], "nps": [0, 10], "ces": [1, 7]}[metric]
    survey: dict[str, Any] = {
        "id": "after-call",
        "name": "",
        "metric": metric,
        "scale": scale,
        "question": "How likely are you to recommend us to a friend?",
        "questions": [
            {
                "id": "reason",
                "type": "choice",
                "text": "What mattered most?",
                "options": [{"value": "speed", "text": "Speed"}, {"value": "people", "text": "The people"}],
                "required": True,
                "max_length": 1000,
            },
            {
                "id": "comment",
                "type": "text",
                "text": "Anything else?",
                "options": [],
                "required": False,
                "max_length": 500,
            },
        ],
    }
    survey.update(overrides)
    return survey


def render(state: str = "form", locale: str = "en", **kwargs: Any) -> Page:
    survey = kwargs.pop("survey", None if state in ("invalid", "expired") else make_survey())
    return Page(render_survey_page(state=state, locale=locale, survey=survey, **kwargs))


# --- every state ---------------------------------------------------------------------


@pytest.mark.parametrize("locale", ["en", "fi"])
@pytest.mark.parametrize("state", sorted(STATES))
def test_each_state_is_a_complete_csp_safe_document(state: str, locale: str) -> None:
    page = render(state, locale, message="A line from the server.", can_edit=True)

    assert page.html.startswith("<!doctype html>")
    assert page.one("html").attrs["lang"] == locale
    assert page.one("title").text()
    assert page.one("meta", name="viewport").attrs["content"] == "width=device-width, initial-scale=1"
    assert page.one("link", rel="stylesheet").attrs["href"] == STYLESHEET_PATH
    assert page.one("h1").text()
    assert not page.all("script") and not page.all("style")
    assert not [element for element in page.elements if "style" in element.attrs]
    assert not [element for element in page.elements for name in element.attrs if name.startswith("on")]
    assert "http" not in page.html  # nothing loaded from elsewhere
    assert "A line from the server." in page.one("main").text()
    ids = [element.attrs["id"] for element in page.elements if "id" in element.attrs]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize(
    ("state", "locale", "heading"),
    [
        ("thanks", "en", "Thank you!"),
        ("thanks", "fi", "Kiitos!"),
        ("closed", "en", "You have already answered"),
        ("invalid", "fi", "Linkki ei kelpaa"),
        ("expired", "en", "This survey has closed"),
        ("expired", "sv", "Enkäten har stängts"),
    ],
)
def test_result_states_say_what_happened_and_hold_no_form(state: str, locale: str, heading: str) -> None:
    page = render(state, locale)

    assert page.one("h1").text() == heading
    assert page.one("title").text().startswith(heading)
    assert ui_text(locale)[f"{state}_text"] in page.one("main").text()
    assert not page.all("form") and not page.all("input")


def test_thanks_links_back_to_the_form_only_while_the_answer_can_change() -> None:
    editable = render("thanks", can_edit=True)
    link = editable.one("a")
    assert link.attrs["href"] == "?edit=1"
    assert link.text() == "Change my answer"
    assert UI_TEXT["en"]["edit_note"] in editable.one("main").text()

    assert not render("thanks").all("a")
    assert not render("closed", can_edit=True).all("a")


# --- the form --------------------------------------------------------------------------


@pytest.mark.parametrize("locale", ["en", "fi"])
def test_every_control_has_a_label(locale: str) -> None:
    page = render("form", locale)

    controls = page.all("input") + page.all("textarea")
    assert controls
    for control in controls:
        wrapping = [ancestor for ancestor in control.ancestors() if ancestor.tag == "label"]
        by_for = page.all("label", for_=control.attrs["id"] or "") if control.attrs.get("id") else []
        assert wrapping or by_for, control.attrs
        if control.attrs.get("type") == "radio":
            fieldset = next(ancestor for ancestor in control.ancestors() if ancestor.tag == "fieldset")
            legend = fieldset.children[0]
            assert legend.tag == "legend" and legend.text()
            if control.attrs["name"] == "score":
                assert control.attrs["aria-label"]


def test_the_form_posts_to_its_own_url_and_needs_the_score() -> None:
    page = render("form")

    form = page.one("form")
    assert form.attrs["method"] == "post" and "action" not in form.attrs
    assert page.one("button").attrs["type"] == "submit"
    assert all("required" in radio.attrs for radio in page.radios("score"))
    score_legend = page.by_id("score-0").ancestors()[2].children[0]
    assert score_legend.text().endswith("Required")


@pytest.mark.parametrize(("metric", "low", "high"), [("nps", 0, 10), ("csat", 1, 5), ("ces", 1, 7)])
def test_the_scale_has_one_radio_per_point(metric: str, low: int, high: int) -> None:
    page = render("form", survey=make_survey(metric))

    radios = page.radios("score")
    assert len(radios) == high - low + 1
    assert [radio.attrs["value"] for radio in radios] == [str(value) for value in range(low, high + 1)]
    assert page.by_id(f"score-{high - 1}").attrs["aria-label"] == f"{high - 1} out of {high}"


@pytest.mark.parametrize(
    ("metric", "locale", "low_anchor", "high_anchor"),
    [
        ("nps", "en", "Not at all likely", "Extremely likely"),
        ("csat", "en", "Very dissatisfied", "Very satisfied"),
        ("ces", "en", "Very easy", "Very difficult"),  # CES: 1 is very easy, 7 very difficult
        ("nps", "fi", "En lainkaan todennäköisesti", "Erittäin todennäköisesti"),
        ("ces", "fi", "Erittäin helppoa", "Erittäin vaikeaa"),
    ],
)
def test_the_ends_of_the_scale_carry_their_anchors(metric: str, locale: str, low_anchor: str, high_anchor: str) -> None:
    page = render("form", locale, survey=make_survey(metric))

    radios = page.radios("score")
    assert radios[0].attrs["aria-label"].endswith(f", {low_anchor}")
    assert radios[-1].attrs["aria-label"].endswith(f", {high_anchor}")
    low, high = page.one("span", class_="anchors__low"), page.one("span", class_="anchors__high")
    assert (low.text(), high.text()) == (low_anchor, high_anchor)
    assert low.parent is not None and low.parent.attrs["aria-hidden"] == "true"  # read once, with the radio


def test_a_previous_answer_is_prefilled() -> None:
    page = render("form", answer={"score": 8, "answers": {"reason": "people", "comment": "Quick & kind"}})

    assert [radio.attrs["value"] for radio in page.radios("score") if "checked" in radio.attrs] == ["8"]
    assert [radio.attrs["value"] for radio in page.radios("q_reason") if "checked" in radio.attrs] == ["people"]
    assert page.one("textarea").text() == "Quick & kind"


def test_a_posted_answer_of_strings_is_prefilled_too() -> None:
    page = render("form", answer={"score": "3", "answers": {"reason": "speed"}})

    assert [radio.attrs["value"] for radio in page.radios("score") if "checked" in radio.attrs] == ["3"]
    assert [radio.attrs["value"] for radio in page.radios("q_reason") if "checked" in radio.attrs] == ["speed"]


def test_questions_are_marked_required_or_optional() -> None:
    page = render("form")

    assert all("required" in radio.attrs for radio in page.radios("q_reason"))
    textarea = page.one("textarea", name="q_comment")
    assert "required" not in textarea.attrs
    assert textarea.attrs["maxlength"] == "500"
    assert page.one("label", for_="q_comment").text() == "Anything else? Optional"
    assert page.by_id(textarea.attrs["aria-describedby"] or "").text() == "Up to 500 characters."


def test_errors_are_shown_at_their_fields_and_summarised_at_the_top() -> None:
    errors = {"score": "Choose a number from 0 to 10.", "answers.comment": "Too long.", "token": "Try again."}
    page = render("form", errors=errors)

    assert page.one("title").text().startswith("Error: ")
    summary = page.one("div", role="alert")
    assert page.elements.index(summary) < page.elements.index(page.one("form"))
    links = summary.iter()
    targets = [link.attrs["href"] for link in links if link.tag == "a"]
    assert targets == ["#field-score", "#field-q_comment"]  # the whole field, its label too
    assert all(page.by_id((target or "")[1:]) for target in targets)
    assert "Try again." in summary.text()

    for radio in page.radios("score"):
        assert radio.attrs["aria-invalid"] == "true"
        assert page.by_id(radio.attrs["aria-describedby"] or "").text() == "Error: Choose a number from 0 to 10."
    textarea = page.one("textarea")
    assert textarea.attrs["aria-invalid"] == "true"
    described = [page.by_id(part).text() for part in (textarea.attrs["aria-describedby"] or "").split()]
    assert "Error: Too long." in described
    assert not [radio for radio in page.radios("q_reason") if "aria-invalid" in radio.attrs]


def test_a_form_without_errors_has_no_alert() -> None:
    page = render("form")

    assert not page.all("div", role="alert")
    assert not [element for element in page.elements if "aria-invalid" in element.attrs]


def test_every_text_is_escaped() -> None:
    attack = '<script>alert("x")</script>'
    survey = make_survey(name=attack, question=attack)
    survey["questions"][0]["options"][0]["text"] = attack
    survey["questions"][0]["options"][0]["value"] = '"><script>'
    survey["questions"][1]["text"] = attack
    page = render(
        "form",
        survey=survey,
        answer={"score": 1, "answers": {"comment": "</textarea>" + attack}},
        errors={"score": attack},
        message=attack,
    )

    assert not page.all("script")
    assert "<script>" not in page.html
    assert page.all("legend")[0].text().startswith(attack)
    assert page.one("textarea").text() == "</textarea>" + attack
    assert page.one("title").text() == f"Error: {attack}"


def test_survey_name_heads_the_form() -> None:
    page = render("form", survey=make_survey(name="Acme feedback"))

    assert page.one("h1").text() == "Acme feedback"
    assert page.one("title").text() == "Acme feedback"


# --- locales -------------------------------------------------------------------------


def test_every_locale_has_every_string() -> None:
    for locale, texts in UI_TEXT.items():
        assert texts.keys() == UI_TEXT["en"].keys(), locale
        assert all(text.strip() for text in texts.values()), locale
        assert texts["score_label"].format(score=8, low=0, high=10) != texts["score_label"], locale


def test_unknown_locales_fall_back_to_their_language_then_english() -> None:
    assert ui_text("fi-FI") is UI_TEXT["fi"]
    assert ui_text("de") is UI_TEXT["en"]
    form = render("form", "de")
    assert form.one("html").attrs["lang"] == "de"  # the survey's own texts are in German
    assert form.one("button").text() == "Send answer"
    invalid = render("invalid", "de")
    assert invalid.one("html").attrs["lang"] == "en"  # only English UI text on the page


def test_a_wrong_call_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown survey page state"):
        render_survey_page(state="done", locale="en", survey=None)
    with pytest.raises(ValueError, match="needs the survey"):
        render_survey_page(state="form", locale="en", survey=None)


# --- the stylesheet ------------------------------------------------------------------


def _palettes() -> dict[str, dict[str, str]]:
    css = CSS.read_text()
    light = re.search(r"^:root \{(.*?)\}", css, re.MULTILINE | re.DOTALL)
    dark = re.search(r"prefers-color-scheme: dark\) \{\s*:root \{(.*?)\}", css, re.DOTALL)
    assert light and dark
    return {
        name: dict(re.findall(r"--([a-z-]+): (#[0-9a-f]{6});", block.group(1)))
        for name, block in (("light", light), ("dark", dark))
    }


def _luminance(hex_colour: str) -> float:
    channels = [int(hex_colour[index : index + 2], 16) / 255 for index in (1, 3, 5)]
    linear = [value / 12.92 if value <= 0.04045 else ((value + 0.055) / 1.055) ** 2.4 for value in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(foreground: str, background: str) -> float:
    lighter, darker = sorted((_luminance(foreground), _luminance(background)), reverse=True)
    return (lighter + 0.05) / (darker + 0.05)


def test_the_contrast_formula() -> None:
    assert contrast("#000000", "#ffffff") == pytest.approx(21)
    assert contrast("#777777", "#ffffff") == pytest.approx(4.48, abs=0.01)


TEXT_PAIRS = [
    ("text", "surface"),
    ("text", "page"),
    ("text", "selected-surface"),
    ("text", "error-surface"),
    ("muted", "surface"),
    ("muted", "page"),  # the required/optional marker
    ("on-primary", "primary"),  # the submit button and a chosen score
    ("on-primary", "primary-hover"),
    ("link", "surface"),
    ("link", "selected-surface"),
    ("error", "surface"),
    ("error", "error-surface"),
]
NON_TEXT_PAIRS = [
    ("control-border", "surface"),  # the edges of the score buttons, choices and the text box
    ("primary", "surface"),  # a chosen score against the card
    ("focus", "surface"),
    ("focus", "page"),
]


@pytest.mark.parametrize("palette", ["light", "dark"])
def test_colours_meet_wcag_aa(palette: str) -> None:
    colours = _palettes()[palette]

    for foreground, background in TEXT_PAIRS:
        ratio = contrast(colours[foreground], colours[background])
        assert ratio >= 4.5, f"{palette}: {foreground} on {background} is {ratio:.2f}:1"
    for foreground, background in NON_TEXT_PAIRS:
        ratio = contrast(colours[foreground], colours[background])
        assert ratio >= 3, f"{palette}: {foreground} against {background} is {ratio:.2f}:1"


def test_the_stylesheet_loads_nothing_else() -> None:
    css = CSS.read_text()

    assert "@import" not in css and "url(" not in css and "@font-face" not in css
