"""Who is asking: the client's address, as the rate limits, the request log and the
admin's login lockout all see it, and the client it stands for."""

from __future__ import annotations

import hashlib
import ipaddress

from django.http import HttpRequest
from rest_framework.throttling import BaseThrottle

# One subscriber line (a home, a phone) gets a whole IPv6 /64 and can use
# any of its 2^64 addresses: the network, not the address, is the client.
IPV6_CLIENT_PREFIX = 64


def client_ip(request: HttpRequest) -> str:
    """The client's address: REMOTE_ADDR, or X-Forwarded-For when proxies are trusted.

    With ``DJANGO_TRUSTED_PROXIES`` (DRF's ``NUM_PROXIES``) set to n, the
    address n hops from the right of X-Forwarded-For: the one the outermost
    trusted proxy saw.
    """
    return BaseThrottle().get_ident(request) or ""


def client_network(ident: str) -> ipaddress.IPv4Address | ipaddress.IPv6Network | None:
    """The client an address stands for, in one canonical form; None if it is no address.

    An IPv4 address is itself, also when it comes mapped into IPv6
    (``::ffff:192.0.2.7``); an IPv6 address stands for its /64. Brackets, a
    zone (``%eth0``) and an IPv4 address's port, which some proxies write
    into X-Forwarded-For, are dropped; any spelling of one address (``2001:DB8::7``,
    ``2001:0db8:0:0:0:0:0:7``) is the same client.
    """
    text = ident.strip()
    if text.startswith("[") and "]" in text:
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    text = text.partition("%")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv4Address):
        return address
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return ipaddress.IPv6Network((address, IPV6_CLIENT_PREFIX), strict=False)


def client_key(request: HttpRequest) -> str:
    """The rate limits' name for the client: its canonical address or /64, else a digest.

    Anything that is not an address (a proxy misconfigured to pass the
    client's own header on) is hashed, so that a client cannot make a cache
    key long or odd.
    """
    ident = client_ip(request)
    network = client_network(ident)
    if network is not None:
        return str(network)
    return hashlib.blake2b(ident.encode(errors="replace"), digest_size=16).hexdigest()


def lockout_address(request: HttpRequest) -> str | None:
    """The admin lockout's client address: the IPv4 address, or the first of the IPv6 /64.

    django-axes stores it in an IP address column, which holds an address
    and no prefix length. Not an address at all: None, one shared bucket.
    """
    network = client_network(client_ip(request))
    if isinstance(network, ipaddress.IPv6Network):
        return str(network.network_address)
    return str(network) if network is not None else None
