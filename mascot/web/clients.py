"""Which network address a request came from, honest about proxies: only the hops we were told to trust count.

A browser is a cookie, and cookies are free: dropping one makes a new browser. The address is what a person cannot
change as easily, so the GPU queue caps how many jobs one address may have waiting (see GenerationWorker), and the
store counts each network's mascots per day under a keyed hash of it (see AddressKeys), never the address itself.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

# One subscriber usually gets a whole IPv6 /64 (and can pick any address in it); an IPv4 address is one line, or one
# household or office behind NAT.
IPV6_NETWORK_PREFIX = 64
# Mixed into every hash so that a MAC made with the same secret for another purpose (the cookie's) never equals one.
ADDRESS_HASH_CONTEXT = b"mascot-network-v1:"
BROWSER_HASH_CONTEXT = b"mascot-browser-v1:"  # one office: a browser counts where a network would (AddressKeys.browser)
UNREADABLE_NETWORK = "unreadable"  # every address that is no IP address shares this one network


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class ProxyTrust:
    """Which proxies' forwarded headers we believe: `hops` proxies in front of the app (1 on a Space), and only when
    the address talking to us is one of `networks` (MASCOT_PROXY_ADDRESSES). Anyone else who sends X-Forwarded-For
    or -Host wrote it themselves."""

    hops: int = 0
    networks: tuple[Network, ...] = ()

    @classmethod
    def parse(cls, hops: int, addresses: Iterable[str]) -> ProxyTrust:
        """From the settings: a hop count and proxy addresses or CIDR networks ("10.0.0.0/8", "2001:db8::1")."""
        if hops < 0:
            raise ValueError(f"MASCOT_TRUSTED_PROXIES must be 0 or more (got {hops}).")
        networks = []
        for text in addresses:
            try:
                networks.append(ipaddress.ip_network(text.strip(), strict=False))
            except ValueError:
                raise ValueError(
                    f"MASCOT_PROXY_ADDRESSES: {text.strip()!r} is not an IP address or a network such as 10.0.0.0/8."
                ) from None
        return cls(hops, tuple(networks))

    def trusts(self, address: str) -> bool:
        """Whether `address` is one of our proxies."""
        parsed = parsed_address(address)
        return self.hops > 0 and parsed is not None and any(parsed in network for network in self.networks)


def parsed_address(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An address as ipaddress reads it (an IPv4-mapped IPv6 address as IPv4); None for anything else."""
    try:
        parsed = ipaddress.ip_address(address.strip())
    except ValueError:
        return None
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        return parsed.ipv4_mapped
    return parsed


def peer_address(http_request: Any) -> str:
    """The address of whoever holds the connection: the client, or our proxy."""
    client = getattr(http_request, "client", None)
    return str(getattr(client, "host", "") or "")


def is_from_proxy(http_request: Any, proxies: ProxyTrust) -> bool:
    """Whether the request came through one of our proxies, so that its forwarded headers are theirs."""
    return proxies.trusts(peer_address(http_request))


def client_address(http_request: Any, proxies: ProxyTrust | None = None) -> str:
    """The client's address. Walking X-Forwarded-For from the right, starting at the connection's address: each
    address that is one of our proxies (at most `hops` of them) hands over to the entry it wrote. The first address
    that is no proxy of ours is the client; entries further left were written by the client and prove nothing. An
    entry that is no address ("unknown", garbage) ends the walk at the proxy that wrote it, so it cannot take a
    request out of the per-network caps."""
    proxies = proxies or ProxyTrust()
    headers = getattr(http_request, "headers", None) or {}
    forwarded = [hop.strip() for hop in str(headers.get("x-forwarded-for", "")).split(",") if hop.strip()]
    address = peer_address(http_request)
    for _ in range(proxies.hops):
        if not forwarded or not proxies.trusts(address):
            break
        written = without_port(forwarded.pop())
        if parsed_address(written) is None:
            break
        address = written
    return address


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
        """64 hex digits for the address's network; None for no address at all (a call without a request). An
        address that is no address ("unknown", garbage a proxy passed on) counts as one network of its own: it must
        not take a request out of the per-network caps."""
        if not address.strip():
            return None
        network = network_of(address) or UNREADABLE_NETWORK
        return hmac.new(self._secret, ADDRESS_HASH_CONTEXT + network.encode("ascii"), hashlib.sha256).hexdigest()

    def browser(self, token_hash: str) -> ClientNetwork:
        """A browser standing as a network of its own (settings.one_office: an office shares one address), keyed
        apart from every address so that the store's per-network counts count browsers."""
        key = hmac.new(self._secret, BROWSER_HASH_CONTEXT + token_hash.encode("utf-8"), hashlib.sha256).hexdigest()
        return ClientNetwork(key=key, address_hash=key)

    def network(self, address: str) -> ClientNetwork:
        """The client's network: an IPv6 /64 or an IPv4 address, one key for the queue and the store alike."""
        address_hash = self.address_hash(address)
        return ClientNetwork(key=address_hash or address.strip(), address_hash=address_hash)
