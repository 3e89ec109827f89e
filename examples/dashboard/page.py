"""The dashboard's page server: the page, and demo tokens for it.

    page.py --listen 127.0.0.1:8090 --gateway ws://127.0.0.1:8091/streams --public-key-file F

Serves web/index.html and the bundled web/dist/app.js (scripts/dashboard builds it), tells
the page where the gateway is (GET /config.json), and signs tokens (POST /token with
{"user": ...}): the demo's stand-in for an identity provider. Each demo user's token lists
the sources it may read and command in its `sources` claim, which the gateway's config pins
keys to:

    ops     every source ("*"), and so also the subscription to all sources at once
    field   s1 and s2 only

The signing key (Ed25519) is made at start and lives only in this process; its public half
is written to --public-key-file, which the gateway's config (kafkasocks.toml) reads. A real
deployment gets tokens from its login (OIDC) and points the gateway at its JWKS instead.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from joserfc import jwt
from joserfc.jwk import OKPKey

HERE = Path(__file__).resolve().parent
WEB = HERE / "web"
ISSUER = AUDIENCE = "kafkasocks-dashboard"
TOKEN_LIFETIME_S = 600
USERS: dict[str, list[str]] = {"ops": ["*"], "field": ["s1", "s2"]}
MAX_BODY = 4096
# RFC 9864 names the algorithm "Ed25519"; the gateway's JWT library and most identity
# providers still say "EdDSA", which is the same signature.
warnings.filterwarnings("ignore", message="EdDSA is deprecated")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", default="127.0.0.1:8090")
    parser.add_argument("--gateway", required=True, help="the gateway's WebSocket URL, for the page")
    parser.add_argument("--public-key-file", required=True, type=Path)
    args = parser.parse_args()

    key = OKPKey.generate_key("Ed25519")
    args.public_key_file.parent.mkdir(parents=True, exist_ok=True)
    args.public_key_file.write_bytes(key.as_pem(private=False))
    config = json.dumps({"gateway": args.gateway}).encode()

    class Handler(BaseHTTPRequestHandler):
        server_version = "dashboard-page"

        def log_message(self, format: str, *a: Any) -> None:  # noqa: A002 (the base class's name)
            pass

        def send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(body)))
            self.send_header("cache-control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def error(self, status: int, message: str) -> None:
            self.send(status, json.dumps({"error": message}).encode(), "application/json")

        def do_GET(self) -> None:  # noqa: N802 (the base class's name)
            path = self.path.split("?", 1)[0]
            files = {"/": ("index.html", "text/html; charset=utf-8"), "/app.js": ("dist/app.js", "text/javascript")}
            if path == "/config.json":
                self.send(HTTPStatus.OK, config, "application/json")
            elif path in files:
                name, content_type = files[path]
                try:
                    self.send(HTTPStatus.OK, (WEB / name).read_bytes(), content_type)
                except FileNotFoundError:
                    self.error(HTTPStatus.NOT_FOUND, f"{name} is not built: run scripts/dashboard")
            else:
                self.error(HTTPStatus.NOT_FOUND, "not found")

        def do_POST(self) -> None:  # noqa: N802
            if self.path != "/token":
                return self.error(HTTPStatus.NOT_FOUND, "not found")
            length = int(self.headers.get("content-length") or 0)
            if length > MAX_BODY:
                return self.error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "the request is too large")
            try:
                user = json.loads(self.rfile.read(length) or b"{}").get("user")
            except (ValueError, AttributeError):
                return self.error(HTTPStatus.BAD_REQUEST, 'send {"user": "ops"} or {"user": "field"}')
            if user not in USERS:
                return self.error(HTTPStatus.FORBIDDEN, f"no demo user {user!r}: ops (every source) or field (s1, s2)")
            now = int(time.time())
            claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": user, "iat": now, "exp": now + TOKEN_LIFETIME_S,
                      "sources": USERS[user]}
            token = jwt.encode({"alg": "EdDSA"}, claims, key, algorithms=["EdDSA"])
            self.send(HTTPStatus.OK, json.dumps({"token": token, "sources": USERS[user]}).encode(), "application/json")

    host, _, port = args.listen.rpartition(":")
    server = ThreadingHTTPServer((host, int(port)), Handler)
    print(f"page: http://{args.listen}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    sys.exit(main())
