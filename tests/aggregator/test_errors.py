"""The error tree drawn in :mod:`aggregator.errors`' docstring is the one the code defines."""

from __future__ import annotations

import inspect
import re

from aggregator import errors
from aggregator.worker import rotation

_NODE = re.compile(r"^(?P<indent>[ │├└─]*)(?P<name>[A-Z]\w+)")


def _drawn_tree() -> dict[str, str | None]:
    """Each class the docstring draws, with the parent it is drawn under."""
    doc = errors.__doc__ or ""
    block = doc.split("::\n\n", 1)[1].split("\n\n", 1)[0]
    parents: list[str] = []
    tree: dict[str, str | None] = {}
    for line in block.splitlines():
        found = _NODE.match(line.strip("\n")[4:])  # the block is indented by 4
        assert found is not None, line
        depth = len(found["indent"]) // 4
        parents[depth:] = [found["name"]]
        tree[found["name"]] = parents[depth - 1] if depth else None
    return tree


def test_every_gateway_error_here_is_drawn_under_its_parent() -> None:
    defined = {
        name: cls for name, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, errors.GatewayError) and cls.__module__ == errors.__name__
    }
    drawn = _drawn_tree()
    assert set(drawn) == set(defined)
    for name, parent in drawn.items():
        if parent is not None:
            assert defined[name].__bases__ == (defined[parent],), name


def test_lease_held_is_in_the_tree_and_still_importable_from_rotation() -> None:
    assert rotation.LeaseHeld is errors.LeaseHeld
    assert _drawn_tree()["LeaseHeld"] == "GatewayError"
    held = errors.LeaseHeld("eu", "worker-1", None)
    assert held.code == "rotation_in_progress"
    assert "worker-1" in str(held)
