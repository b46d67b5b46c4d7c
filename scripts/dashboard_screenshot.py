"""Screenshot of the dashboard at N paper bots, for docs/dashboard-100-bots.png.

Starts the real coordinator process on a throwaway copy of the embedded default with N paper
bots (scripts/bench_paper_bots.py's config: copies of the two shipped bots, the per-bot risk
limits and the execution throttle lifted so that every copy trades), starts them all one by one
through the API, lets them trade, opens the page in headless Chromium (Debian's, as the browser
tests do: `bash scripts/install-browser`), picks a bot for the chart and saves a full-page PNG.

    .venv/bin/python scripts/dashboard_screenshot.py --bots 100 --out docs/dashboard-100-bots.png

It also prints how long the page took to show every bot and one poll's render time, measured in
the page (performance.now around the render of /status).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_paper_bots import make_config  # noqa: E402 (after the path is set)

from coordinator.drills.harness import free_port  # noqa: E402
from tests.support_browser import missing_browser, start_chromium, stop_chromium  # noqa: E402


def call(base: str, method: str, path: str, token: str | None = None) -> Any:
    body = b"{}" if method == "POST" else None
    request = urllib.request.Request(base + path, method=method, data=body)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=120) as answer:
        return json.loads(answer.read())


def wait_until(check: Any, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"timed out waiting for {what}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bots", type=int, default=100)
    parser.add_argument("--trade-seconds", type=float, default=25.0)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "dashboard-100-bots.png")
    args = parser.parse_args()
    problem = missing_browser()
    if problem:
        raise SystemExit(problem)
    with tempfile.TemporaryDirectory(prefix="dashboard-shot-") as tmp:
        root = Path(tmp)
        (root / "config").mkdir()
        make_config(root / "config", args.bots, tick=1.0, unlimited=True)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        command = [sys.executable, "-m", "coordinator", "--port", str(port), "--config-dir",
                   str(root / "config"), "--data-dir", str(root / "data"), "--log-dir",
                   str(root / "logs")]
        with (root / "out.txt").open("wb") as out:
            child = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=root)
        try:
            wait_until(lambda: call(base, "GET", "/health") is not None, 60, "the coordinator")
            token = (root / "data" / "control.token").read_text().strip()
            started = call(base, "POST", "/start-sequential", token)
            print(f"started {len(started['started'])} bots", file=sys.stderr)
            time.sleep(args.trade_seconds)
            shoot(base, args)
        finally:
            child.terminate()
            child.wait(timeout=60)


def shoot(base: str, args: argparse.Namespace) -> None:
    driver, profile = start_chromium(width=1600, height=1200)
    try:
        began = time.monotonic()
        driver.get(base + "/")
        wait_until(
            lambda: driver.execute_script(
                "return document.querySelectorAll('#bots tbody tr').length") == args.bots,
            30, "every bot on the page",
        )
        shown = time.monotonic() - began
        first = driver.execute_script("return document.querySelector('#bots tbody tr').dataset.bot")
        driver.execute_script(
            "document.querySelector(`#bots tr[data-bot='${arguments[0]}'] .bot-link`).click()",
            first,
        )
        wait_until(lambda: "fills" in driver.find_element("id", "chart-note").text, 15, "the chart")
        render_ms = driver.execute_async_script(
            """const done = arguments[arguments.length - 1];
            fetch('/status').then(r => r.json()).then(status => {
              const t = performance.now(); render(status); done(performance.now() - t); });"""
        )
        time.sleep(2.5)  # the side panels' next poll
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1600, min(int(height), 6000))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(args.out))
        print(json.dumps({"bots": args.bots, "page_showed_every_bot_s": round(shown, 2),
                          "render_ms": round(render_ms, 1), "screenshot": str(args.out)}))
    finally:
        stop_chromium(driver, profile)


if __name__ == "__main__":
    main()
