"""`connectors.__all__` is the package's whole public surface, sorted and importable."""

from __future__ import annotations

import connectors


def test_all_is_sorted_and_unique() -> None:
    # ruff's RUF022 order: CONSTANTS, then Classes, then functions, each alphabetical.
    def kind(name: str) -> int:
        return 0 if name.isupper() else 1 if name[0].isupper() else 2

    names = list(connectors.__all__)
    assert names == sorted(names, key=lambda name: (kind(name), name))
    assert len(names) == len(set(names))


def test_every_exported_name_exists() -> None:
    for name in connectors.__all__:
        assert hasattr(connectors, name), name


def test_exported_classes_and_functions_name_their_public_home() -> None:
    # A member's module is private: callers import from `connectors`, never from it.
    for name in connectors.__all__:
        member = getattr(connectors, name)
        module = getattr(member, "__module__", None)
        if module is not None and callable(member):
            assert module.startswith("connectors."), (name, module)


def test_no_unlisted_public_names() -> None:
    submodules = {
        "consents", "dialects", "egress", "errors", "hooks", "logging", "models", "oauth", "plaid",
        "profiles",
    }
    public = {
        name
        for name in vars(connectors)
        if not name.startswith("_") and name not in submodules and name != "annotations"
    }
    assert public == set(connectors.__all__)
