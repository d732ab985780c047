"""Which network address a request came from, honest about proxies: only the hops we were told to trust count.

A browser is a cookie, and cookies are free: dropping one makes a new browser. The address is what a person cannot
change as easily, so the GPU queue caps how many jobs one address may have waiting (see GenerationWorker).
"""

from __future__ import annotations

from typing import Any


def client_address(http_request: Any, trusted_proxies: int = 0) -> str:
    """The client's address. With `trusted_proxies` = N (e.g. 1 on a Hugging Face Space), the address the outermost
    of our N proxies saw, from X-Forwarded-For; entries further left were written by the client and prove nothing."""
    headers = getattr(http_request, "headers", None) or {}
    forwarded = [hop.strip() for hop in str(headers.get("x-forwarded-for", "")).split(",") if hop.strip()]
    if trusted_proxies > 0 and forwarded:
        return forwarded[-min(trusted_proxies, len(forwarded))]
    client = getattr(http_request, "client", None)
    return str(getattr(client, "host", "") or "")
