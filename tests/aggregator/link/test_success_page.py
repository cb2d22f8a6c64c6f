"""A page reporting success is drawn and announced as one, not as an error."""

from __future__ import annotations

from aggregator.link.pages import success_page


def test_a_success_page_is_a_status_not_an_alert() -> None:
    page = success_page("Your bank is connected", "Connection <b>con_x</b> is active.",
                        advice="Back to the app.")
    html = bytes(page.body).decode()
    assert page.status_code == 200
    assert '<div class="success" role="status">' in html
    assert 'role="alert"' not in html
    assert 'class="problem"' not in html
    assert "&lt;b&gt;con_x&lt;/b&gt;" in html  # escaped like every other value
