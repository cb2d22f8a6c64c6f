"""The Link page's per-application branding and escaping (rendered, no server)."""

from __future__ import annotations

import base64
import dataclasses
import struct
import zlib

import pytest
from starlette.responses import HTMLResponse

from aggregator.branding import (
    MAX_LOGO_BYTES,
    Brand,
    BrandInvalid,
    check_accent,
    check_logo,
    contrast,
    data_url,
)
from aggregator.link.pages import SEARCH_FROM, picker_page
from connectors import load_profiles

PROFILES = load_profiles([])


def png(width: int = 4, height: int = 4) -> bytes:
    """A solid-colour PNG (PNG spec §5: signature, IHDR, IDAT, IEND)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    rows = b"".join(b"\x00" + b"\x7a\x1f\xa2" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height,
                                                              8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def html_of(response: HTMLResponse) -> str:
    return bytes(response.body).decode()


def many_banks(n: int) -> list:  # type: ignore[type-arg]
    base = PROFILES["sandbox-eu"]
    names = ["Alpha Bank", "Beta Sparkasse", "Gamma Credit", "Delta Mutual", "Epsilon Bank",
             "Zeta Savings", "Eta Volksbank", "Theta Trust"]
    return [dataclasses.replace(base, id=f"bank-{i}", display_name=names[i]) for i in range(n)]


def test_hostile_app_bank_and_query_values_render_inert() -> None:
    hostile = '"><script>alert(1)</script><img src=x onerror=alert(2)>'
    banks = [dataclasses.replace(b, display_name=hostile, country=hostile)
             for b in many_banks(SEARCH_FROM)]
    html = html_of(picker_page(
        action="/link/t", form_nonce="n", banks=banks, app_name=hostile, update=False,
        brand=Brand(hostile), query=hostile, locale="de"))
    assert "<script>" not in html
    assert "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_branding_shows_the_name_logo_and_accent_allowed_by_the_csp() -> None:
    logo = data_url(png())
    brand = Brand("Budgetly Pro", check_logo(logo), check_accent("#7A1FA2"))
    page = picker_page(action="/link/t", form_nonce="n", banks=[PROFILES["sandbox-eu"]],
                       app_name="Budgetly", update=False, brand=brand)
    html = html_of(page)
    assert "Budgetly Pro · Secure bank connection" in html
    assert f'<img src="{logo}"' in html
    assert "--accent: #7a1fa2" in html
    policy = page.headers["content-security-policy"]
    assert "img-src 'self' data:" in policy
    assert "'sha256-" in policy
    assert "script-src" not in policy
    assert "unsafe-inline" not in policy
    assert "Cancel and return to Budgetly Pro" in html


@pytest.mark.parametrize("colour", ["#ffff00", "#8ab4f8", "#777777", "#0b57d0 ", "red"])
def test_an_accent_below_wcag_aa_contrast_or_not_a_colour_is_refused(colour: str) -> None:
    with pytest.raises(BrandInvalid) as refused:
        check_accent(colour)
    assert refused.value.field == "brand-accent"


def test_accepted_accents_reach_aa_against_white_text_and_page() -> None:
    for colour in ("#0b57d0", "#7a1fa2", "#1b1f24"):
        assert contrast(check_accent(colour), "#ffffff") >= 4.5
    assert round(contrast("#000000", "#ffffff"), 1) == 21.0


def test_logos_are_small_raster_data_urls_only() -> None:
    assert check_logo(data_url(png())).startswith("data:image/png;base64,")
    svg = "data:image/svg+xml;base64," + base64.b64encode(b"<svg onload=alert(1)/>").decode()
    for bad in ("https://cdn.example/logo.png", svg,
                "data:image/png;base64," + base64.b64encode(b"GIF89a....").decode(),
                data_url(png() + b"\0" * MAX_LOGO_BYTES)):
        with pytest.raises(BrandInvalid):
            check_logo(bad)
