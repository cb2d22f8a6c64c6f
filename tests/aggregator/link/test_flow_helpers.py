"""Small pieces of the Link flow: the app redirect and the browserless form walker."""

from __future__ import annotations

import pytest

from aggregator.link.outcome import app_redirect
from aggregator.link.walk import forms_of


@pytest.mark.parametrize(
    ("redirect_uri", "expected"),
    [
        ("https://app.example/cb", "https://app.example/cb?connection_id=con_1&outcome=success"),
        ("https://app.example/cb?tab=banks",
         "https://app.example/cb?tab=banks&connection_id=con_1&outcome=success"),
        # An allow-listed URI cannot smuggle in a second outcome or connection id.
        ("https://app.example/cb?outcome=x&connection_id=y",
         "https://app.example/cb?connection_id=con_1&outcome=success"),
    ],
)
def test_the_app_redirect_adds_exactly_the_connection_id_and_outcome(
    redirect_uri: str, expected: str
) -> None:
    assert app_redirect(redirect_uri, "con_1", "success") == expected


def test_a_denied_link_without_a_connection_carries_the_outcome_only() -> None:
    assert app_redirect("https://app.example/cb", None, "denied") == (
        "https://app.example/cb?outcome=denied"
    )


def test_the_walker_reads_forms_as_a_browser_submits_them() -> None:
    html = """
    <form method="post" action="/consent">
      <input type="hidden" name="interaction" value="i-1">
      <input type="text" name="username">
      <input type="radio" name="pick" value="a"><input type="radio" name="pick" value="b" checked>
      <button type="submit" name="decision" value="approve">Allow</button>
      <button type="submit" name="decision" value="deny">Deny</button>
    </form>"""
    [form] = forms_of(html)
    assert form.action == "/consent"
    assert form.method == "post"
    assert form.fields == {"interaction": "i-1", "username": "", "pick": "b"}
    assert form.buttons == [("decision", "approve"), ("decision", "deny")]
