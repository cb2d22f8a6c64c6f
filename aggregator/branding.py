"""Per-application branding on the Link page: display name, logo, accent colour.

The logo is a ``data:`` URL of a small raster image (PNG, JPEG or WebP, at most
:data:`MAX_LOGO_BYTES`), checked by its magic bytes and stored on the application row.
Neither the browser nor the gateway ever fetches a URL the app names: no third-party
request leaks the user's visit, the page's CSP widens only to ``img-src data:``, and
there is no server-side fetch to abuse (SSRF). SVG is refused: it is a document that can
carry script and external references.

The accent colours the primary button and the "Selected" mark on a chosen bank (text on
the white page), so it must reach WCAG 2.2 AA text contrast (SC 1.4.3, 4.5:1) both with
the button's white text and against the white page: an app cannot make the page
unreadable.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

MAX_LOGO_BYTES = 16 * 1024
MAX_NAME = 80
#: Text contrast the button's label needs (WCAG 2.2 SC 1.4.3, AA normal text).
TEXT_CONTRAST = 4.5
PAGE_BACKGROUND = "#ffffff"
BUTTON_TEXT = "#ffffff"

_HEX = re.compile(r"^#[0-9a-fA-F]{6}$")
_MAGIC = {
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/webp": (b"RIFF",),
}
_DATA_URL = re.compile(r"^data:(image/(?:png|jpeg|webp));base64,([A-Za-z0-9+/=]+)$")


class BrandInvalid(ValueError):
    """A brand value refused; ``field`` names the option at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True, slots=True)
class Brand:
    """What the Link page shows of an application."""

    name: str
    logo: str | None = None
    accent: str | None = None

    def css(self) -> str | None:
        """The inline style block the accent needs (its hash goes into the CSP)."""
        if not self.accent or not _HEX.match(self.accent):  # checked on write; again here
            return None
        return f":root {{ --accent: {self.accent}; --accent-ink: {BUTTON_TEXT}; }}"


def _linear(channel: int) -> float:
    c = channel / 255
    return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4


def luminance(colour: str) -> float:
    """Relative luminance (WCAG 2.2, "relative luminance" definition) of ``#rrggbb``."""
    r, g, b = (int(colour[i:i + 2], 16) for i in (1, 3, 5))
    return 0.2126 * _linear(r) + 0.7152 * _linear(g) + 0.0722 * _linear(b)


def contrast(a: str, b: str) -> float:
    """The WCAG contrast ratio of two colours, from 1 to 21."""
    la, lb = sorted((luminance(a), luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def check_accent(value: str) -> str:
    if not _HEX.match(value):
        raise BrandInvalid("brand-accent", "give a colour as #rrggbb, e.g. #0b57d0")
    colour = value.lower()
    for against, what in ((BUTTON_TEXT, "the button's white text"),
                          (PAGE_BACKGROUND, "the white page")):
        ratio = contrast(colour, against)
        if ratio < TEXT_CONTRAST:
            raise BrandInvalid("brand-accent", (
                f"{colour} has contrast {ratio:.2f}:1 with {what}; WCAG AA needs "
                f"{TEXT_CONTRAST}:1 (choose a darker colour)"))
    return colour


def check_logo(value: str) -> str:
    found = _DATA_URL.match(value.strip())
    if not found:
        raise BrandInvalid("brand-logo", "give a data:image/png|jpeg|webp;base64,… URL "
                                         "(SVG and remote URLs are refused)")
    kind, encoded = found.groups()
    try:
        raw = base64.b64decode(encoded, validate=True)
    except binascii.Error:
        raise BrandInvalid("brand-logo", "the base64 payload is invalid") from None
    if len(raw) > MAX_LOGO_BYTES:
        raise BrandInvalid("brand-logo", f"{len(raw)} bytes; at most {MAX_LOGO_BYTES}")
    if not raw.startswith(_MAGIC[kind]) or (kind == "image/webp" and raw[8:12] != b"WEBP"):
        raise BrandInvalid("brand-logo", f"the data is not a {kind} image")
    return f"data:{kind};base64,{base64.b64encode(raw).decode()}"


def data_url(raw: bytes) -> str:
    """``raw`` as a ``data:`` URL, its type told by its magic bytes (checked after)."""
    kind = next((k for k, magics in _MAGIC.items() if raw.startswith(magics)), "image/png")
    return f"data:{kind};base64,{base64.b64encode(raw).decode()}"


def check_name(value: str) -> str:
    name = " ".join(value.split())
    if not name or len(name) > MAX_NAME or any(ord(c) < 32 for c in name):
        raise BrandInvalid("brand-name", f"1 to {MAX_NAME} printable characters")
    return name
