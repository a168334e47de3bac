"""ASGI middleware in front of everything: the Host header, then the API key, before any body is read.

Host: a page on attacker.example that re-points its DNS name to 127.0.0.1 (DNS rebinding) sends
`Host: attacker.example`; only the names the server was started for are answered (400 otherwise).
Key: a /v1 request without the right `Authorization: Bearer <key>` gets its 401 before its body is
read, so an anonymous client cannot make the server buffer 20 MB.
"""

from __future__ import annotations

import hmac

from starlette.responses import JSONResponse

from .errors import error_body


def host_name(header: str) -> str:
    """`example.org:8000` -> `example.org`, `[::1]:8000` -> `::1` (lower case)."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class Gate:
    def __init__(self, app, allowed_hosts: tuple[str, ...], api_key: str | None):
        self.app = app
        self.any_host = "*" in allowed_hosts
        self.allowed = {h.lower().strip("[]") for h in allowed_hosts}
        self.key = api_key.encode("utf-8") if api_key else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        host = host_name(headers.get(b"host", b"").decode("latin-1"))
        if not self.any_host and host not in self.allowed:
            return await self._answer(send, 400, f"Host {host or '(none)'!r} is not served here "
                                                 f"(the operator names more with --allowed-host)")
        if self.key is not None and scope["path"].startswith("/v1") and scope["method"] != "OPTIONS":
            scheme, _, given = headers.get(b"authorization", b"").partition(b" ")
            # constant time: the comparison does not reveal how much of the key matched
            if scheme.lower() != b"bearer" or not hmac.compare_digest(given.strip(), self.key):
                return await self._answer(send, 401, "missing or wrong API key (send 'Authorization: Bearer <key>')",
                                          {"WWW-Authenticate": 'Bearer realm="sedic"'})
        await self.app(scope, receive, send)

    @staticmethod
    async def _answer(send, status: int, message: str, headers: dict | None = None):
        # Connection: close: the body (if any) is never read
        response = JSONResponse(error_body(status, message), status_code=status,
                                headers={**(headers or {}), "Connection": "close"})
        await response({"type": "http"}, None, send)  # type: ignore[arg-type]  # a JSONResponse never receives
