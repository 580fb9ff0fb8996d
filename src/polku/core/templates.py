"""Message templates: Jinja2 in its immutable sandbox (pure).

A template reads the same names a journey condition does (``traits``, ``event``,
``trigger``, ``attributes`` …). The sandbox refuses attribute escapes
(``{{ ''.__class__ }}``) and calls of anything unsafe; rendering a template never
writes anything. Text templates are not HTML-escaped; ``html`` templates are.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any, Final

from polku.core.errors import ConfigError

MAX_TEMPLATE_LENGTH: Final = 64 * 1024
MAX_RENDERED_LENGTH: Final = 256 * 1024


class TemplateError(ConfigError):
    """A template that does not compile (at deploy) or failed to render (at run)."""


@lru_cache(maxsize=2)
def _environment(html: bool) -> Any:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    return ImmutableSandboxedEnvironment(autoescape=html, keep_trailing_newline=True)


class Template:
    __slots__ = ("_template", "source", "where")

    def __init__(self, source: str, where: str, *, html: bool = False) -> None:
        from jinja2 import TemplateSyntaxError

        if not isinstance(source, str):
            raise TemplateError(f"{where}: a template must be text", field=where)
        if len(source) > MAX_TEMPLATE_LENGTH:
            raise TemplateError(f"{where}: a template is at most {MAX_TEMPLATE_LENGTH} characters", field=where)
        self.source = source
        self.where = where
        try:
            self._template = _environment(html).from_string(source)
        except TemplateSyntaxError as error:
            raise TemplateError(
                f"{where}: line {error.lineno}: {error.message}", field=where, line=error.lineno
            ) from None

    def __repr__(self) -> str:
        return f"Template({self.source!r})"

    def render(self, context: Mapping[str, Any]) -> str:
        """Raises ``TemplateError`` when the template fails on this data (a missing
        value renders as empty text; a call the sandbox refuses is an error)."""
        try:
            text: str = self._template.render(context)
        except Exception as error:
            raise TemplateError(f"{self.where}: {type(error).__name__}: {error}", field=self.where) from None
        if len(text) > MAX_RENDERED_LENGTH:
            raise TemplateError(
                f"{self.where}: rendered to more than {MAX_RENDERED_LENGTH} characters", field=self.where
            )
        return text


def compile_template(source: str, where: str, *, html: bool = False) -> Template:
    return Template(source, where, html=html)


def render_payload(payload: Any, context: Mapping[str, Any]) -> Any:
    """A webhook payload whose strings are templates, rendered."""
    if isinstance(payload, Template):
        return payload.render(context)
    if isinstance(payload, dict):
        return {key: render_payload(value, context) for key, value in payload.items()}
    if isinstance(payload, list):
        return [render_payload(value, context) for value in payload]
    return payload
