"""The dashboard's guards: loopback by default (an access token to bind
elsewhere), a Host-header check against DNS rebinding, CSRF on every POST,
and security headers on every answer.

CSRF: one random token per server start, put into every page (a hidden form
field and a ``<meta>`` for scripts) and required on every POST, as a form
field or the ``X-CSRF-Token`` header; a cross-site page cannot read it. A POST
whose ``Origin`` is another site is refused as well.
"""
from __future__ import annotations

import hmac
import ipaddress
import logging
import secrets

from flask import Flask, Response, abort, request

log = logging.getLogger(__name__)

TOKEN_COOKIE = "posefactory_token"
LOOPBACK_NAMES = ("localhost",)
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; object-src 'none'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


class BindError(ValueError):
    """A bind address that needs what was not given (an access token)."""


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Binding anywhere but loopback needs an access token of at least 16 characters."""
    if is_loopback(host):
        return
    if not token or len(token) < 16:
        raise BindError(f"binding to {host} exposes your jobs and spending to the network: give an access token of "
                        "at least 16 characters (--token or POSEFACTORY_DASHBOARD_TOKEN), or keep the default "
                        "127.0.0.1")


def _host_name(header: str) -> str:
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def install(app: Flask, *, access_token: str | None) -> None:
    """Register the guards on ``app``; ``access_token`` None means loopback-only use."""
    csrf_token = secrets.token_urlsafe(32)
    app.config["CSRF_TOKEN"] = csrf_token

    @app.context_processor
    def csrf_context() -> dict[str, str]:
        return {"csrf_token": csrf_token}

    @app.before_request
    def guard() -> Response | None:
        host = _host_name(request.host or "")
        if access_token is None and not is_loopback(host):
            # A page on another site resolving its own name to 127.0.0.1 (DNS rebinding) lands here.
            log.warning("refused a request for host %r (the dashboard answers loopback names only)", host[:100])
            abort(400, "this dashboard answers only to localhost / 127.0.0.1")
        if access_token is not None:
            given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip() or \
                request.cookies.get(TOKEN_COOKIE, "") or request.args.get("token", "")
            if not hmac.compare_digest(given.encode(), access_token.encode()):
                abort(401, "an access token is required: open the address printed at start-up")
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            origin = request.headers.get("Origin")
            if origin and origin != "null" and origin.rstrip("/") != request.host_url.rstrip("/"):
                log.warning("refused a cross-site POST from %r", origin[:100])
                abort(403, "cross-site request refused")
            sent = request.headers.get("X-CSRF-Token") or request.form.get("csrf_token", "")
            if not hmac.compare_digest(sent.encode(), csrf_token.encode()):
                log.warning("refused a POST to %s without a valid CSRF token", request.path)
                abort(403, "missing or wrong CSRF token: reload the page and try again")
        return None

    @app.after_request
    def headers(response: Response) -> Response:
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cross-Origin-Resource-Policy"] = "same-origin"
        if response.mimetype in ("text/html", "application/json"):
            response.headers["Cache-Control"] = "no-store"
        if access_token is not None and request.args.get("token") == access_token:
            response.set_cookie(TOKEN_COOKIE, access_token, httponly=True, samesite="Strict")
        return response
