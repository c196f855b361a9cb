"""Rendering and writing: self-contained HTML (inline CSS, figures as base64 PNG), Markdown, or PDF
(headless Chromium, only when installed), from the templates in ``simulation/reports/templates``."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from .build import build_dpia
from .document import DPIAError
from .org import load_org

__all__ = ["TEMPLATES", "render_dpia", "find_chromium", "write_dpia"]

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


def _environment(autoescape: bool):
    try:
        import jinja2
    except ImportError:  # pragma: no cover
        raise DPIAError("the DPIA needs jinja2: pip install 'secagg[report]'") from None
    from markupsafe import Markup, escape

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=autoescape,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
                             undefined=jinja2.StrictUndefined)
    import re

    pattern = re.compile(r"\[TO BE COMPLETED: [^\]]*\]")

    def todo_html(text):
        escaped = str(escape(text))
        return Markup(pattern.sub(lambda m: f'<mark class="todo">{m.group(0)}</mark>', escaped))

    def md_cell(text):
        return str(text).replace("|", "\\|").replace("\n", " ")

    env.filters["todo"] = todo_html
    env.filters["md_cell"] = md_cell
    return env


def render_dpia(doc: dict, fmt: str = "html", *, out_path: Path | None = None) -> str:
    """Render ``doc`` (from :func:`build_dpia`) to HTML or Markdown text."""
    if fmt == "html":
        return _environment(True).get_template("dpia.html.j2").render(doc=doc)
    if fmt == "md":
        figs = []
        for f in doc["figures"]:
            rel = os.path.relpath(f["path"], Path(out_path).parent) if out_path else f["path"]
            figs.append({"name": f["name"], "rel": rel})
        return _environment(False).get_template("dpia.md.j2").render(doc=doc, figures=figs)
    raise DPIAError(f"unknown format {fmt!r}; use html, md or pdf")


def find_chromium() -> str | None:
    """The headless browser to use: ``$SECAGG_CHROMIUM`` if set (empty means none), else the first on PATH."""
    override = os.environ.get("SECAGG_CHROMIUM")
    if override is not None:
        return override or None
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None


def _chromium(args: list[str], timeout: float = 120) -> None:
    exe = find_chromium()
    if exe is None:
        raise DPIAError("PDF and screenshots need headless Chromium, which is not installed; install it with "
                        "`apt-get install chromium` (Debian/Ubuntu) or use --format html")
    proc = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", *args], capture_output=True,
                          text=True, timeout=timeout)
    if proc.returncode != 0:
        raise DPIAError(f"chromium failed (exit {proc.returncode}): {' '.join(proc.stderr.split())[:300]}")


def write_dpia(run_dir, *, fmt: str = "html", out=None, org_path=None, today: str | None = None) -> tuple[Path, dict]:
    """Build and write the DPIA; returns (path written, document)."""
    org = load_org(org_path)
    doc = build_dpia(run_dir, org, today=today)
    ext = {"html": ".html", "md": ".md", "pdf": ".pdf"}.get(fmt)
    if ext is None:
        raise DPIAError(f"unknown format {fmt!r}; use html, md or pdf")
    out = Path(out) if out else Path(run_dir) / f"dpia{ext}"
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "pdf":
        html = render_dpia(doc, "html")
        if find_chromium() is None:
            _chromium([])  # raises the install hint
        with tempfile.TemporaryDirectory() as tmp:
            page = Path(tmp) / "dpia.html"
            page.write_text(html)
            _chromium([f"--print-to-pdf={out.resolve()}", "--no-pdf-header-footer", page.as_uri()])
        return out, doc
    from ...federation.runstore import atomic_write_bytes

    atomic_write_bytes(out, render_dpia(doc, fmt, out_path=out).encode())
    return out, doc
