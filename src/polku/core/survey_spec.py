"""Survey definitions: the YAML a user writes, validated and compiled (pure).

A survey asks one metric question — CSAT (1–5), NPS (0–10) or CES (1–7) — and at
most two more (a choice or free text), worded in every locale it supports. It names
the channels it may be delivered in, the rules that trigger it (an event, a
condition and a delay; journeys trigger it with a ``survey`` step), a sampling
share and how soon the same customer may be asked it again (docs/surveys.md).

Parsing reports errors with the file, the line and the field, as journeys do.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

import msgspec

from polku.core.attributes import parse_duration
from polku.core.errors import ConfigError
from polku.core.expr import Condition, compile_condition
from polku.core.profile import FEEDBACK_SCALES
from polku.core.templates import Template, compile_template

SURVEY_ID: Final = re.compile(r"[a-z0-9][a-z0-9_\-]{0,62}")
LOCALE: Final = re.compile(r"[a-z]{2,3}(-[A-Z]{2})?")
MAX_QUESTIONS: Final = 2
"""Questions beyond the metric: short surveys get answered."""
MAX_OPTIONS: Final = 10
MAX_TEXT_LENGTH: Final = 5000
MAX_TRIGGERS: Final = 20
MAX_SURVEY_DURATION_MS: Final = 366 * 86_400_000
SURVEY_CHANNEL: Final = "in_app"
"""The built-in channel of surveys shown in the app or on the web (returned by
``GET /v1/profiles/{id}/surveys``)."""

Wording = dict[str, str]
"""Locale → text (``{en: ..., fi: ...}``)."""

DEFAULT_SUBJECT: Final = {
    "en": "A quick question from us",
    "fi": "Lyhyt kysymys meiltä",
    "sv": "En snabb fråga från oss",
}
DEFAULT_BODY: Final = {
    "en": "{{ survey.question }}\n\nAnswer here (it takes a few seconds): {{ survey.link }}\n",
    "fi": "{{ survey.question }}\n\nVastaa tästä (vie vain hetken): {{ survey.link }}\n",
    "sv": "{{ survey.question }}\n\nSvara här (det tar några sekunder): {{ survey.link }}\n",
}
DEFAULT_TEXT: Final = {
    "en": "{{ survey.question }} {{ survey.link }}",
    "fi": "{{ survey.question }} {{ survey.link }}",
    "sv": "{{ survey.question }} {{ survey.link }}",
}
"""The invitation's wording where a survey gives none (an SMS or webhook gets ``text``)."""


class Option(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    value: str
    text: Wording


class Question(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    id: str
    type: Literal["choice", "text"]
    text: Wording
    options: list[Option] = []
    required: bool = False
    max_length: int = 1000
    """The longest free-text answer kept (characters)."""


class Trigger(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Ask after an event: ``Call Ended``, 10 minutes later, when the condition holds."""

    event: str
    when: str | None = None
    delay: str = "0s"
    channel: str | None = None
    """The channel to ask in (the first of the survey's channels that can reach the
    customer without it)."""


class Invitation(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The invitation's wording per locale (templates; ``survey.link`` is the link)."""

    subject: Wording | None = None
    body: Wording | None = None
    html: Wording | None = None
    text: Wording | None = None
    """The text of an SMS or webhook invitation (``payload.text``)."""


class SurveySpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    id: str
    name: str = ""
    description: str = ""
    metric: Literal["csat", "nps", "ces"]
    question: Wording
    """The metric question per locale; its locales are the survey's."""
    questions: list[Question] = []
    default_locale: str = "en"
    channels: list[str]
    """Where it may be delivered, in order of preference."""
    triggers: list[Trigger] = []
    sample: float = 1.0
    """The share of triggered customers asked (the rest are recorded ``sampled_out``)."""
    recontact: str = "90d"
    """The least time between two invitations of this survey to one customer."""
    expires: str = "7d"
    """How long the link (and an in-app survey) stays valid."""
    edit_window: str = "24h"
    """How long after answering the customer may change the answer (0s: never)."""
    invitation: Invitation = msgspec.field(default_factory=Invitation)


# --- compiled form --------------------------------------------------------------------


@dataclass(frozen=True)
class CompiledTrigger:
    event: str
    condition: Condition | None
    delay_ms: int
    channel: str | None
    when: str | None


@dataclass(frozen=True)
class Survey:
    """One deployed version of a survey."""

    id: str
    version: int
    spec: SurveySpec
    metric: str
    scale: tuple[int, int]
    locales: tuple[str, ...]
    default_locale: str
    channels: tuple[str, ...]
    triggers: tuple[CompiledTrigger, ...]
    sample: float
    recontact_ms: int
    expires_ms: int
    edit_window_ms: int
    subject: Mapping[str, Template]
    body: Mapping[str, Template]
    html: Mapping[str, Template]
    text: Mapping[str, Template]

    def locale_for(self, preferred: object) -> str:
        """The survey's locale closest to a customer's (``fi-FI`` → ``fi``)."""
        if isinstance(preferred, str) and preferred:
            wanted = preferred.replace("_", "-")
            if wanted in self.locales:
                return wanted
            language = wanted.split("-")[0].lower()
            for locale in self.locales:
                if locale.split("-")[0] == language:
                    return locale
        return self.default_locale

    def question_text(self, locale: str) -> str:
        return self.spec.question.get(locale) or self.spec.question[self.default_locale]


def _error(path: str, message: str) -> ConfigError:
    return ConfigError(f"{path}: {message}", field=path)


def parse_survey(text: str | bytes, *, filename: str = "<survey>") -> SurveySpec:
    """YAML (or JSON) → a validated ``SurveySpec``; a ``ConfigError`` names the file,
    the line and the field of the first problem."""
    from polku.core.yaml_source import load_with_lines, located

    data, lines = load_with_lines(text, filename)
    if not isinstance(data, dict):
        raise ConfigError(
            f"{filename}: a survey is a mapping with `id`, `metric`, `question` and `channels`", file=filename
        )
    try:
        spec = msgspec.convert(data, SurveySpec)
    except msgspec.ValidationError as error:
        message = str(error)
        match = re.search(r"at `\$\.?([^`]*)`", message)
        raise located(
            filename, lines, match[1] if match else "", message.replace("$.", "").replace(" - at `$`", "")
        ) from None
    try:
        compile_survey(spec, version=1)
    except ConfigError as error:
        raise located(filename, lines, str(error.details.get("field", "")), error.message) from None
    return spec


def compile_survey(spec: SurveySpec, *, version: int, channels: Mapping[str, str] | None = None) -> Survey:
    """Semantic checks and compilation; with ``channels`` (name → connector type),
    every channel must be configured (or be the built-in ``in_app``)."""
    from polku.core.journey_spec import JOURNEY_ROOTS

    if not SURVEY_ID.fullmatch(spec.id):
        raise _error("id", f"{spec.id!r} must be 1-63 lower-case letters, digits, '-' or '_'")
    locales = tuple(spec.question)
    if not locales:
        raise _error("question", "word the question in at least one locale, e.g. {en: ..., fi: ...}")
    for locale in locales:
        if not LOCALE.fullmatch(locale):
            raise _error(f"question.{locale}", f"{locale!r} is not a locale (write 'en', 'fi' or 'fi-FI')")
    if spec.default_locale not in locales:
        raise _error("default_locale", f"{spec.default_locale!r} is not one of the question's locales ({locales})")
    _wording(spec.question, locales, "question")
    if len(spec.questions) > MAX_QUESTIONS:
        raise _error("questions", f"at most {MAX_QUESTIONS} questions beyond the metric (short surveys get answers)")
    seen: set[str] = set()
    for index, question in enumerate(spec.questions):
        where = f"questions[{index}]"
        if not SURVEY_ID.fullmatch(question.id) or question.id in ("score", "comment"):
            raise _error(f"{where}.id", f"{question.id!r} must be a short lower-case name (not 'score' or 'comment')")
        if question.id in seen:
            raise _error(f"{where}.id", f"question id {question.id!r} is used twice")
        seen.add(question.id)
        _wording(question.text, locales, f"{where}.text")
        if question.type == "choice":
            if not 2 <= len(question.options) <= MAX_OPTIONS:
                raise _error(f"{where}.options", f"a choice needs 2-{MAX_OPTIONS} options")
            values = [option.value for option in question.options]
            if len(set(values)) != len(values) or not all(0 < len(value) <= 64 for value in values):
                raise _error(f"{where}.options", f"option values must differ and be 1-64 characters (got {values})")
            for number, option in enumerate(question.options):
                _wording(option.text, locales, f"{where}.options[{number}].text")
        elif question.options:
            raise _error(f"{where}.options", "only a choice question has options")
        if not 1 <= question.max_length <= MAX_TEXT_LENGTH:
            raise _error(f"{where}.max_length", f"must be 1-{MAX_TEXT_LENGTH}")
    if not spec.channels:
        raise _error("channels", f"name at least one channel to ask in (e.g. email, sms, {SURVEY_CHANNEL})")
    if len(set(spec.channels)) != len(spec.channels):
        raise _error("channels", f"a channel is named twice ({spec.channels})")
    for index, channel in enumerate(spec.channels):
        where = f"channels[{index}]"
        if channel != SURVEY_CHANNEL and channels is not None and channel not in channels:
            known = sorted({SURVEY_CHANNEL, *channels})
            raise _error(where, f"unknown channel {channel!r} (configured: {', '.join(known)})")
        if not SURVEY_ID.fullmatch(channel):
            raise _error(where, f"{channel!r} is not a channel name")
    if len(spec.triggers) > MAX_TRIGGERS:
        raise _error("triggers", f"at most {MAX_TRIGGERS} triggers")
    triggers = []
    for index, trigger in enumerate(spec.triggers):
        where = f"triggers[{index}]"
        if not trigger.event or len(trigger.event) > 256:
            raise _error(f"{where}.event", "name the event that triggers the survey")
        if trigger.channel is not None and trigger.channel not in spec.channels:
            raise _error(f"{where}.channel", f"{trigger.channel!r} is not one of the survey's channels {spec.channels}")
        triggers.append(
            CompiledTrigger(
                event=trigger.event,
                condition=compile_condition(trigger.when, roots=JOURNEY_ROOTS, where=f"{where}.when")
                if trigger.when
                else None,
                delay_ms=_duration(trigger.delay, f"{where}.delay", allow_zero=True),
                channel=trigger.channel,
                when=trigger.when,
            )
        )
    if not 0 < spec.sample <= 1:
        raise _error("sample", "must be a share above 0 and at most 1 (0.25 asks a quarter)")
    invitation = spec.invitation
    return Survey(
        id=spec.id,
        version=version,
        spec=spec,
        metric=spec.metric,
        scale=FEEDBACK_SCALES[spec.metric],
        locales=locales,
        default_locale=spec.default_locale,
        channels=tuple(spec.channels),
        triggers=tuple(triggers),
        sample=spec.sample,
        recontact_ms=_duration(spec.recontact, "recontact", allow_zero=True),
        expires_ms=_duration(spec.expires, "expires"),
        edit_window_ms=_duration(spec.edit_window, "edit_window", allow_zero=True),
        subject=_templates(invitation.subject, DEFAULT_SUBJECT, locales, "invitation.subject"),
        body=_templates(invitation.body, DEFAULT_BODY, locales, "invitation.body"),
        html=_templates(invitation.html, None, locales, "invitation.html", html=True),
        text=_templates(invitation.text, DEFAULT_TEXT, locales, "invitation.text"),
    )


def _wording(wording: Mapping[str, str], locales: tuple[str, ...], where: str) -> None:
    missing = [locale for locale in locales if not str(wording.get(locale) or "").strip()]
    if missing:
        raise _error(
            where,
            f"missing the {', '.join(repr(m) for m in missing)} wording (the survey's locales: {', '.join(locales)})",
        )
    extra = [locale for locale in wording if locale not in locales]
    if extra:
        raise _error(where, f"{extra} are not locales of the question ({', '.join(locales)})")
    for locale, text in wording.items():
        if len(text) > MAX_TEXT_LENGTH:
            raise _error(f"{where}.{locale}", f"at most {MAX_TEXT_LENGTH} characters")


def _templates(
    wording: Wording | None,
    defaults: Mapping[str, str] | None,
    locales: tuple[str, ...],
    where: str,
    *,
    html: bool = False,
) -> dict[str, Template]:
    if wording is None:
        if defaults is None:
            return {}
        # A locale with no built-in wording gets the English one.
        return {
            locale: compile_template(defaults.get(locale.split("-")[0], defaults["en"]), where) for locale in locales
        }
    _wording(wording, locales, where)
    return {locale: compile_template(wording[locale], f"{where}.{locale}", html=html) for locale in locales}


def _duration(text: str, where: str, *, allow_zero: bool = False) -> int:
    if allow_zero and isinstance(text, str) and text.strip() in ("0", "0s", "0m", "0h", "0d"):
        return 0
    value = parse_duration(text, where)
    if value > MAX_SURVEY_DURATION_MS:
        raise _error(where, "at most 366d")
    return value


def validate_answer(survey: Survey, score: Any, answers: Mapping[str, Any], comment: Any) -> dict[str, Any]:
    """An answer checked against the survey: the score on the metric's scale, each
    choice one of its options, texts within their length. Returns the clean answer
    (``score``, ``answers``, ``comment``); a ``ConfigError`` names the field."""
    low, high = survey.scale
    if isinstance(score, str) and score.strip().lstrip("-").isdigit():
        score = int(score.strip())
    if isinstance(score, bool) or not isinstance(score, int) or not low <= score <= high:
        raise _error("score", f"choose a whole number from {low} to {high} ({survey.metric.upper()})")
    clean: dict[str, Any] = {}
    known = {question.id: question for question in survey.spec.questions}
    unknown = [key for key in answers if key not in known]
    if unknown:
        raise _error(
            f"answers.{unknown[0]}", f"not a question of survey {survey.id!r} (its questions: {sorted(known)})"
        )
    for question in survey.spec.questions:
        value = answers.get(question.id)
        if value in (None, ""):
            if question.required:
                raise _error(f"answers.{question.id}", "this question needs an answer")
            continue
        if question.type == "choice":
            values = [option.value for option in question.options]
            if value not in values:
                raise _error(f"answers.{question.id}", f"{value!r} is not one of the options {values}")
            clean[question.id] = value
        else:
            if not isinstance(value, str):
                raise _error(f"answers.{question.id}", "must be text")
            if len(value.strip()) > question.max_length:
                raise _error(f"answers.{question.id}", f"at most {question.max_length} characters")
            clean[question.id] = value.strip()
    if comment is not None and not isinstance(comment, str):
        raise _error("comment", "must be text")
    text = (comment or "").strip()
    if len(text) > MAX_TEXT_LENGTH:
        raise _error("comment", f"at most {MAX_TEXT_LENGTH} characters")
    return {"score": score, "answers": clean, "comment": text or None}


def survey_schema() -> dict[str, Any]:
    """The JSON Schema of a survey document (published at ``/v1/surveys/schema``)."""
    schema: dict[str, Any] = msgspec.json.schema(SurveySpec)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "polku survey"
    return schema
