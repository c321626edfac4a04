"""Open the published dashboard in headless Chromium with the network off, and check it renders.

    python asv_bench/check_dashboard.py [BENCHMARK]    # after asv_bench/publish.py

Serves ``asv_bench/html`` on a loopback port and loads it in Chromium whose host resolver
fails every name but the loopback address, so any script or style still fetched from outside
would fail. Checks that the summary grid shows benchmark tiles and that a benchmark's page
(default ``bench_cache.Get.time_get``) draws its graph (flot's canvas), and that asv's
"external (JavaScript) dependencies failed to load" message is absent. Exit status 1 with the
reason if not; 2 if Chromium is not installed (Debian: ``apt-get install -y chromium``).
"""
from __future__ import annotations

import functools
import http.server
import pathlib
import shutil
import subprocess
import sys
import tempfile
import threading

HTML = pathlib.Path(__file__).resolve().parent / "html"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", "--virtual-time-budget=20000"]


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        """Serve without a line per request."""


def rendered_dom(chromium: str, url: str) -> str:
    """The page's DOM after its scripts ran (Chromium's ``--dump-dom``)."""
    with tempfile.TemporaryDirectory() as profile:
        result = subprocess.run([chromium, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", url],
                                capture_output=True, text=True, timeout=120)
    return result.stdout


def problems(chromium: str, base: str, benchmark: str) -> list[str]:
    found = []
    grid = rendered_dom(chromium, base + "index.html")
    if "dependencies failed to load" in grid or "continental origin of swallow" in grid:
        found.append("the grid page says its external dependencies failed to load")
    if grid.count('class="btn benchmark-container"') == 0:
        found.append("the summary grid shows no benchmark tiles")
    graph = rendered_dom(chromium, f"{base}index.html#{benchmark}")
    if "flot-base" not in graph:
        found.append(f"the page of {benchmark} draws no graph (no flot canvas)")
    return found


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    benchmark = args[0] if args else "bench_cache.Get.time_get"
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("Chromium is not installed (Debian: apt-get install -y chromium)", file=sys.stderr)
        return 2
    if not (HTML / "index.html").exists():
        print(f"{HTML} has no dashboard: run `asv run` and `python asv_bench/publish.py` first", file=sys.stderr)
        return 1
    handler = functools.partial(_QuietHandler, directory=str(HTML))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        found = problems(chromium, f"http://127.0.0.1:{server.server_address[1]}/", benchmark)
    finally:
        server.shutdown()
    if found:
        print("dashboard check FAILED:\n  " + "\n  ".join(found), file=sys.stderr)
        return 1
    print(f"dashboard renders offline: summary grid and the graph of {benchmark}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
