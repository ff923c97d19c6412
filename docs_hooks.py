"""MkDocs hooks (`mkdocs.yml` names this file): links from docs/ to the repository's other files.

A page links `../benchmarks/results/x.json`, the path that works where docs/ is read as files
(GitHub, an editor). MkDocs knows only docs/, so its strict build would call every such link
broken. Here each target that exists is copied into the site under `repo/` (a Markdown file
as `.md.txt`, so it is served as text, not built as a page) and the link points there; a
target that does not exist is left as written, so the strict build names it and fails.
"""

from __future__ import annotations

import os
import posixpath
import re
from pathlib import Path

from mkdocs.structure.files import File

_TARGET = re.compile(r"(\]\()([^)\s#]+)((?:#[^)\s]*)?\))")  # ](target#anchor) of a link or an image


def _repo_path(config, src_uri: str, target: str) -> str | None:
    """The repository-relative path a page's link leads to, when it leaves docs/ and exists."""
    if "://" in target or target.startswith(("/", "mailto:")):
        return None
    docs, root = _abs(config.docs_dir), _abs(Path(config.config_file_path).parent)
    path = _abs(docs / posixpath.dirname(src_uri) / target)
    if path.is_relative_to(docs) or not path.is_relative_to(root) or not path.is_file():
        return None
    return path.relative_to(root).as_posix()


def _abs(path) -> Path:
    """An absolute path with `..` folded, links kept (a linked folder stays inside the repository)."""
    return Path(os.path.normpath(os.path.abspath(path)))


def _site_uri(rel: str) -> str:
    return f"repo/{rel}.txt" if rel.endswith(".md") else f"repo/{rel}"


def _links(config, src_uri: str, markdown: str) -> list[str]:
    return [rel for m in _TARGET.finditer(markdown) if (rel := _repo_path(config, src_uri, m.group(2)))]


def on_files(files, config):
    """Add every existing file outside docs/ that a page links to."""
    root = _abs(Path(config.config_file_path).parent)
    wanted = set()
    for page in files.documentation_pages():
        wanted.update(_links(config, page.src_uri, Path(page.abs_src_path).read_text(encoding="utf-8")))
    for rel in sorted(wanted):
        files.append(File.generated(config, _site_uri(rel), abs_src_path=str(root / rel)))
    return files


def on_page_markdown(markdown, page, config, files):
    """Point each link that leaves docs/ at its copy under `repo/`."""

    def local(m: re.Match) -> str:
        rel = _repo_path(config, page.file.src_uri, m.group(2))
        if rel is None:
            return m.group(0)
        return m.group(1) + posixpath.relpath(_site_uri(rel), posixpath.dirname(page.file.src_uri) or ".") + m.group(3)

    return _TARGET.sub(local, markdown)
