"""Code and tests cite the repository's own documents (issue 17): no reference to a design
or findings page that a reader of this repository does not have, and every cited
``docs/*.md`` exists with the section named."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Documents that live outside the repository, as code used to cite them.
#: Spelled in pieces so that this file is not itself a hit for a plain grep.
_NAMES = "|".join(("DES" + "IGN", "FIND" + "INGS"))
OUTSIDE = re.compile(rf"\b({_NAMES})(\.md)?\b|\.\./shared|/work/shared")
CITATION = re.compile(r'docs/([a-z_]+\.md)(?:,\s*\n?\s*(?:#:?\s*)?"([^"]+)")?')


def _tracked_sources() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "*.py", "*.toml", "*.cfg", "*.ini", "*.sh"],
                            cwd=ROOT, capture_output=True, text=True, check=True).stdout
    paths = [ROOT / line for line in listed.splitlines() if line]
    untracked = subprocess.run(["git", "ls-files", "--others", "--exclude-standard", "*.py"],
                               cwd=ROOT, capture_output=True, text=True, check=True).stdout
    paths += [ROOT / line for line in untracked.splitlines() if line]
    return [p for p in paths if p.is_file() and p != Path(__file__).resolve()]


def test_no_source_cites_a_document_outside_the_repository() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in _tracked_sources()
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert offenders == []


def test_every_cited_doc_and_section_exists() -> None:
    missing = []
    for path in _tracked_sources():
        for match in CITATION.finditer(path.read_text(errors="replace")):
            doc = ROOT / "docs" / match.group(1)
            if not doc.is_file():
                missing.append(f"{path.relative_to(ROOT)}: docs/{match.group(1)}")
                continue
            section = match.group(2)
            headings = [h.lstrip("#").strip() for h in doc.read_text().splitlines()
                        if h.startswith("#")]
            if section and section not in headings:
                missing.append(f"{path.relative_to(ROOT)}: docs/{match.group(1)} {section!r}")
    assert missing == []


def test_the_licence_the_package_declares_is_in_the_repository() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'license = { text = "Apache-2.0" }' in pyproject
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text
    assert "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    assert "Apache License, Version 2.0" in (ROOT / "NOTICE").read_text()
