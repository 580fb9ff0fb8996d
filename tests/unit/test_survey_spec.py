"""Survey documents (errors name file, line and field), answers checked against
their survey, and the signed tokens of survey links."""

from __future__ import annotations

import pytest

from polku.core.errors import ConfigError
from polku.core.survey_spec import compile_survey, parse_survey, validate_answer
from polku.core.survey_tokens import TokenError, make_token, read_token
from tests.surveys.helpers import CSAT

SECRET = b"k" * 32
INVITATION = "0123456789abcdef01234567"


def survey():  # type: ignore[no-untyped-def]
    return compile_survey(parse_survey(CSAT), version=1)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("metric: csat", "metric: happiness"), "call-csat.yaml:4: "),
        ((', fi: "Mikä oli tärkeintä?"', ""), "questions[0].text: missing the 'fi' wording"),
        (("    delay: 10m", "    delay: soon"), "triggers[0].delay"),
        (("channels: [email, sms, in_app]", "channels: []"), "channels: name at least one channel"),
        (("recontact: 60d", "recontact: 60d\nsample: 0"), "sample: must be a share"),
        (("    type: choice", "    type: choice\n    required: maybe"), "questions[0].required"),
    ],
)
def test_invalid_surveys_name_the_line_and_field(change: tuple[str, str], expected: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_survey(CSAT.replace(*change), filename="call-csat.yaml")
    assert expected in error.value.message


def test_at_most_two_questions_beyond_the_metric() -> None:
    extra = "\n".join(f"  - {{id: q{n}, type: text, text: {{en: 'More?', fi: 'Lisää?'}}}}" for n in range(2))
    text = CSAT.replace("channels: [email", f"{extra}\nchannels: [email")
    with pytest.raises(ConfigError, match="at most 2 questions"):
        parse_survey(text)


def test_unknown_channels_are_refused_against_the_workspace() -> None:
    with pytest.raises(ConfigError, match="unknown channel 'sms'"):
        compile_survey(parse_survey(CSAT), version=1, channels={"email": "smtp"})


def test_locale_matching() -> None:
    found = survey()
    assert [found.locale_for(x) for x in ("fi-FI", "fi_FI", "FI", "sv", None)] == ["fi", "fi", "fi", "en", "en"]


def test_answers_are_checked_against_the_survey() -> None:
    found = survey()
    assert validate_answer(found, "4", {"reason": "speed"}, None) == {
        "score": 4,
        "answers": {"reason": "speed"},
        "comment": None,
    }
    for score in (0, 6, 4.5, True, "x", None):
        with pytest.raises(ConfigError, match="from 1 to 5"):
            validate_answer(found, score, {}, None)
    with pytest.raises(ConfigError, match="not one of the options"):
        validate_answer(found, 3, {"reason": "price"}, None)
    with pytest.raises(ConfigError, match="not a question"):
        validate_answer(found, 3, {"other": "x"}, None)
    with pytest.raises(ConfigError, match="at most 5000"):
        validate_answer(found, 3, {}, "x" * 5001)


def test_a_token_reads_back_and_refuses_tampering_expiry_and_other_secrets() -> None:
    token = make_token(SECRET, INVITATION, 2_000_000_000_000)
    assert len(token) < 64
    claims = read_token(SECRET, token, 1_900_000_000_000)
    assert (claims.invitation, claims.expires_ms) == (INVITATION, 2_000_000_000_000)
    body, tag = token.split(".")
    later = make_token(SECRET, INVITATION, 2_100_000_000_000).split(".")[0]
    forgeries = [
        f"{later}.{tag}",  # a stretched expiry under the old tag
        f"{body}.{tag[:-1]}{'A' if tag[-1] != 'A' else 'B'}",
        make_token(b"x" * 32, INVITATION, 2_000_000_000_000),  # another installation's secret
        "",
        "a.b.c",
        "!!!.???",
    ]
    for forged in forgeries:
        with pytest.raises(TokenError) as error:
            read_token(SECRET, forged, 1_900_000_000_000)
        assert error.value.code == "invalid"
    with pytest.raises(TokenError) as error:
        read_token(SECRET, token, 2_000_000_000_000)
    assert error.value.code == "expired"
