"""A small bar chart drawn on the server as SVG: no script, no library, no CDN.

One stacked bar per day (oldest left) of a bank's outcomes from the audit trail: syncs
that succeeded, connections that needed re-consent, new links. The SVG carries a
``<title>`` and ``role="img"`` with a text summary, and each bar segment a ``<title>``
with its day and count, so the numbers reach a screen reader too (WCAG 2.2, 1.1.1).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from markupsafe import Markup, escape

#: action -> (legend label, fill colour); colours contrast 3:1 with white (WCAG 1.4.11).
SERIES = (
    ("connection.synced", "synced", "#1a7f37"),
    ("connection.reauth_required", "re-consent needed", "#b42318"),
    ("connection.linked", "linked", "#1f5fbf"),
)
WIDTH, HEIGHT, PAD = 420, 120, 20


def outcomes_chart(days: dict[str, dict[str, int]], now: datetime, *, title: str,
                   span: int = 14) -> Markup:
    """An SVG for ``days`` (ISO date -> action -> count) over the last ``span`` days."""
    dates = [(now - timedelta(days=span - 1 - i)).date().isoformat() for i in range(span)]
    totals = [sum(days.get(d, {}).get(a, 0) for a, _, _ in SERIES) for d in dates]
    peak = max([*totals, 1])
    bar = (WIDTH - 2 * PAD) / span
    parts = []
    for i, day in enumerate(dates):
        y = float(HEIGHT - PAD)
        for action, label, colour in SERIES:
            n = days.get(day, {}).get(action, 0)
            if not n:
                continue
            h = (HEIGHT - 2 * PAD) * n / peak
            y -= h
            parts.append(
                f'<rect x="{PAD + i * bar + 1:.1f}" y="{y:.1f}" width="{bar - 2:.1f}" '
                f'height="{h:.1f}" fill="{colour}"><title>{escape(day)}: {n} '
                f"{escape(label)}</title></rect>"
            )
    summary = (f"{title}: {sum(totals)} outcomes in {span} days, at most {peak} a day")
    axis = (f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}" '
            'stroke="#555"/>'
            f'<text x="{PAD}" y="{HEIGHT - 4}" font-size="10" fill="#333">{escape(dates[0])}'
            f'</text><text x="{WIDTH - PAD}" y="{HEIGHT - 4}" font-size="10" fill="#333" '
            f'text-anchor="end">{escape(dates[-1])}</text>'
            f'<text x="{PAD}" y="12" font-size="10" fill="#333">max {peak}/day</text>')
    # Every text value above went through escape(); the rest are numbers we formatted.
    return Markup(  # noqa: S704
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{escape(summary)}">'
        f"<title>{escape(summary)}</title>{axis}{''.join(parts)}</svg>"
    )


#: Refresh outcome classes per hour -> (legend label, fill colour), contrast 3:1 with white.
REFRESH_SERIES = (
    ("ok", "refreshed", "#1a7f37"),
    ("failed", "bank failed", "#b54708"),
    ("refused", "grant refused", "#b42318"),
    ("other", "other", "#5c6370"),
)


def _hours(now: datetime, span: int) -> list[str]:
    top = now.replace(minute=0, second=0, microsecond=0)
    return [(top - timedelta(hours=span - 1 - i)).strftime("%Y-%m-%dT%H") for i in range(span)]


def _frame(title: str, summary: str, first: str, last: str, peak: str, parts: list[str]
           ) -> Markup:
    axis = (f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}" '
            'stroke="#555"/>'
            f'<text x="{PAD}" y="{HEIGHT - 4}" font-size="10" fill="#333">{escape(first)}'
            f'</text><text x="{WIDTH - PAD}" y="{HEIGHT - 4}" font-size="10" fill="#333" '
            f'text-anchor="end">{escape(last)}</text>'
            f'<text x="{PAD}" y="12" font-size="10" fill="#333">{escape(peak)}</text>')
    # Every text value above went through escape(); the rest are numbers we formatted.
    return Markup(  # noqa: S704
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{escape(summary)}">'
        f"<title>{escape(summary)}</title>{axis}{''.join(parts)}</svg>"
    )


def _bar(i: int, bar: float, y: float, h: float, colour: str, text: str) -> str:
    return (f'<rect x="{PAD + i * bar + 1:.1f}" y="{y:.1f}" width="{bar - 2:.1f}" '
            f'height="{h:.1f}" fill="{colour}"><title>{escape(text)}</title></rect>')


def refresh_chart(hours: dict[str, dict[str, int]], now: datetime, *, title: str,
                  span: int = 24) -> Markup:
    """Stacked bars of refresh outcomes per hour (``hour -> class -> count``, the classes
    of :data:`REFRESH_SERIES`) over the last ``span`` hours, oldest left."""
    labels = _hours(now, span)
    totals = [sum(hours.get(h, {}).values()) for h in labels]
    peak = max([*totals, 1])
    bar = (WIDTH - 2 * PAD) / span
    parts = []
    for i, hour in enumerate(labels):
        y = float(HEIGHT - PAD)
        for key, label, colour in REFRESH_SERIES:
            n = hours.get(hour, {}).get(key, 0)
            if n:
                h = (HEIGHT - 2 * PAD) * n / peak
                y -= h
                parts.append(_bar(i, bar, y, h, colour, f"{hour}:00 UTC: {n} {label}"))
    summary = f"{title}: {sum(totals)} refresh calls in {span} hours, at most {peak} an hour"
    return _frame(title, summary, f"{labels[0]}:00", f"{labels[-1]}:00",
                  f"max {peak}/hour", parts)


def latency_chart(hours: dict[str, float | None], now: datetime, *, title: str,
                  span: int = 24) -> Markup:
    """One bar per hour: the p95 latency in seconds (``inf``: above the last bucket,
    drawn at the top), over the last ``span`` hours."""
    labels = _hours(now, span)
    finite = [v for v in hours.values() if v is not None and v != float("inf")]
    top = max([*finite, 0.1])
    bar = (WIDTH - 2 * PAD) / span
    parts = []
    for i, hour in enumerate(labels):
        value = hours.get(hour)
        if value is None:
            continue
        shown = min(value, top)
        h = max((HEIGHT - 2 * PAD) * shown / top, 1.0)
        text = (f"{hour}:00 UTC: p95 above {top:g} s" if value == float("inf")
                else f"{hour}:00 UTC: p95 at most {value:g} s")
        parts.append(_bar(i, bar, HEIGHT - PAD - h, h, "#1f5fbf", text))
    summary = (f"{title}: p95 sync duration per hour over {span} hours, "
               f"{len(parts)} hours with syncs, highest {top:g} s")
    return _frame(title, summary, f"{labels[0]}:00", f"{labels[-1]}:00", f"max {top:g} s",
                  parts)
