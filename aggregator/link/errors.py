"""Why a Link step was refused; each error knows the page (or problem) status it gets.

::

    LinkError                 (GatewayError)
    ├── LinkNotFound          the token or state names no link session: unknown or forged
    ├── LinkExpired           the session outlived its ten minutes before completing
    ├── LinkUsed              the token was already spent, or the callback replayed
    ├── LinkFormInvalid       the page's form came back without its nonce or a valid bank
    ├── LinkOtherBrowser      a step came from a browser other than the one that opened it
    ├── LinkHostRefused       the request's Host is not where this gateway serves Link
    └── LinkRequestInvalid    an app asked for a session with a bad field (422 problem)

Messages are shown to the person on the page: plain words, never a token or an id.
"""

from __future__ import annotations

from aggregator.errors import GatewayError


class LinkError(GatewayError):
    """Root of the Link flow's refusals; ``status`` is the HTTP status of its page."""

    code = "link_error"
    status = 400
    title = "This link cannot be used"


class LinkNotFound(LinkError):
    """Raised for a token or ``state`` that matches no session (typo, forgery, erasure)."""

    code = "not_found"
    status = 404
    title = "Link not found"


class LinkExpired(LinkError):
    """Raised when a session is opened or completed after its expiry."""

    code = "link_expired"
    status = 410
    title = "This link has expired"


class LinkUsed(LinkError):
    """Raised when a spent token is opened again or a callback arrives a second time."""

    code = "conflict"
    status = 409
    title = "This link was already used"


class LinkFormInvalid(LinkError):
    """Raised when the bank-choice form lacks its nonce or names a bank not offered."""

    code = "link_form_invalid"
    status = 400
    title = "Something went wrong with the form"


class LinkOtherBrowser(LinkError):
    """Raised when the bank pick or the callback lacks the browser's binding cookie.

    See :mod:`aggregator.link.browser`: a captured link or callback URL replayed from
    another browser lands here, and nothing is claimed.
    """

    code = "link_other_browser"
    status = 403
    title = "This link belongs to another browser"


class LinkHostRefused(LinkError):
    """Raised when, without ``[http] public_url``, the ``Host`` is not a loopback name.

    Link and callback URLs are then built from ``Host``: a chosen host would become the
    ``redirect_uri`` sent to the bank (where the code goes) and the link URL given to apps.
    """

    code = "misdirected_request"
    status = 421
    title = "This address does not serve bank linking"


class LinkRequestInvalid(LinkError):
    """Raised when an app's session request has a bad field; ``pointer`` names it."""

    code = "validation_failed"
    status = 422
    title = "Invalid link session request"

    def __init__(self, pointer: str, detail: str) -> None:
        super().__init__(detail)
        self.pointer = pointer
        self.detail = detail
