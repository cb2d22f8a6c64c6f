"""The one way the gateway renders HTML: Jinja2 with autoescaping on for every template.

The Link pages, the operator console and the API reference pages all load their
templates through :func:`environment`, so one escaping rule serves them all: a value is
HTML-escaped unless a template marks it safe, and none does (the console's SVG chart is
built from escaped parts, :mod:`aggregator.console.chart`). An undefined variable is an
error, not an empty string, so a misspelt name fails the tests instead of rendering
blank. The console, ``/docs`` and ``/problems`` pages extend one layout,
``aggregator/templates/layout.html``, found after the package's own templates.
"""

from __future__ import annotations

from collections.abc import Sequence

from jinja2 import ChoiceLoader, Environment, PackageLoader, StrictUndefined


def environment(package: str, *, extensions: Sequence[str] = ()) -> Environment:
    """Templates of ``package`` (its ``templates/`` directory), autoescaped."""
    return Environment(
        loader=ChoiceLoader([PackageLoader(package, "templates"),
                             PackageLoader("aggregator", "templates")]),
        autoescape=True,
        undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
        keep_trailing_newline=True, extensions=list(extensions),
    )
