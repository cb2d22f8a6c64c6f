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
