"""The Link page's HTML: accessible structure, escaped values, protective headers."""

from __future__ import annotations

from aggregator.link.errors import LinkExpired
from aggregator.link.pages import error_page, picker_page
from aggregator.link.walk import forms_of
from connectors import load_profiles

PROFILES = load_profiles([])


def test_the_picker_is_one_labelled_form_with_a_radio_per_bank() -> None:
    banks = [PROFILES["sandbox-eu"], PROFILES["sandbox-us"]]
    page = picker_page(action="/link/lnk_x", form_nonce="n0nce", banks=banks,
                       app_name="Budgetly", update=False, request_id="req_abc")
    html = bytes(page.body).decode()
    assert '<html lang="en">' in html
    assert "<h1>Connect your bank</h1>" in html
    assert "<fieldset>" in html
    assert "<legend>Choose your bank</legend>" in html
    for bank in banks:
        assert f'<label for="bank-{bank.id}">' in html
    [form] = forms_of(html)
    assert form.method == "post"
    assert form.action == "/link/lnk_x"
    assert form.fields == {"form_nonce": "n0nce"}  # nothing preselected among several
    assert form.radios == {"bank_id": ["sandbox-eu", "sandbox-us"]}
    assert "req_abc" in html


def test_a_single_offered_bank_is_preselected_and_update_mode_says_reconnect() -> None:
    page = picker_page(action="/link/t", form_nonce="n", banks=[PROFILES["sandbox-eu"]],
                       app_name="Budgetly", update=True)
    html = bytes(page.body).decode()
    assert "<h1>Reconnect your bank</h1>" in html
    assert forms_of(html)[0].fields["bank_id"] == "sandbox-eu"


def test_values_are_escaped_and_the_page_cannot_be_framed_or_cached() -> None:
    page = picker_page(action="/link/t", form_nonce='"><script>', banks=[PROFILES["sandbox-eu"]],
                       app_name="<img src=x onerror=alert(1)>", update=False)
    html = bytes(page.body).decode()
    assert "<script>" not in html
    assert "<img src=x" not in html
    assert page.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert "script-src" not in page.headers["content-security-policy"]  # default-src none
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["referrer-policy"] == "no-referrer"


def test_error_pages_say_what_happened_and_quote_the_request_id() -> None:
    page = error_page(LinkExpired("This link expired before a bank was chosen."),
                      request_id="req_zzz")
    html = bytes(page.body).decode()
    assert page.status_code == 410
    assert "<h1>This link has expired</h1>" in html
    assert 'role="alert"' in html
    assert "req_zzz" in html
