"""The hosted survey page (``/s/<token>``), rendered as one HTML document per state.

Customers open the page from a link in an email or SMS, mostly on phones, so it works
with no JavaScript at all: a plain form that POSTs to its own URL. The page is served
with a strict Content-Security-Policy, so it has no inline scripts or style attributes;
its only resource is the stylesheet at ``/s/static/survey.css``.

Rendering is pure. The server passes the state, the survey (every text already in the
locale), a previous answer to prefill and the errors of a rejected answer;
``render_survey_page`` returns the document. ``UI_TEXT`` holds the page's own wording
in every locale polku ships.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from jinja2 import Environment, FileSystemLoader, StrictUndefined

STATES: Final = frozenset({"form", "thanks", "closed", "invalid", "expired", "opted_out"})
STYLESHEET_PATH: Final = "/s/static/survey.css"
DEFAULT_MAX_LENGTH: Final = 1000

UI_TEXT: dict[str, dict[str, str]] = {
    "en": {
        "page_title": "Survey",
        "form_heading": "A quick question",
        "required": "Required",
        "optional": "Optional",
        "submit": "Send answer",
        "score_label": "{score} out of {high}",
        "nps_low": "Not at all likely",
        "nps_high": "Extremely likely",
        "csat_low": "Very dissatisfied",
        "csat_high": "Very satisfied",
        "ces_low": "Very easy",
        "ces_high": "Very difficult",
        "max_length": "Up to {max_length} characters.",
        "error_summary": "Please check your answer",
        "error_prefix": "Error",
        "error_score": "Choose a number from {low} to {high}.",
        "error_required": "Answer this question.",
        "error_choice": "Choose one of the options.",
        "error_too_long": "Shorten your answer to {max_length} characters or fewer.",
        "thanks_title": "Thank you!",
        "thanks_text": "Your answer has been saved.",
        "edit": "Change my answer",
        "edit_note": "You can still change your answer for a while.",
        "closed_title": "You have already answered",
        "closed_text": "Thank you, your answer is saved. The time for changing it has passed.",
        "invalid_title": "This link is not valid",
        "invalid_text": "Check that you opened the whole link from your message. "
        "If it still does not work, the survey may have been withdrawn.",
        "expired_title": "This survey has closed",
        "expired_text": "Answers are no longer being collected. Thank you for your interest.",
        "opt_out": "Don't ask me for feedback again",
        "opted_out_title": "We won't ask again",
        "opted_out_text": "You will get no more feedback requests from us. You can change this "
        "in your preferences at any time.",
    },
    "fi": {
        "page_title": "Kysely",
        "form_heading": "Lyhyt kysymys",
        "required": "Pakollinen",
        "optional": "Vapaaehtoinen",
        "submit": "Lähetä vastaus",
        "score_label": "{score} asteikolla {low}–{high}",
        "nps_low": "En lainkaan todennäköisesti",
        "nps_high": "Erittäin todennäköisesti",
        "csat_low": "Erittäin tyytymätön",
        "csat_high": "Erittäin tyytyväinen",
        "ces_low": "Erittäin helppoa",
        "ces_high": "Erittäin vaikeaa",
        "max_length": "Enintään {max_length} merkkiä.",
        "error_summary": "Tarkista vastauksesi",
        "error_prefix": "Virhe",
        "error_score": "Valitse luku väliltä {low}–{high}.",
        "error_required": "Vastaa tähän kysymykseen.",
        "error_choice": "Valitse yksi vaihtoehdoista.",
        "error_too_long": "Lyhennä vastauksesi enintään {max_length} merkkiin.",
        "thanks_title": "Kiitos!",
        "thanks_text": "Vastauksesi on tallennettu.",
        "edit": "Muuta vastaustani",
        "edit_note": "Voit vielä jonkin aikaa muuttaa vastaustasi.",
        "closed_title": "Olet jo vastannut",
        "closed_text": "Kiitos, vastauksesi on tallennettu. Sen muuttamisen aika on päättynyt.",
        "invalid_title": "Linkki ei kelpaa",
        "invalid_text": "Tarkista, että avasit viestissä olleen linkin kokonaan. "
        "Jos se ei vieläkään toimi, kysely on ehkä poistettu.",
        "expired_title": "Kysely on päättynyt",
        "expired_text": "Vastauksia ei enää kerätä. Kiitos mielenkiinnostasi.",
        "opt_out": "Älä kysy minulta palautetta enää",
        "opted_out_title": "Emme kysy enää",
        "opted_out_text": "Et saa meiltä enää palautepyyntöjä. Voit muuttaa tämän asetuksistasi milloin tahansa.",
    },
    "sv": {
        "page_title": "Enkät",
        "form_heading": "En snabb fråga",
        "required": "Obligatorisk",
        "optional": "Valfri",
        "submit": "Skicka svar",
        "score_label": "{score} av {high}",
        "nps_low": "Inte alls sannolikt",
        "nps_high": "Mycket sannolikt",
        "csat_low": "Mycket missnöjd",
        "csat_high": "Mycket nöjd",
        "ces_low": "Mycket lätt",
        "ces_high": "Mycket svårt",
        "max_length": "Högst {max_length} tecken.",
        "error_summary": "Kontrollera ditt svar",
        "error_prefix": "Fel",
        "error_score": "Välj ett tal från {low} till {high}.",
        "error_required": "Svara på den här frågan.",
        "error_choice": "Välj ett av alternativen.",
        "error_too_long": "Korta ditt svar till högst {max_length} tecken.",
        "thanks_title": "Tack!",
        "thanks_text": "Ditt svar har sparats.",
        "edit": "Ändra mitt svar",
        "edit_note": "Du kan fortfarande ändra ditt svar en stund.",
        "closed_title": "Du har redan svarat",
        "closed_text": "Tack, ditt svar har sparats. Tiden för att ändra det har gått ut.",
        "invalid_title": "Länken är inte giltig",
        "invalid_text": "Kontrollera att du öppnade hela länken i meddelandet. "
        "Om den fortfarande inte fungerar kan enkäten ha tagits bort.",
        "expired_title": "Enkäten har stängts",
        "expired_text": "Svar samlas inte längre in. Tack för ditt intresse.",
        "opt_out": "Be mig inte om feedback igen",
        "opted_out_title": "Vi frågar inte igen",
        "opted_out_text": "Du får inga fler förfrågningar om feedback från oss. Du kan ändra detta "
        "i dina inställningar när som helst.",
    },
}
"""Locale → the page's own wording. ``error_*`` are for the server's messages of a
rejected answer; ``{low}``, ``{high}`` and ``{max_length}`` are ``str.format`` fields."""

_environment = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_template = _environment.get_template("survey.html")


def ui_locale(locale: str) -> str:
    """The locale of ``UI_TEXT`` used for ``locale``: itself, its language (``fi`` for
    ``fi-FI``) or English."""
    if locale in UI_TEXT:
        return locale
    language = locale.split("-")[0]
    return language if language in UI_TEXT else "en"


def ui_text(locale: str) -> dict[str, str]:
    """The page's wording in ``locale`` (see ``ui_locale`` for the fallback)."""
    return UI_TEXT[ui_locale(locale)]


@dataclass(frozen=True)
class _Option:
    id: str
    value: str
    text: str
    checked: bool
    aria_label: str | None = None


@dataclass(frozen=True)
class _Field:
    """One question of the form, shaped for the template."""

    kind: str
    """``scale`` (the metric question), ``choice`` or ``text``."""
    name: str
    label: str
    required: bool
    control_id: str = ""
    """The text box's id (choices and the scale have one id per option)."""
    error: str | None = None
    options: tuple[_Option, ...] = ()
    value: str = ""
    max_length: int = 0
    hint: str = ""
    anchors: tuple[str, str] = ("", "")

    @property
    def field_id(self) -> str:
        """The field's box, with its label: where the error summary links to."""
        return f"field-{self.name}"

    @property
    def error_id(self) -> str:
        return f"{self.name}-error"

    @property
    def hint_id(self) -> str:
        return f"{self.name}-hint"

    @property
    def described_by(self) -> str:
        ids = [self.hint_id] if self.hint else []
        if self.error:
            ids.append(self.error_id)
        return " ".join(ids)


@dataclass(frozen=True)
class _ErrorItem:
    message: str
    href: str | None


def render_survey_page(
    *,
    state: str,
    locale: str,
    survey: dict[str, Any] | None,
    answer: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    message: str | None = None,
    can_edit: bool = False,
    opt_out: str | None = None,
) -> str:
    """The page in ``state``: ``form`` asks the survey (prefilled with ``answer``, with
    ``errors`` by field: ``score``, ``answers.<question id>``); ``thanks``, ``closed``,
    ``invalid``, ``expired`` and ``opted_out`` say what happened. ``message`` is one more
    line above the form or on the result; ``can_edit`` offers a way back to the form on
    ``thanks``; ``opt_out`` is where the form that says "don't ask me again" posts (on
    ``form`` and ``thanks``)."""
    if state not in STATES:
        raise ValueError(f"unknown survey page state {state!r} (one of {sorted(STATES)})")
    ui = ui_text(locale)
    fields: list[_Field] = []
    error_items: list[_ErrorItem] = []
    if state == "form":
        if survey is None:
            raise ValueError("the form needs the survey")
        fields = _fields(survey, answer or {}, errors or {}, ui)
        error_items = _error_items(fields, errors or {})
        heading = survey.get("name") or ui["form_heading"]
        title = f"{ui['error_prefix']}: {heading}" if error_items else heading
        text = ""
    else:
        heading = ui[f"{state}_title"]
        title = f"{heading} – {ui['page_title']}"
        text = ui[f"{state}_text"]
    # The survey's texts are in the locale asked for; without a survey the page holds
    # only UI_TEXT, whose locale may be a fallback.
    lang = locale if survey is not None else ui_locale(locale)
    if state == "thanks" and can_edit and not message:
        message = ui["edit_note"]
    return _template.render(
        state=state,
        lang=lang,
        title=title,
        heading=heading,
        text=text,
        message=message,
        ui=ui,
        fields=fields,
        error_items=error_items,
        can_edit=can_edit and state == "thanks",
        opt_out=opt_out if state in ("form", "thanks") else None,
        stylesheet=STYLESHEET_PATH,
    )


def _fields(
    survey: Mapping[str, Any], answer: Mapping[str, Any], errors: Mapping[str, str], ui: Mapping[str, str]
) -> list[_Field]:
    return [
        _score_field(survey, answer.get("score"), errors.get("score"), ui),
        *(
            _question_field(question, (answer.get("answers") or {}).get(question["id"]), errors, ui)
            for question in survey.get("questions") or []
        ),
    ]


def _score_field(survey: Mapping[str, Any], score: Any, error: str | None, ui: Mapping[str, str]) -> _Field:
    low, high = (int(end) for end in survey["scale"])
    metric = survey["metric"]
    anchor_low, anchor_high = ui[f"{metric}_low"], ui[f"{metric}_high"]
    options = []
    for value in range(low, high + 1):
        aria_label = ui["score_label"].format(score=value, low=low, high=high)
        # The ends carry their anchors, which are shown under the scale but hidden
        # from screen readers so that they are read once, with their number.
        if value == low:
            aria_label = f"{aria_label}, {anchor_low}"
        elif value == high:
            aria_label = f"{aria_label}, {anchor_high}"
        options.append(
            _Option(
                id=f"score-{value}",
                value=str(value),
                text=str(value),
                checked=_same(score, value),
                aria_label=aria_label,
            )
        )
    return _Field(
        kind="scale",
        name="score",
        label=survey["question"],
        required=True,
        error=error,
        options=tuple(options),
        anchors=(anchor_low, anchor_high),
    )


def _question_field(
    question: Mapping[str, Any], value: Any, errors: Mapping[str, str], ui: Mapping[str, str]
) -> _Field:
    name = f"q_{question['id']}"
    required = bool(question.get("required"))
    error = errors.get(f"answers.{question['id']}")
    if question["type"] == "choice":
        options = tuple(
            _Option(
                id=f"{name}-{index}",
                value=str(option["value"]),
                text=option["text"],
                checked=_same(value, option["value"]),
            )
            for index, option in enumerate(question.get("options") or [])
        )
        return _Field(
            kind="choice",
            name=name,
            label=question["text"],
            required=required,
            error=error,
            options=options,
        )
    max_length = int(question.get("max_length") or DEFAULT_MAX_LENGTH)
    return _Field(
        kind="text",
        name=name,
        label=question["text"],
        required=required,
        control_id=name,
        error=error,
        value="" if value is None else str(value),
        max_length=max_length,
        hint=ui["max_length"].format(max_length=max_length),
    )


def _error_items(fields: list[_Field], errors: Mapping[str, str]) -> list[_ErrorItem]:
    """The summary at the top: field errors in the order of the form, each a link to its
    field, then any error that names no field of the form."""
    items = [_ErrorItem(field.error, f"#{field.field_id}") for field in fields if field.error]
    known = {"score", *(f"answers.{field.name.removeprefix('q_')}" for field in fields if field.kind != "scale")}
    items.extend(_ErrorItem(text, None) for key, text in errors.items() if key not in known)
    return items


def _same(given: Any, value: Any) -> bool:
    """Whether a prefilled answer (an int, or a string from a form post) is ``value``."""
    return given is not None and not isinstance(given, bool) and str(given) == str(value)
