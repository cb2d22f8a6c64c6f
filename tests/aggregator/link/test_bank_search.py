"""The Link page's bank search: offered from seven banks on, a GET form without script."""

from __future__ import annotations

from dataclasses import replace

from aggregator.link.pages import SEARCH_FROM, picker_page
from aggregator.link.walk import forms_of
from connectors import BankProfile, load_profiles

BASE = load_profiles([])["sandbox-eu"]
NAMES = ["Sparkasse Köln", "Deutsche Bank", "Commerzbank", "ING Deutschland", "N26",
         "Volksbank Berlin", "Sparkasse Hannover", "DKB"]


def banks(n: int) -> list[BankProfile]:
    return [replace(BASE, id=f"bank-{i}", display_name=name)
            for i, name in enumerate(NAMES[:n])]


def html_of(offered: list[BankProfile], query: str = "") -> str:
    page = picker_page(action="/link/t", form_nonce="n", banks=offered, app_name="Budgetly",
                       update=False, query=query)
    return bytes(page.body).decode()


def test_a_handful_of_banks_gets_no_search_and_ignores_a_query() -> None:
    html = html_of(banks(SEARCH_FROM - 1), query="sparkasse")
    assert 'role="search"' not in html
    assert len(forms_of(html)[0].radios["bank_id"]) == SEARCH_FROM - 1


def test_many_banks_get_a_search_that_narrows_the_list() -> None:
    html = html_of(banks(8))
    search, picker = forms_of(html)
    assert (search.method, search.action) == ("get", "/link/t")
    assert '<label for="bank-search">Search for your bank</label>' in html
    assert len(picker.radios["bank_id"]) == 8
    narrowed = html_of(banks(8), query="  sparkasse ")
    radios = forms_of(narrowed)[1].radios["bank_id"]
    assert radios == ["bank-0", "bank-6"]
    assert "2 of 8 banks match “sparkasse”" in narrowed
    assert 'value="sparkasse"' in narrowed
    both_words = forms_of(html_of(banks(8), query="Sparkasse köln"))[1].radios["bank_id"]
    assert both_words == ["bank-0"]


def test_a_search_without_match_says_so_and_escapes_the_query() -> None:
    html = html_of(banks(8), query="<script>x</script>")
    assert "<script>" not in html
    assert "&lt;script&gt;" in html
    assert "No bank matches your search." in html
    assert "0 of 8 banks match" in html
