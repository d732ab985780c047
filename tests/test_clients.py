"""The client's address: X-Forwarded-For only as far as the proxies we were told to trust."""

import hashlib
import re
from types import SimpleNamespace

from mascot.web.clients import AddressKeys, client_address, network_of


def request(host: str, forwarded: str | None = None):
    headers = {"x-forwarded-for": forwarded} if forwarded is not None else {}
    return SimpleNamespace(client=SimpleNamespace(host=host), headers=headers)


def test_without_trusted_proxies_the_socket_address_counts_and_the_header_is_ignored():
    assert client_address(request("203.0.113.9", "198.51.100.1"), trusted_proxies=0) == "203.0.113.9"


def test_behind_one_proxy_the_address_it_saw_counts_not_what_the_client_wrote():
    # The client wrote "1.2.3.4" itself; our proxy appended the address it really saw.
    assert client_address(request("10.0.0.2", "1.2.3.4, 198.51.100.7"), trusted_proxies=1) == "198.51.100.7"


def test_behind_two_proxies_the_outer_ones_view_counts():
    assert client_address(request("10.0.0.2", "1.2.3.4, 198.51.100.7, 10.0.0.9"), trusted_proxies=2) == "198.51.100.7"


def test_a_port_a_load_balancer_adds_is_not_part_of_the_address():
    assert client_address(request("10.0.0.2", "203.0.113.9:51234"), trusted_proxies=1) == "203.0.113.9"
    assert client_address(request("10.0.0.2", "[2001:db8::7]:443"), trusted_proxies=1) == "2001:db8::7"
    assert client_address(request("10.0.0.2", "2001:db8::7"), trusted_proxies=1) == "2001:db8::7"


def test_a_missing_header_or_request_gives_the_socket_address_or_nothing():
    assert client_address(request("203.0.113.9"), trusted_proxies=1) == "203.0.113.9"
    assert client_address(None) == ""


def test_an_ipv4_address_is_its_own_network_and_an_ipv6_address_counts_by_its_64():
    assert network_of("203.0.113.9") == "203.0.113.9"
    assert network_of(" 203.0.113.9 ") == "203.0.113.9"
    assert network_of("2001:db8:aa:1:8c3e:12ff:fe34:5678") == network_of("2001:DB8:AA:1::1") == "2001:db8:aa:1::/64"
    assert network_of("2001:db8:aa:2::1") == "2001:db8:aa:2::/64"
    assert network_of("::ffff:203.0.113.9") == "203.0.113.9"  # IPv4 as a dual-stack socket reports it


def test_an_empty_or_unreadable_address_has_no_network():
    for address in ("", "unknown", "203.0.113.9:443", "300.1.2.3", "_hidden"):
        assert network_of(address) is None
        assert AddressKeys(b"k" * 40).address_hash(address) is None


def test_the_address_hash_is_keyed_and_never_shows_the_address():
    keys, other_keys = AddressKeys(b"k" * 40), AddressKeys(b"j" * 40)
    home = keys.address_hash("203.0.113.9")

    assert home is not None and re.fullmatch(r"[0-9a-f]{64}", home)
    assert home == keys.address_hash("::ffff:203.0.113.9") != keys.address_hash("203.0.113.10")
    assert home != other_keys.address_hash("203.0.113.9")  # without the secret, no list of addresses finds it
    assert home != hashlib.sha256(b"203.0.113.9").hexdigest()
    assert keys.address_hash("2001:db8:aa:1::1") == keys.address_hash("2001:db8:aa:1:ffff::2")
