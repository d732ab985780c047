"""The client's address: X-Forwarded-For only from, and as far as, the proxies we were told to trust."""

import hashlib
import re
from types import SimpleNamespace

import pytest

from mascot.web.clients import AddressKeys, ProxyTrust, client_address, network_of

PROXY = ProxyTrust.parse(1, ["10.0.0.0/8"])
TWO_PROXIES = ProxyTrust.parse(2, ["10.0.0.0/8"])


def request(host: str, forwarded: str | None = None):
    headers = {"x-forwarded-for": forwarded} if forwarded is not None else {}
    return SimpleNamespace(client=SimpleNamespace(host=host), headers=headers)


def test_without_trusted_proxies_the_socket_address_counts_and_the_header_is_ignored():
    assert client_address(request("203.0.113.9", "198.51.100.1"), ProxyTrust()) == "203.0.113.9"


def test_behind_one_proxy_the_address_it_saw_counts_not_what_the_client_wrote():
    # The client wrote "1.2.3.4" itself; our proxy appended the address it really saw.
    assert client_address(request("10.0.0.2", "1.2.3.4, 198.51.100.7"), PROXY) == "198.51.100.7"


def test_behind_two_proxies_the_outer_ones_view_counts():
    assert client_address(request("10.0.0.2", "1.2.3.4, 198.51.100.7, 10.0.0.9"), TWO_PROXIES) == "198.51.100.7"


def test_a_port_a_load_balancer_adds_is_not_part_of_the_address():
    assert client_address(request("10.0.0.2", "203.0.113.9:51234"), PROXY) == "203.0.113.9"
    assert client_address(request("10.0.0.2", "[2001:db8::7]:443"), PROXY) == "2001:db8::7"
    assert client_address(request("10.0.0.2", "2001:db8::7"), PROXY) == "2001:db8::7"


def test_a_missing_header_or_request_gives_the_socket_address_or_nothing():
    assert client_address(request("203.0.113.9"), PROXY) == "203.0.113.9"
    assert client_address(None) == ""


def test_a_client_that_is_no_proxy_of_ours_cannot_name_another_address():
    """MASCOT_TRUSTED_PROXIES=1 with nobody in front: a rotating X-Forwarded-For must not escape per-network caps."""
    for forwarded in ("198.51.100.1", "198.51.100.2", "unknown", "", "1.2.3.4, 5.6.7.8"):
        assert client_address(request("203.0.113.9", forwarded), PROXY) == "203.0.113.9"


def test_garbage_from_our_proxy_counts_as_the_proxys_own_address_never_as_no_address():
    for forwarded in ("unknown", "not an address", "<script>", "999.1.1.1", "_hidden"):
        assert client_address(request("10.0.0.2", forwarded), PROXY) == "10.0.0.2"


def test_the_outer_hop_must_be_our_proxy_too():
    # 203.0.113.66 wrote the last entry but is not one of ours: it is the client, whatever it claims further left.
    assert client_address(request("10.0.0.2", "198.51.100.7, 203.0.113.66"), TWO_PROXIES) == "203.0.113.66"


@pytest.mark.parametrize("addresses", [["not-a-network"], ["10.0.0.0/33"], ["unknown"]])
def test_a_bad_proxy_address_setting_is_refused_with_its_name(addresses):
    with pytest.raises(ValueError, match="MASCOT_PROXY_ADDRESSES"):
        ProxyTrust.parse(1, addresses)


def test_an_ipv4_address_is_its_own_network_and_an_ipv6_address_counts_by_its_64():
    assert network_of("203.0.113.9") == "203.0.113.9"
    assert network_of(" 203.0.113.9 ") == "203.0.113.9"
    assert network_of("2001:db8:aa:1:8c3e:12ff:fe34:5678") == network_of("2001:DB8:AA:1::1") == "2001:db8:aa:1::/64"
    assert network_of("2001:db8:aa:2::1") == "2001:db8:aa:2::/64"
    assert network_of("::ffff:203.0.113.9") == "203.0.113.9"  # IPv4 as a dual-stack socket reports it


def test_an_unreadable_address_has_no_network_but_all_of_them_share_one_capped_hash():
    """`unknown` or garbage must not remove the per-network caps: they count as one network together."""
    keys = AddressKeys(b"k" * 40)
    unreadable = {keys.address_hash(address) for address in ("unknown", "203.0.113.9:443", "300.1.2.3", "_hidden")}
    for address in ("unknown", "203.0.113.9:443", "300.1.2.3", "_hidden"):
        assert network_of(address) is None
    assert len(unreadable) == 1 and None not in unreadable
    assert keys.address_hash("") is None  # no request at all: a direct call


def test_the_address_hash_is_keyed_and_never_shows_the_address():
    keys, other_keys = AddressKeys(b"k" * 40), AddressKeys(b"j" * 40)
    home = keys.address_hash("203.0.113.9")

    assert home is not None and re.fullmatch(r"[0-9a-f]{64}", home)
    assert home == keys.address_hash("::ffff:203.0.113.9") != keys.address_hash("203.0.113.10")
    assert home != other_keys.address_hash("203.0.113.9")  # without the secret, no list of addresses finds it
    assert home != hashlib.sha256(b"203.0.113.9").hexdigest()
    assert keys.address_hash("2001:db8:aa:1::1") == keys.address_hash("2001:db8:aa:1:ffff::2")
