"""The client's address: X-Forwarded-For only as far as the proxies we were told to trust."""

from types import SimpleNamespace

from mascot.clients import client_address


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


def test_a_missing_header_or_request_gives_the_socket_address_or_nothing():
    assert client_address(request("203.0.113.9"), trusted_proxies=1) == "203.0.113.9"
    assert client_address(None) == ""
