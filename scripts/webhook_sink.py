"""A local webhook sink for drills: prints every message the coordinator (or the monitor) sends.

    .venv/bin/python scripts/webhook_sink.py --port 9099 &
    export BOT_COORDINATOR_WEBHOOK_URL=http://127.0.0.1:9099/hook

Listens on 127.0.0.1 only, answers 200 to any POST, prints one line per message (its `text`)
and appends the whole JSON body to `--out` (default: webhook-sink.jsonl in the current dir).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from aiohttp import web


def make_app(out: Path) -> web.Application:
    async def receive(request: web.Request) -> web.Response:
        body = await request.text()
        try:
            text = json.loads(body).get("text", body)
        except ValueError:
            text = body
        print(f"webhook {request.path}: {text}", flush=True)
        with out.open("a", encoding="utf-8") as sink:
            sink.write(body.replace("\n", " ") + "\n")
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/{tail:.*}", receive)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description="a local webhook sink for alert drills")
    parser.add_argument("--port", type=int, default=9099)
    parser.add_argument("--out", type=Path, default=Path("webhook-sink.jsonl"))
    args = parser.parse_args()
    print(f"listening on http://127.0.0.1:{args.port}/hook; bodies go to {args.out}",
          file=sys.stderr, flush=True)
    web.run_app(make_app(args.out), host="127.0.0.1", port=args.port, print=None)


if __name__ == "__main__":
    main()
