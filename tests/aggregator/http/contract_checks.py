"""Schemathesis checks of our own, loaded by the contract test through ``SCHEMATHESIS_HOOKS``.

``problem_details``: every 4xx/5xx answer of the API is an RFC 9457 problem document
(§3: ``type``, ``title``, ``status``; ours also carries ``request_id``, §3.2, equal to the
``X-Request-Id`` header). The hosted Link pages are the documented exception: a person
reads them, so their errors are HTML pages, which must still quote the request id.
"""

from __future__ import annotations

from typing import Any

import schemathesis

PROBLEM = "application/problem+json"


def _documented_media(case: Any, status: int) -> set[str]:
    responses = case.operation.definition.raw.get("responses", {})
    entry = responses.get(str(status)) or responses.get(f"{str(status)[0]}XX") or {}
    return set(entry.get("content", {}))


@schemathesis.check
def problem_details(ctx: Any, response: Any, case: Any) -> bool | None:
    """4xx/5xx: a problem document (or, for a person-facing page, HTML) with a request id."""
    status = response.status_code
    if status < 400:
        return None
    request_id = response.headers.get("x-request-id", [""])
    request_id = request_id[0] if isinstance(request_id, list) else request_id
    assert request_id, f"HTTP {status} without an X-Request-Id header"
    media = (response.headers.get("content-type", [""]) or [""])[0].split(";")[0].strip()
    if media == "text/html" and _documented_media(case, status) == {"text/html"}:
        assert request_id in response.text, "the error page does not quote the request id"
        return None
    assert media == PROBLEM, f"HTTP {status} answered as {media!r}, not {PROBLEM}"
    body = response.json()
    assert isinstance(body, dict), "a problem document is a JSON object (RFC 9457 §3)"
    for member, kind in (("type", str), ("title", str), ("status", int)):
        assert isinstance(body.get(member), kind), f"problem member {member!r} is missing"
    assert body["status"] == status, f"problem status {body['status']} != HTTP {status}"
    assert body.get("request_id") == request_id, "problem request_id != X-Request-Id"
    return None
