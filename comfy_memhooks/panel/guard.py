"""Who may change something: the checks every mutating route makes itself, in ComfyUI and in the standalone server.

A web page the user visits can send requests to a server on the user's machine. Three ways in are closed here:

- **another site's page** sends an ``Origin`` naming another host: refused (browsers send ``Origin`` on every POST
  and PUT, and on websocket handshakes);
- **a sandboxed iframe or a ``data:`` page** sends ``Origin: null``, which names no site: refused on every route that
  changes something (a no-preflight ``text/plain`` POST would otherwise free memory);
- **DNS rebinding**: a page at ``evil.example`` whose name is made to resolve to 127.0.0.1 is same-origin with
  itself, so its ``Origin`` and ``Host`` match. Only its ``Host`` gives it away: a name that is neither a loopback
  name, an IP address (a rebinding needs a name), nor one the user allowed is refused.

The checks are made in the route handlers rather than left to ComfyUI's middleware, whose origin check differs
between versions. When the standalone server listens beyond loopback, changes also need a token.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import InvalidSetting

ALLOWED_HOSTS_ENV = "COMFY_MEMHOOKS_ALLOWED_HOSTS"
TOKEN_ENV = "COMFY_MEMHOOKS_TOKEN"
TOKEN_HEADER = "X-Memhooks-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class Refused(InvalidSetting):
    """A request refused for who sent it (403), not for what it said; ``field`` names the header at fault."""


def host_name(host_header: str) -> str | None:
    """The name or address in a ``Host`` header, lower-case, without port or brackets; ``None`` when malformed."""
    try:
        return urllib.parse.urlsplit(f"//{host_header}").hostname
    except ValueError:
        return None


def is_ip_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def allowed_hosts_from_environment() -> frozenset[str]:
    """Extra host names from ``$COMFY_MEMHOOKS_ALLOWED_HOSTS`` (comma-separated), for a machine reached by name."""
    return frozenset(name.strip().lower() for name in os.environ.get(ALLOWED_HOSTS_ENV, "").split(",") if name.strip())


@dataclass(frozen=True, slots=True)
class RequestGuard:
    """The rule for one server.

    Attributes:
        allowed_hosts: names accepted in ``Host`` beside loopback names and IP addresses.
        check_host_names: refuse other names in ``Host``. Off for a ComfyUI that listens beyond loopback: it is
            reached by names nobody can list beforehand (a rented pod's proxy, a LAN name), and a rebinding attack
            aims at a server on the victim's loopback; the ``Origin`` checks still apply.
        token_required: changes need :attr:`token` (the standalone server beyond loopback).
        token: the shared secret, sent as the ``X-Memhooks-Token`` header or ``Authorization: Bearer``.
    """

    allowed_hosts: frozenset[str] = frozenset()
    check_host_names: bool = True
    token_required: bool = False
    token: str | None = None

    def check_host(self, headers: Mapping[str, str]) -> None:
        """Raises :class:`Refused` for a ``Host`` that names a host this server was not meant to be reached by."""
        raw = headers.get("Host")
        if raw is None or not self.check_host_names:  # HTTP/1.0 without Host: no browser sends that
            return
        name = host_name(str(raw))
        if name is None or not (
            name == "localhost" or name.endswith(".localhost") or is_ip_address(name) or name in self.allowed_hosts
        ):
            raise Refused(
                "host",
                f"{str(raw)[:100]!r} is not a name this server answers to (loopback names and IP addresses; "
                f"allow more with --allow-host or ${ALLOWED_HOSTS_ENV})",
            )

    def check_origin(self, origin: str | None, host: str, mutating: bool) -> None:
        """Refuses another site's ``Origin``, and ``Origin: null`` on anything that changes something."""
        if origin is None:
            return
        if origin == "null":
            if mutating:
                raise Refused("origin", "requests from a page without an origin (null) may not change anything")
            return
        if urllib.parse.urlsplit(origin).netloc != host:
            raise Refused("origin", "requests from another site are refused")

    def check_token(self, headers: Mapping[str, str]) -> None:
        if not self.token_required:
            return
        if not self.token:
            raise Refused(
                "token",
                f"this server listens beyond loopback without a token; start it with --token or ${TOKEN_ENV}",
            )
        sent = headers.get(TOKEN_HEADER) or headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not sent or not hmac.compare_digest(sent.encode(), self.token.encode()):
            raise Refused("token", f"a change needs the token, in the {TOKEN_HEADER} header")

    def check(self, method: str, headers: Mapping[str, str], host: str) -> None:
        """Every check for one request: ``Host`` always; ``Origin`` and the token on what changes something."""
        mutating = method.upper() not in SAFE_METHODS
        self.check_host(headers)
        self.check_origin(headers.get("Origin"), host, mutating)
        if mutating:
            self.check_token(headers)


def listens_on_loopback_only(addresses: str | None) -> bool:
    """Whether ComfyUI's ``--listen`` value (comma-separated addresses) names loopback addresses only."""
    if not addresses:
        return True
    for address in addresses.split(","):
        name = address.strip().strip("[]").lower()
        if name == "localhost":
            continue
        try:
            if not ipaddress.ip_address(name).is_loopback:
                return False
        except ValueError:
            return False
    return True
