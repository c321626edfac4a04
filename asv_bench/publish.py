"""Publish the asv dashboard so that it works without internet access.

    python asv_bench/publish.py        # from the repository root, after `asv run`

Runs ``asv publish`` (the pages go to ``asv_bench/html``), copies ``asv_bench/vendor`` (local
copies of the JavaScript and CSS asv's pages load from CDNs; see its README for sources,
versions and licences) into ``html/vendor``, and points every page at those copies. Fails, and
says which, if a page still loads anything from outside.
"""
from __future__ import annotations

import pathlib
import re
import shutil
import subprocess
import sys

HERE = pathlib.Path(__file__).resolve().parent
VENDOR = HERE / "vendor"

# asv 0.6's CDN address -> (local copy, same bytes as the CDN file: keep its integrity hash)
LOCAL = {
    "https://code.jquery.com/jquery-3.3.1.min.js": ("jquery-3.3.1/jquery.min.js", True),
    "https://cdnjs.cloudflare.com/ajax/libs/flot/0.8.3/jquery.flot.min.js": ("flot-0.8.3/jquery.flot.js", False),
    "https://cdnjs.cloudflare.com/ajax/libs/flot/0.8.3/jquery.flot.time.min.js":
        ("flot-0.8.3/jquery.flot.time.js", False),
    "https://cdnjs.cloudflare.com/ajax/libs/flot/0.8.3/jquery.flot.selection.min.js":
        ("flot-0.8.3/jquery.flot.selection.js", False),
    "https://cdnjs.cloudflare.com/ajax/libs/flot/0.8.3/jquery.flot.categories.min.js":
        ("flot-0.8.3/jquery.flot.categories.js", False),
    "https://cdn.jsdelivr.net/npm/flot-orderbars@1.0.0/js/jquery.flot.orderBars.js":
        ("flot-orderbars-1.0.0/jquery.flot.orderBars.js", True),
    "https://cdnjs.cloudflare.com/ajax/libs/stupidtable/1.0.1/stupidtable.min.js":
        ("stupid-table-plugin-1.1.3/stupidtable.min.js", False),
    "https://cdnjs.cloudflare.com/ajax/libs/blueimp-md5/2.19.0/js/md5.min.js": ("blueimp-md5-2.19.0/md5.min.js", True),
    "https://cdn.jsdelivr.net/npm/bootstrap@3.1.1/dist/js/bootstrap.min.js": ("bootstrap-3.1.1/js/bootstrap.min.js", True),
    "https://cdn.jsdelivr.net/npm/bootstrap@3.1.1/dist/css/bootstrap.min.css":
        ("bootstrap-3.1.1/css/bootstrap.min.css", True),
}
TAG = re.compile(r"<(script|link)\b[^>]*?\b(?:src|href)=\"(https?://[^\"]+)\"[^>]*>", re.S)


def localize(page: str) -> tuple[str, list[str]]:
    """``page`` with every known CDN tag pointing at ``vendor/``; and the outside addresses left.

    Examples
    --------
    >>> html, left = localize('<script src="https://code.jquery.com/jquery-3.3.1.min.js" integrity="x"></script>')
    >>> html, left
    ('<script src="vendor/jquery-3.3.1/jquery.min.js" integrity="x"></script>', [])
    """
    left = []

    def swap(match: re.Match) -> str:
        tag, url = match.group(0), match.group(2)
        if url not in LOCAL:
            if match.group(1) == "script" or "stylesheet" in tag:
                left.append(url)
            return tag
        path, same_bytes = LOCAL[url]
        tag = tag.replace(url, f"vendor/{path}")
        if not same_bytes:
            tag = re.sub(r'\s+(integrity|crossorigin|referrerpolicy)="[^"]*"', "", tag)
        return tag

    return TAG.sub(swap, page), left


def main(argv=None) -> int:
    html = HERE / "html"
    subprocess.run(["asv", "publish", *(argv or [])], cwd=HERE, check=True)
    shutil.copytree(VENDOR, html / "vendor", dirs_exist_ok=True)
    problems = []
    for page in sorted(html.glob("*.html")):
        text, left = localize(page.read_text())
        page.write_text(text)
        problems += [f"{page.name}: {url}" for url in left]
    if problems:
        print("these pages still load from outside:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    print(f"published {html} with local scripts and styles.\n"
          "Open it through a web server, not as a file (a browser will not let a file:// page read its "
          "JSON, and asv then says its external dependencies failed to load):\n"
          "  (cd asv_bench && asv preview)                 # then open http://127.0.0.1:8080\n"
          "  python -m http.server 8080 -d asv_bench/html   # the same, with Python alone")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
