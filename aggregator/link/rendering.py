"""Jinja2 rendering for the Link pages, with one escaping rule and a translation catalogue.

Autoescaping is on for every template (Jinja2 "Autoescaping"): a value reaches the HTML
only escaped, unless code marks it safe, which nothing here does. Strings are looked up
in Babel catalogues (``locale/<lang>.po``), compiled in memory at first use: the ``.po``
files ship as package data, so an editable install and a wheel behave the same and no
build step has to produce ``.mo`` files.

The locale comes from the link session's ``locale`` when the app set one, else from the
browser's ``Accept-Language`` (RFC 9110 §12.5.4), else English.
"""

from __future__ import annotations

import io
from functools import cache
from importlib.resources import files
from typing import Any

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations
from jinja2 import Environment, PackageLoader, select_autoescape

#: The languages the Link pages speak; English is the catalogue's source language.
LOCALES = ("en", "de", "fr", "es")
DEFAULT_LOCALE = "en"


@cache
def translations(locale: str) -> NullTranslations:
    """The compiled catalogue of ``locale`` (English: the source strings themselves)."""
    if locale == DEFAULT_LOCALE:
        return NullTranslations()
    source = files("aggregator.link").joinpath("locale", f"{locale}.po")
    with source.open("rb") as po:
        catalog = read_po(po, locale=locale)
    compiled = io.BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    return Translations(compiled)


@cache
def environment(locale: str) -> Environment:
    env = Environment(
        loader=PackageLoader("aggregator.link", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        extensions=["jinja2.ext.i18n"],
        trim_blocks=False,
    )
    env.install_gettext_translations(translations(locale), newstyle=True)  # type: ignore[attr-defined]
    return env


def gettext(locale: str, message: str, **values: Any) -> str:
    """``message`` in ``locale``, with ``%(name)s`` placeholders filled (not escaped)."""
    text = translations(locale).gettext(message)
    return text % values if values else text


def render(locale: str, template: str, **context: Any) -> str:
    return environment(locale).get_template(template).render(lang=locale, **context)


def supported(locale: str | None) -> str | None:
    """``locale``'s language when we speak it (``de-AT`` → ``de``), else None."""
    if not locale:
        return None
    language = locale.strip().replace("_", "-").split("-")[0].lower()
    return language if language in LOCALES else None


def negotiate(session_locale: str | None, accept_language: str | None) -> str:
    """The session's locale, else the best ``Accept-Language`` match, else English."""
    chosen = supported(session_locale)
    if chosen:
        return chosen
    ranked: list[tuple[float, int, str]] = []
    for position, item in enumerate((accept_language or "").split(",")[:20]):
        tag, _, params = item.strip().partition(";")
        weight = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        language = supported(tag)
        if language and weight > 0:
            ranked.append((-weight, position, language))
    return min(ranked)[2] if ranked else DEFAULT_LOCALE
