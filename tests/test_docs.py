"""The README and the docs/ pages point at things that exist: every relative link (and its
#anchor) resolves, every repository path they name in code spans (tools/, benchmarks/, configs/,
soco/, tests/) matches a file or folder, and every `make` target they show is in the Makefile."""

import glob
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = ["README.md"] + sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))
CHECKED_FOLDERS = ("tools", "benchmarks", "configs", "soco", "tests")

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)
SPAN = re.compile(r"`([^`\n]+)`")
PATH = re.compile(r"(?<![\w/.$-])((?:%s)/[\w./*<>-]*)" % "|".join(CHECKED_FOLDERS))
DETECTRON2_PATHS = {"tools/train_net.py"}  # Detectron2's own script, named beside ours
MAKE = re.compile(r"(?:^|[\s;(&])make ([a-z][\w-]*)", re.M)


def _read(page):
    with open(os.path.join(ROOT, page), encoding="utf-8") as f:
        return f.read()


def _code(text):
    """The text of fenced blocks and inline code spans: where commands and paths are written.
    Blocks that show a file to create (first line ``# file: PATH``, docs/ARCHITECTURE.md's worked
    example) are left out: their paths do not exist yet."""
    blocks = [b for b in FENCE.findall(text) if not re.match(r"```\w*\n# (file|append): ", b)]
    rest = FENCE.sub("", text)
    return blocks + SPAN.findall(rest)


def _anchors(text):
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#+ (.+)$", FENCE.sub("", text), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def broken_links(page):
    text, folder = _read(page), os.path.dirname(os.path.join(ROOT, page))
    broken = []
    for target in LINK.findall(FENCE.sub("", text)):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        full = os.path.normpath(os.path.join(folder, path)) if path else os.path.join(ROOT, page)
        if not os.path.exists(full):
            broken.append(target)
        elif anchor and full.endswith(".md") and anchor not in _anchors(open(full, encoding="utf-8").read()):
            broken.append(target)
    return broken


def missing_paths(page):
    missing = set()
    for code in _code(_read(page)):
        for path in set(PATH.findall(code)) - DETECTRON2_PATHS:
            pattern = re.sub(r"<[^>]*>", "*", path.rstrip(".,;:"))
            if not glob.glob(os.path.join(ROOT, pattern)):
                missing.add(path)
    return sorted(missing)


def makefile_targets():
    return set(re.findall(r"^([\w-]+):", _read("Makefile"), re.M))


def unknown_make_targets(page):
    return sorted({t for code in _code(_read(page)) for t in MAKE.findall(code)} - makefile_targets())


def test_the_pages_exist():
    names = {os.path.basename(p) for p in PAGES}
    expected = {"INSTALL.md", "PIPELINE.md", "CLUSTERS.md", "TROUBLESHOOTING.md", "TRANSFER.md",
                "EMBEDDED_DATA.md", "BENCHMARKS.md", "ARCHITECTURE.md"}
    assert expected <= names
    readme = _read("README.md")
    assert len(readme.splitlines()) <= 200, "README.md is for a five-minute read: move detail to docs/"
    assert not broken_links("README.md")
    assert {f"docs/{n}" for n in expected} <= set(LINK.findall(readme)), "README.md links every page"


@pytest.mark.parametrize("page", PAGES)
def test_links_resolve(page):
    assert not broken_links(page), f"{page}: links to nothing"


@pytest.mark.parametrize("page", PAGES)
def test_named_paths_exist(page):
    assert not missing_paths(page), f"{page}: names paths that do not exist"


@pytest.mark.parametrize("page", PAGES)
def test_make_targets_exist(page):
    assert not unknown_make_targets(page), f"{page}: shows make targets the Makefile lacks"


def test_the_checks_find_what_is_broken(tmp_path, monkeypatch):
    """Each check fails on a page with a dead link, a dead anchor, a missing path and target."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "tools").mkdir()
    (tmp_path / "tools" / "real.py").write_text("")
    (tmp_path / "Makefile").write_text("demo:\n\techo\n")
    (tmp_path / "docs" / "A.md").write_text(
        "# A page\n\n## Step one\n\n[ok](#step-one) [ok](../tools/real.py) [bad](B.md) [bad](#step-two)\n"
        "[web](https://example.org/x)\n\n`tools/real.py` `tools/<name>.py` `tools/gone.py`,\n"
        "`detectron2/tools/train_net.py`\n\n```\nmake demo\nmake nothing\n```\n"
        "```python\n# file: tools/new.py\nmake nothing_either\n```\n"
    )
    monkeypatch.setattr(__import__(__name__), "ROOT", str(tmp_path))
    assert broken_links("docs/A.md") == ["B.md", "#step-two"]
    assert missing_paths("docs/A.md") == ["tools/gone.py"]
    assert unknown_make_targets("docs/A.md") == ["nothing"]
