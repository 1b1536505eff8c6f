"""A loopback HTTP server with the few Hugging Face Hub endpoints that ``HfApi.create_repo``,
``create_branch`` and ``upload_folder`` call for small ("regular", base64) files."""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeHub:
    def __init__(self):
        self.repos: dict[str, dict] = {}  # repo_id -> {"private": bool, "branches": {name: {path: bytes}}}
        self.requests: list[tuple[str, str]] = []
        self.cards: list[str] = []
        self.bodies: list[dict] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _body(self):
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""

            def _send(self, code, obj):
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):  # noqa: N802
                body = self._body()
                hub.requests.append(("POST", self.path))
                parts = self.path.split("?")[0].strip("/").split("/")
                if self.path.startswith("/api/validate-yaml"):  # the model card's YAML header
                    hub.cards.append(json.loads(body).get("content", ""))
                    return self._send(200, {"errors": [], "warnings": []})
                if self.path.startswith("/api/repos/create"):
                    req = json.loads(body)
                    repo = f"{req.get('organization') or 'user'}/{req['name']}"
                    hub.bodies.append(req)
                    private = bool(req.get("private")) or req.get("visibility") == "private"
                    hub.repos.setdefault(repo, {"private": private, "branches": {"main": {}}})
                    return self._send(200, {"url": f"{hub.url}/{repo}", "name": repo})
                if len(parts) >= 5 and parts[0] == "api" and parts[1] == "models":
                    repo, action, rev = f"{parts[2]}/{parts[3]}", parts[4], "/".join(parts[5:]) or "main"
                    rev = rev.replace("%2F", "/")
                    if repo not in hub.repos:
                        return self._send(404, {"error": "Repository not found"})
                    if action == "branch":
                        hub.repos[repo]["branches"].setdefault(rev, dict(hub.repos[repo]["branches"]["main"]))
                        return self._send(200, {})
                    if action == "preupload":
                        files = json.loads(body)["files"]
                        return self._send(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                                                           "oid": None} for f in files]})
                    if action == "commit":
                        branch = hub.repos[repo]["branches"].setdefault(rev, {})
                        for line in body.decode().splitlines():
                            item = json.loads(line)
                            if item["key"] == "file":
                                branch[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                        return self._send(200, {"commitUrl": f"{hub.url}/{repo}/commit/{'0' * 40}", "commitOid": "0" * 40,
                                                "success": True})
                return self._send(404, {"error": f"not implemented: {self.path}"})

            def do_GET(self):  # noqa: N802
                hub.requests.append(("GET", self.path))
                return self._send(404, {"error": f"not implemented: {self.path}"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
