"""The Link pages in English, German, French and Spanish, from the gettext catalogue."""

from __future__ import annotations

import re
from importlib.resources import files

import pytest
from babel.messages.pofile import read_po

from aggregator.link.errors import LinkExpired
from aggregator.link.i18n import LOCALES, negotiate, translations
from aggregator.link.misconfiguration import BankNotLinkable
from aggregator.link.pages import _ADVICE, _GENERIC_ADVICE, error_page, picker_page
from connectors import load_profiles

PROFILES = load_profiles([])
_MSGID = re.compile(r"""_\(\s*(["'])(.+?)\1""")


def _template_msgids() -> set[str]:
    found = set()
    for path in files("aggregator.link").joinpath("templates").iterdir():
        found |= {m.group(2) for m in _MSGID.finditer(path.read_text("utf-8"))}
    return found


def _catalog(locale: str) -> dict[str, str]:
    path = files("aggregator.link").joinpath("locales", locale, "LC_MESSAGES", "messages.po")
    with path.open("rb") as po:
        return {str(m.id): str(m.string) for m in read_po(po) if m.id}


@pytest.mark.parametrize(("header", "expected"), [
    ("de-DE,de;q=0.9,en;q=0.8", "de"),
    ("fr-CA", "fr"),
    ("es-419,es;q=0.9", "es"),
    ("nl-NL,nl;q=0.9,fr;q=0.5", "fr"),
    ("en-GB;q=0.4, de;q=0.7", "de"),
    ("de;q=0, es", "es"),
    ("*", "en"),
    ("", "en"),
    (None, "en"),
    ("ja-JP", "en"),
    ("de;q=abc,fr", "fr"),
])
def test_the_language_comes_from_accept_language(header: str | None, expected: str) -> None:
    assert negotiate(header) == expected


@pytest.mark.parametrize("locale", [lang for lang in LOCALES if lang != "en"])
def test_every_string_of_the_pages_is_translated(locale: str) -> None:
    catalog = _catalog(locale)
    wanted = (_template_msgids() | set(_ADVICE.values()) | {_GENERIC_ADVICE}
              | {BankNotLinkable.title, BankNotLinkable.message})
    missing = sorted(m for m in wanted if not catalog.get(m))
    assert missing == []
    for msgid, text in catalog.items():  # placeholders survive translation
        assert sorted(re.findall(r"%\(\w+\)s", msgid)) == sorted(
            re.findall(r"%\(\w+\)s", text)), msgid


@pytest.mark.parametrize(("locale", "heading", "button"), [
    ("de", "Verbinden Sie Ihre Bank", "Weiter zu Ihrer Bank"),
    ("fr", "Connectez votre banque", "Continuer vers votre banque"),
    ("es", "Conecte su banco", "Continuar a su banco"),
    ("en", "Connect your bank", "Continue to your bank"),
])
def test_the_picker_speaks_the_language(locale: str, heading: str, button: str) -> None:
    page = picker_page(action="/link/t", form_nonce="n", banks=[PROFILES["sandbox-eu"]],
                       app_name="<Budgetly>", update=False, locale=locale)
    html = bytes(page.body).decode()
    assert f'<html lang="{locale}">' in html
    assert f"<h1>{heading}</h1>" in html
    assert f'class="primary">{button}</button>' in html
    assert "&lt;Budgetly&gt;" in html  # values inside translations are still escaped
    assert "<Budgetly>" not in html
    assert page.headers["content-language"] == locale
    assert page.headers["vary"] == "Accept-Language"


def test_an_error_page_translates_title_message_and_advice() -> None:
    page = error_page(LinkExpired("This link expired before a bank was chosen."),
                      request_id="req_1", locale="fr")
    html = bytes(page.body).decode()
    assert "<h1>Ce lien a expiré</h1>" in html
    assert "Ce lien a expiré avant qu'une banque soit choisie." in html.replace("&#39;", "'")
    assert "Les liens sont valables dix minutes." in html
    assert "Référence pour l'assistance" in html.replace("&#39;", "'")


@pytest.mark.parametrize(("locale", "selected"), [
    ("en", "Selected"), ("de", "Ausgewählt"), ("fr", "Sélectionnée"), ("es", "Seleccionado"),
])
def test_the_selected_mark_is_text_of_the_page_in_its_language(
    locale: str, selected: str
) -> None:
    page = picker_page(action="/link/t", form_nonce="n", banks=[PROFILES["sandbox-eu"]],
                       app_name="Budgetly", update=False, locale=locale)
    html = bytes(page.body).decode()
    assert f'<span class="selected" aria-hidden="true">{selected}</span>' in html
    css = files("aggregator.link").joinpath("static", "link.css").read_text("utf-8")
    assert "content:" not in css  # no words drawn by the stylesheet, where no catalogue reaches


def test_a_message_missing_from_the_catalogue_shows_in_english() -> None:
    assert translations("de").gettext("A sentence nobody translated.") == (
        "A sentence nobody translated.")
