"""Where the gateway may send requests: configured upstream URLs are checked once, at start-up.

A request can never name an upstream (``gateway/schemas.py`` refuses URL fields in bodies);
this guards the other side, configuration: an upstream URL must be https to a public host,
or name a host listed in ``allowed_upstream_hosts``. Loopback (a local model server, the
test fakes) is allowed without listing only in the ``dev`` stage, so a staging or prod
deployment cannot be pointed at the instance's own or internal addresses by accident.
"""
from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from gateway.errors import ConfigError

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine."""
    address = _address(host)
    return host in LOOPBACK_NAMES or (address is not None and address.is_loopback)


def check_upstream_url(url: str, settings, what: str) -> None:
    """Refuse (:class:`ConfigError` naming ``what``) an upstream URL the settings do not allow."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if not host or parts.scheme not in ("http", "https"):
        raise ConfigError(f"{what}: {url!r} is not an http(s) URL with a host")
    if host in settings.allowed_upstream_hosts:
        return
    if is_loopback(host):
        if settings.stage == "dev":
            return
        raise ConfigError(f"{what}: loopback host {host!r} is allowed only in the dev stage; "
                          "list it in allowed_upstream_hosts to allow it here")
    address = _address(host)
    if parts.scheme != "https" or (address is not None and not address.is_global):
        raise ConfigError(f"{what}: upstream host {host!r} must be reached over https at a public address, "
                          "or be listed in allowed_upstream_hosts")
