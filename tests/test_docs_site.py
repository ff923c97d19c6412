"""The docs site (mkdocs.yml, docs_hooks.py): the manual builds in strict mode, and a broken
link, anchor or nav entry fails the build with the link named, as `make docs` (a step of
`make test`, so of CI) runs it. Each build is the real `mkdocs build --strict` in a subprocess,
on a copy of docs/ beside the rest of the repository.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import ROOT

#: top-level entries the copy links to rather than copies (docs/ and mkdocs.yml are copied)
_LINKED = ("benchmarks", "search_spaces", "searchvlm", "docs_hooks.py", "README.md", "CONTRIBUTING.md")


def _build(root: Path, site: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                          cwd=root, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    """docs/ and mkdocs.yml copied, everything a page links to outside docs/ linked."""
    root = tmp_path / "repo"
    root.mkdir()
    subprocess.run(["cp", "-r", str(ROOT / "docs"), str(ROOT / "mkdocs.yml"), str(root)], check=True)
    for name in _LINKED:
        if (ROOT / name).exists():
            (root / name).symlink_to(ROOT / name)
    return root


def test_the_real_docs_build_in_strict_mode(tmp_path: Path) -> None:
    done = _build(ROOT, tmp_path / "site")
    assert done.returncode == 0, done.stderr
    site = tmp_path / "site"
    assert (site / "index.html").exists() and (site / "guide.html").exists() and (site / "space.html").exists()
    # a link from docs/ to a file outside it is served from the site's repo/ copy
    decisions = (site / "decisions.html").read_text()
    assert 'src="repo/benchmarks/results/decide_default.png"' in decisions
    assert (site / "repo" / "benchmarks" / "results" / "decide_default.png").exists()
    assert "fonts.googleapis.com" not in (site / "index.html").read_text()  # nothing remote to fetch


@pytest.mark.parametrize(
    ("link", "named"),
    [
        ("[a page](no-such-page.md)", "no-such-page.md"),
        ("[a file](../benchmarks/results/no-such-file.json)", "../benchmarks/results/no-such-file.json"),
        ("[an anchor](definitions.md#no-such-section)", "#no-such-section"),
    ],
)
def test_a_broken_link_fails_the_build_and_is_named(repo_copy: Path, link: str, named: str) -> None:
    page = repo_copy / "docs" / "guide.md"
    page.write_text(page.read_text() + f"\nSee {link}.\n")
    done = _build(repo_copy, repo_copy / "site")
    warnings = [line for line in done.stderr.splitlines() if line.startswith("WARNING")]
    assert done.returncode != 0 and len(warnings) == 1, done.stderr
    assert f"Doc file 'guide.md' contains a link '{link.split('(')[1].rstrip(')')}'" in warnings[0]
    assert named in warnings[0]


def test_a_nav_entry_without_its_page_fails(repo_copy: Path) -> None:
    (repo_copy / "docs" / "archive.md").unlink()
    done = _build(repo_copy, repo_copy / "site")
    assert done.returncode != 0 and "archive.md" in done.stderr, done.stderr
