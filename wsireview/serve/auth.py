"""Who may use the viewer: the token rule, and the checks that keep other web pages out.

A token, when the server has one, may come as ``?token=`` (the address printed at start; the
answer then sets a cookie so the page's own requests carry it), as the cookie, or as an
``Authorization: token ...`` / ``Bearer ...`` header. Requests without it get 401.

Requests that change the catalog must carry the ``X-WSIReview`` header: a page on another site
cannot send a custom header to this server without a CORS preflight, which is never granted.
"""

from __future__ import annotations

import hmac
from http.cookies import SimpleCookie
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Receive, Scope, Send

from wsireview.serve.config import ServeConfig, is_loopback

COOKIE = "wsireview_token"
WRITE_HEADER = "x-wsireview"
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


def cookie_name(config: ServeConfig) -> str:
    """Per port: browsers share cookies between the ports of a host, so two viewers must not overwrite
    each other's token."""
    return f"{COOKIE}_{config.port}"


def presented_token(
    headers: dict[str, str], query_string: str, cookie_key: str = COOKIE
) -> tuple[str | None, bool]:
    """The token a request carries, and whether it came in the query string (then it is set as a cookie)."""
    query = parse_qs(query_string).get("token")
    if query:
        return query[0], True
    auth = headers.get("authorization", "")
    for scheme in ("token ", "bearer "):
        if auth.lower().startswith(scheme):
            return auth[len(scheme):].strip(), False
    cookie = SimpleCookie()
    try:
        cookie.load(headers.get("cookie", ""))
    except Exception:  # a malformed cookie header is no token
        return None, False
    morsel = cookie.get(cookie_key)
    return (morsel.value if morsel else None), False


def token_accepted(expected: str | None, presented: str | None) -> bool:
    """The one rule: no token configured lets everyone in (loopback only); else it must match exactly."""
    if expected is None:
        return True
    return presented is not None and hmac.compare_digest(expected.encode(), presented.encode())


def host_allowed(config: ServeConfig, host_header: str) -> bool:
    """On a loopback bind, the Host header must name this machine: a DNS-rebinding page cannot read it."""
    if not is_loopback(config.host):
        return True
    name = host_header.rsplit(":", 1)[0] if not host_header.endswith("]") else host_header
    return is_loopback(name)


class GuardMiddleware:
    """401 without the token, 403 for a foreign Host on loopback or a write without the viewer's header."""

    def __init__(self, app: ASGIApp, config: ServeConfig) -> None:
        self.app, self.config = app, config

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if not host_allowed(self.config, headers.get("host", "")):
            await _plain(send, 403, "forbidden: this viewer answers only to a loopback host name")
            return
        token, from_query = presented_token(
            headers, scope.get("query_string", b"").decode("latin-1"), cookie_name(self.config)
        )
        if not token_accepted(self.config.token, token):
            await _plain(send, 401, "unauthorized: open the address printed by `wsireview serve` (with its token)")
            return
        if scope["method"] not in SAFE_METHODS and WRITE_HEADER not in headers:
            await _plain(send, 403, "forbidden: writes come from the viewer's own page")
            return
        if not (from_query and self.config.token):
            await self.app(scope, receive, send)
            return

        async def send_with_cookie(message) -> None:
            if message["type"] == "http.response.start":
                cookie = f"{cookie_name(self.config)}={self.config.token}; Path=/; HttpOnly; SameSite=Strict"
                message = dict(message, headers=list(message.get("headers", [])) + [(b"set-cookie", cookie.encode())])
            await send(message)

        await self.app(scope, receive, send_with_cookie)


async def _plain(send: Send, status: int, text: str) -> None:
    body = (text + "\n").encode()
    await send({
        "type": "http.response.start", "status": status,
        "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())],
    })
    await send({"type": "http.response.body", "body": body})
