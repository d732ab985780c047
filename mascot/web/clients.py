"""Which network address a request came from, honest about proxies: only the hops we were told to trust count.

A browser is a cookie, and cookies are free: dropping one makes a new browser. The address is what a person cannot
change as easily, so the GPU queue caps how many jobs one address may have waiting (see GenerationWorker), and the
store counts each network's mascots per day under a keyed hash of it (see AddressKeys), never the address itself.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from dataclasses import dataclass
from typing import Any

# One subscriber usually gets a whole IPv6 /64 (and can pick any address in it); an IPv4 address is one line, or one
# household or office behind NAT.
IPV6_NETWORK_PREFIX = 64
# Mixed into every hash so that a MAC made with the same secret for another purpose (the cookie's) never equals one.
ADDRESS_HASH_CONTEXT = b"mascot-network-v1:"


def client_address(http_request: Any, trusted_proxies: int = 0) -> str:
    """The client's address. With `trusted_proxies` = N (e.g. 1 on a Hugging Face Space), the address the outermost
    of our N proxies saw, from X-Forwarded-For; entries further left were written by the client and prove nothing."""
    headers = getattr(http_request, "headers", None) or {}
    forwarded = [hop.strip() for hop in str(headers.get("x-forwarded-for", "")).split(",") if hop.strip()]
    if trusted_proxies > 0 and forwarded:
        return without_port(forwarded[-min(trusted_proxies, len(forwarded))])
    client = getattr(http_request, "client", None)
    return str(getattr(client, "host", "") or "")


def without_port(hop: str) -> str:
    """An X-Forwarded-For entry without the port some load balancers add ("203.0.113.9:443", "[2001:db8::1]:443"):
    the same client on another connection must count as the same address."""
    if hop.startswith("["):
        return hop[1:].split("]", 1)[0]
    host, separator, port = hop.rpartition(":")
    if separator and "." in host and ":" not in host and port.isdigit():
        return host
    return hop


def network_of(address: str) -> str | None:
    """The network an address counts as: an IPv4 address itself, an IPv6 address's /64; None when it is no address."""
    try:
        parsed = ipaddress.ip_address(address.strip())
    except ValueError:
        return None
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        parsed = parsed.ipv4_mapped  # "::ffff:203.0.113.9" is how a dual-stack socket reports an IPv4 client
    if isinstance(parsed, ipaddress.IPv4Address):
        return str(parsed)
    return str(ipaddress.IPv6Network((parsed, IPV6_NETWORK_PREFIX), strict=False))


@dataclass(frozen=True)
class ClientNetwork:
    """The network a request came from, worked out once per request: `key` is what the GPU queue's per-network cap
    counts by, `address_hash` what the store's quotas, likes and reports count by (None: no readable address)."""

    key: str  # the network's keyed hash; an unreadable address as given; "": none known (not capped)
    address_hash: str | None


class AddressKeys:
    """Turns a client address into the hash the store keeps: HMAC-SHA256 of its network with the app's secret.

    Keyed, so that the database alone cannot be searched for a known address (IPv4 is small enough to try them all).
    """

    def __init__(self, secret: bytes) -> None:
        if not secret:
            raise ValueError("The address secret is empty.")
        self._secret = secret

    def address_hash(self, address: str) -> str | None:
        """64 hex digits for the address's network; None for an empty or unreadable address (no address quota)."""
        network = network_of(address)
        if network is None:
            return None
        return hmac.new(self._secret, ADDRESS_HASH_CONTEXT + network.encode("ascii"), hashlib.sha256).hexdigest()

    def network(self, address: str) -> ClientNetwork:
        """The client's network: an IPv6 /64 or an IPv4 address, one key for the queue and the store alike."""
        address_hash = self.address_hash(address)
        return ClientNetwork(key=address_hash or address.strip(), address_hash=address_hash)
