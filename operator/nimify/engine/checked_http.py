"""HTTP clients whose every connection obeys an AddressPolicy: the host is resolved, every address checked,
and the connection opened to an address that was checked.

The check sits in the network backend, below redirects and connection reuse, so a redirect to a metadata
address is refused exactly like a first request to it, and no second DNS lookup can answer differently. The
clients are httpx2's, the library huggingface_hub and lightkube use, so the Hub's downloads go through the
same check.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import httpcore2
import httpx2
from httpx2._utils import get_environment_proxies

from nimify.engine.address_policy import AddressPolicy


class CheckedBackend(httpcore2.NetworkBackend):
    """httpcore2's synchronous backend, connecting only to addresses the policy allows."""

    def __init__(self, policy: AddressPolicy, inner: httpcore2.NetworkBackend | None = None) -> None:
        self.policy = policy
        self.inner = inner or httpcore2.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.NetworkStream:
        last: Exception | None = None
        for address in self.policy.allowed_addresses(host, port):
            # TLS still verifies the certificate against `host`: httpcore2 passes the origin's name to
            # start_tls, not the address connected to.
            try:
                return self.inner.connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore2.ConnectError, httpcore2.ConnectTimeout) as error:
                last = error
        assert last is not None  # allowed_addresses returns at least one address or raises
        raise last

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore2.NetworkStream:
        raise httpcore2.ConnectError(f"unix socket {path}: model downloads use TCP only")

    def sleep(self, seconds: float) -> None:
        self.inner.sleep(seconds)


def checked_transport(policy: AddressPolicy, proxy: str | None = None) -> httpx2.HTTPTransport:
    transport = httpx2.HTTPTransport(proxy=proxy)
    # httpx2's transport takes no network backend; its pool (a ConnectionPool, or an HTTPProxy, which is one)
    # hands `_network_backend` to every connection it opens. tests/engine/test_fetch.py fails if that changes.
    pool: Any = transport._pool
    pool._network_backend = CheckedBackend(policy, pool._network_backend)
    return transport


def checked_client(policy: AddressPolicy, *, timeout: float | None, **options: Any) -> httpx2.Client:
    """A client following redirects, with HTTP(S)_PROXY/NO_PROXY honoured as httpx2 itself would.

    Through a proxy, the proxy's own address is what gets checked: the proxy resolves the model's host, so
    egress rules for it belong on the proxy. Certificates are verified against the system's roots, or
    SSL_CERT_FILE / SSL_CERT_DIR when set (a private mirror's CA).
    """
    mounts: dict[str, httpx2.BaseTransport | None] = {
        pattern: None if url is None else checked_transport(policy, proxy=url)
        for pattern, url in get_environment_proxies().items()
    }
    return httpx2.Client(
        transport=checked_transport(policy),
        mounts=mounts,
        timeout=timeout,
        follow_redirects=True,
        **options,
    )
