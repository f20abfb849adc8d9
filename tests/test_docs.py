"""The repository's text refers only to what the repository holds.

Code, help texts and docs cite the maths and the run layout by file and section title under
docs/ (or a README section); a reader of the repository must be able to follow every citation.
"""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCANNED = (ROOT / "coinfluence", ROOT / "cli", ROOT / "docs", ROOT / "README.md")
TEXT_SUFFIXES = {".py", ".md", ".toml", ".txt"}
CITATION = re.compile(r'(README|docs/[\w-]+\.md)(?:\)?,\s*"([^"]+)")?')


def text_files(paths=SCANNED):
    for path in paths:
        if path.is_file():
            yield path
        else:
            yield from sorted(p for p in path.rglob("*") if p.suffix in TEXT_SUFFIXES and p.is_file())


def lines_matching(pattern: re.Pattern, paths=SCANNED):
    for path in text_files(paths):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for match in pattern.finditer(line):
                yield f"{path.relative_to(ROOT)}:{number}", match


def headings(path: Path) -> set[str]:
    return {line.lstrip("#").strip() for line in path.read_text(encoding="utf-8").splitlines() if line.startswith("#")}


def test_nothing_cites_the_design_notes_outside_the_repository():
    hits = [where for where, _ in lines_matching(re.compile("DESIGN"))]
    assert hits == []


def test_every_cited_doc_and_section_exists():
    cited = list(lines_matching(CITATION, (*SCANNED, ROOT / "tests")))
    assert any(m.group(2) for _, m in cited)  # the check below has citations to check
    broken = []
    for where, match in cited:
        doc = ROOT / ("README.md" if match.group(1) == "README" else match.group(1))
        if not doc.exists() or (match.group(2) and match.group(2) not in headings(doc)):
            broken.append(f"{where}: {match.group(0)}")
    assert broken == []
