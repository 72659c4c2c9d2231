#!/usr/bin/env python3
"""A stand-in for GitHub's REST API, for ci-janitor's tests: it records every request and
answers the few endpoints ci-janitor uses the way GitHub does (status codes, JSON bodies,
pagination `Link` headers, rate-limit headers), keeping check runs and comments in memory.

    fake_github.py --port-file FILE --log FILE [--config JSON]

It binds 127.0.0.1 on a free port, writes the port to --port-file, and appends one JSON
line per request to --log: {"method", "path", "query", "auth", "body"}. The config (JSON):

  user           login for GET /user, or null: 403 "Resource not accessible by integration"
                 (what a GITHUB_TOKEN gets)
  comments       the pull request's comments at the start: [{"id", "body", "login"}]
  base_runs      check runs on any commit: [{"summary": "..."}] for GET .../check-runs
  fail           {"METHOD PATH-PREFIX": [status, ...]}: answers these first, in order
                 (a number repeated forever when the list has one entry and "sticky")
  sticky         true: a `fail` list's last status is answered forever
  hang           true: accept connections and never answer
  rate_limit     {"METHOD PATH-PREFIX": seconds}: the first such request gets 403 with
                 x-ratelimit-remaining: 0 and a reset that many seconds ahead
  page_size      comments per page (Link: rel="next")
  state_file     where to dump {"check_runs", "comments"} after every write
"""

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

LOCK = threading.Lock()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--config", default="{}")
    args = ap.parse_args()
    cfg = json.loads(args.config)
    state = {
        "check_runs": {},
        "comments": [
            {"id": c["id"], "body": c["body"], "user": {"login": c["login"], "type": "User"}}
            for c in cfg.get("comments", [])
        ],
        "next_id": 1000,
        "fail": {k: list(v) for k, v in cfg.get("fail", {}).items()},
        "rate_limit": dict(cfg.get("rate_limit", {})),
    }

    def dump():
        if cfg.get("state_file"):
            with open(cfg["state_file"], "w") as f:
                json.dump({"check_runs": state["check_runs"], "comments": state["comments"]}, f)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def answer(self, status, body, headers=None):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json; charset=utf-8")
            self.send_header("content-length", str(len(data)))
            headers = dict({"x-ratelimit-limit": "1000", "x-ratelimit-remaining": "999"}, **(headers or {}))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def handle_any(self, method):
            url = urlsplit(self.path)
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode(errors="replace")
            with LOCK:
                with open(args.log, "a") as f:
                    f.write(json.dumps({
                        "method": method, "path": url.path, "query": url.query,
                        "auth": self.headers.get("authorization") or "", "body": body,
                    }) + "\n")
            if cfg.get("hang"):
                time.sleep(3600)
                return
            key = f"{method} {url.path}"
            with LOCK:
                for prefix, statuses in state["fail"].items():
                    if key.startswith(prefix) and statuses:
                        status = statuses[0] if (cfg.get("sticky") and len(statuses) == 1) else statuses.pop(0)
                        return self.answer(status, {"message": f"fake {status}"})
                for prefix, secs in list(state["rate_limit"].items()):
                    if key.startswith(prefix):
                        del state["rate_limit"][prefix]
                        return self.answer(403, {"message": "API rate limit exceeded"}, {
                            "x-ratelimit-remaining": "0",
                            "x-ratelimit-reset": str(int(time.time()) + int(secs)),
                        })
                return self.route(method, url, body)

        def route(self, method, url, body):
            parts = url.path.strip("/").split("/")
            q = parse_qs(url.query)
            if parts == ["user"]:
                if cfg.get("user"):
                    return self.answer(200, {"login": cfg["user"], "type": "User"})
                return self.answer(403, {"message": "Resource not accessible by integration"})
            if len(parts) >= 3 and parts[0] == "repos":
                rest = parts[3:]
                if method == "POST" and rest == ["check-runs"]:
                    state["next_id"] += 1
                    run = dict(body, id=state["next_id"])
                    run["annotations_received"] = len(body.get("output", {}).get("annotations", []))
                    state["check_runs"][str(run["id"])] = run
                    dump()
                    return self.answer(201, run)
                if method == "PATCH" and len(rest) == 2 and rest[0] == "check-runs":
                    run = state["check_runs"].get(rest[1])
                    if run is None:
                        return self.answer(404, {"message": "Not Found"})
                    out = body.get("output", {})
                    run["annotations_received"] += len(out.get("annotations", []))
                    run["output"] = out
                    dump()
                    return self.answer(200, run)
                if method == "GET" and len(rest) == 3 and rest[0] == "commits" and rest[2] == "check-runs":
                    runs = [{"id": i + 1, "name": "ci-janitor", "head_sha": rest[1],
                             "output": {"title": "t", "summary": r["summary"]}}
                            for i, r in enumerate(cfg.get("base_runs", []))]
                    return self.answer(200, {"total_count": len(runs), "check_runs": runs})
                if len(rest) == 3 and rest[0] == "issues" and rest[2] == "comments":
                    if method == "GET":
                        size = int(cfg.get("page_size") or q.get("per_page", ["30"])[0])
                        page = int(q.get("page", ["1"])[0])
                        items = state["comments"][(page - 1) * size: page * size]
                        headers = {}
                        if page * size < len(state["comments"]):
                            host = self.headers.get("host")
                            headers["link"] = (f'<http://{host}{url.path}?per_page={size}&page={page + 1}>; rel="next"')
                        return self.answer(200, items, headers)
                    if method == "POST":
                        state["next_id"] += 1
                        c = {"id": state["next_id"], "body": body["body"],
                             "user": {"login": cfg.get("user") or "github-actions[bot]", "type": "Bot"}}
                        state["comments"].append(c)
                        dump()
                        return self.answer(201, c)
                if method == "PATCH" and len(rest) == 3 and rest[:2] == ["issues", "comments"]:
                    for c in state["comments"]:
                        if str(c["id"]) == rest[2]:
                            c["body"] = body["body"]
                            dump()
                            return self.answer(200, c)
                    return self.answer(404, {"message": "Not Found"})
            return self.answer(404, {"message": "Not Found"})

        def do_GET(self):
            self.handle_any("GET")

        def do_POST(self):
            self.handle_any("POST")

        def do_PATCH(self):
            self.handle_any("PATCH")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    with open(args.port_file + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    import os
    os.rename(args.port_file + ".tmp", args.port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
