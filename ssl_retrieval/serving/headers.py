"""Response headers every answer carries, and HEAD answered like GET (an ASGI middleware).

The page at `/` gets a Content-Security-Policy allowing only this server's own scripts, styles
and requests (the page has no inline script or style, and fetches nothing from elsewhere);
every other answer (JSON, the page's JS and CSS) gets one allowing nothing. All answers get
`X-Content-Type-Options: nosniff`, `X-Frame-Options: DENY` and `Referrer-Policy: no-referrer`.
"""

from __future__ import annotations

PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'"
COMMON = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]
PAGE_HEADERS = [*COMMON, (b"content-security-policy", PAGE_CSP.encode())]
API_HEADERS = [*COMMON, (b"content-security-policy", API_CSP.encode())]


class SecurityHeaders:
    """Adds the headers above to every HTTP response; HEAD runs the GET route without a body."""

    def __init__(self, app, page_paths: tuple[str, ...] = ("/",)):
        self.app = app
        self.page_paths = page_paths

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        extra = PAGE_HEADERS if scope["path"] in self.page_paths else API_HEADERS
        head = scope["method"] == "HEAD"
        if head:  # a copy: the server keeps the original, and drops the body for HEAD itself
            scope = {**scope, "method": "GET"}

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                names = {name.lower() for name, _ in message.get("headers", [])}
                added = [(n, v) for n, v in extra if n not in names]
                message = {**message, "headers": [*message.get("headers", []), *added]}
            elif head and message["type"] == "http.response.body" and message.get("body"):
                message = {**message, "body": b""}
            await send(message)

        await self.app(scope, receive, send_with_headers)
