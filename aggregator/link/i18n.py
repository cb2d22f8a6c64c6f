"""The Link pages' languages: English, German, French and Spanish, from a gettext catalogue.

The language is negotiated from the browser's ``Accept-Language`` (RFC 9110 §12.5.4:
preferences by ``q``, then by order; a primary subtag we have wins, ``*`` means English).
Translations live in ``locales/<lang>/LC_MESSAGES/messages.po``, one catalogue per
language, read with Babel at first use; a ``msgid`` is the English text, so a string
missing from a catalogue shows in English rather than not at all. Messages of refused
steps (:class:`~aggregator.link.errors.LinkError`) are looked up the same way when the
page is drawn.
"""

from __future__ import annotations

import gettext
from functools import cache
from importlib.resources import files
from io import BytesIO

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

LOCALES = ("en", "de", "fr", "es")
DEFAULT = "en"
_MAX_RANGES = 20  # a header longer than this is not a person's browser


def negotiate(header: str | None) -> str:
    """The best of :data:`LOCALES` for an ``Accept-Language`` value; English otherwise."""
    ranked: list[tuple[float, int, str]] = []
    for position, item in enumerate((header or "").split(",")[:_MAX_RANGES]):
        tag, _, params = item.strip().partition(";")
        weight = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        if tag and weight > 0:
            ranked.append((-weight, position, tag.strip().lower()))
    for _, _, tag in sorted(ranked):
        if tag == "*":
            return DEFAULT
        if tag.split("-")[0] in LOCALES:
            return tag.split("-")[0]
    return DEFAULT


@cache
def translations(locale: str) -> gettext.NullTranslations:
    """The catalogue of ``locale`` (English: the msgids themselves)."""
    if locale not in LOCALES or locale == DEFAULT:
        return gettext.NullTranslations()
    source = files("aggregator.link").joinpath("locales", locale, "LC_MESSAGES",
                                               "messages.po")
    with source.open("rb") as po:
        catalog = read_po(po, locale=locale)
    compiled = BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    return gettext.GNUTranslations(compiled)
