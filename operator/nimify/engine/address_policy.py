"""Which addresses a model download may connect to: the networks refused after DNS resolution (SSRF).

A model URI is user input that makes the conversion Job send requests from inside the cluster. Pointed at a
cloud metadata service (169.254.169.254, fd00:ec2::254) it would hand the node's credentials to whoever wrote
the NimService, so every connection the fetcher opens, redirects included, resolves the host first, refuses
the request when any address falls in a denied network, and connects to the very address it checked (a
second lookup could answer differently: DNS rebinding).

Defaults (the operator's `modelUriDeniedRanges` setting replaces them):
- link-local: 169.254.0.0/16 and fe80::/10, where AWS, GCP, Azure, OpenStack, Oracle and DigitalOcean serve
  instance metadata and ECS/EKS serve task and pod credentials (169.254.170.2, 169.254.170.23);
- fd00:ec2::254/128 and fd00:ec2::23/128: AWS's IPv6 instance metadata and EKS Pod Identity endpoints;
- 100.100.100.200/32: Alibaba Cloud's metadata service;
- 0.0.0.0/8 and ::/128: "this host" addresses, which Linux connects to the local machine.

Loopback and private ranges are allowed by default: a conversion pod's loopback is its own network namespace
(a pod of one container), and in-cluster mirrors (MinIO, Artifactory, a Service IP) live in private ranges.
Clusters with sidecars listening on loopback (a service mesh) or with sensitive private endpoints add
127.0.0.0/8, ::1/128, 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16 or fc00::/7 to the setting.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from nimify.model.errors import ModelError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
# socket.getaddrinfo's shape: (host, port, family, type) -> [(family, type, proto, canonname, sockaddr)]
Resolver = Callable[[str, int, int, int], Sequence[tuple[Any, ...]]]

DEFAULT_DENIED_RANGES: tuple[str, ...] = (
    "169.254.0.0/16",
    "fe80::/10",
    "fd00:ec2::254/128",
    "fd00:ec2::23/128",
    "100.100.100.200/32",
    "0.0.0.0/8",
    "::/128",
)
#: The environment variable that carries the setting into `nimify convert` (a JSON list or comma-separated).
DENIED_RANGES_ENV = "NIMIFY_MODEL_URI_DENIED_RANGES"

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def parse_networks(ranges: Iterable[str]) -> tuple[Network, ...]:
    """CIDR ranges (a bare address is its own /32 or /128); a ValueError names the entry that is not one."""
    networks = []
    for text in ranges:
        try:
            networks.append(ipaddress.ip_network(text.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{text!r} is not an IP address range (CIDR, e.g. 169.254.0.0/16)") from None
    return tuple(networks)


def _embedded_ipv4(address: Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one stands for (::ffff:a.b.c.d, 6to4, NAT64), which is where it goes."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


@dataclass(frozen=True)
class AddressPolicy:
    denied: tuple[Network, ...] = field(default_factory=lambda: parse_networks(DEFAULT_DENIED_RANGES))

    @classmethod
    def from_setting(cls, value: str | None) -> AddressPolicy:
        """The policy a NIMIFY_MODEL_URI_DENIED_RANGES value asks for; the defaults when unset, none when
        empty (`[]`)."""
        if value is None:
            return cls()
        text = value.strip()
        try:
            entries = json.loads(text) if text.startswith("[") else [e for e in text.split(",") if e.strip()]
            if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
                raise ValueError("expected a JSON list of strings")
            return cls(parse_networks(entries))
        except ValueError as error:
            raise ModelError("InvalidSetting", f"{DENIED_RANGES_ENV}: {error}") from None

    def denying(self, address: Address) -> Network | None:
        """The denied network `address` is in (its IPv4 form too, for v4-in-v6 addresses), or None."""
        candidates: list[Address] = [address]
        if (v4 := _embedded_ipv4(address)) is not None:
            candidates.append(v4)
        for candidate in candidates:
            for network in self.denied:
                if candidate.version == network.version and candidate in network:
                    return network
        return None

    def allowed_addresses(self, host: str, port: int, resolver: Resolver | None = None) -> list[str]:
        """Every address `host` resolves to, once none of them is denied; FetchAddressDenied otherwise.

        All of them are checked, not just the first: a name answering with one public and one metadata
        address would otherwise be a coin toss.
        """
        try:
            literal: Address | None = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            literal = None
        if literal is not None:
            addresses = [literal]
        else:
            try:
                infos = (resolver or socket.getaddrinfo)(host, port, 0, socket.SOCK_STREAM)
            except OSError as error:
                raise ModelError("FetchFailed", f"cannot resolve {host}: {error}") from None
            addresses = []
            for info in infos:
                # sockaddr's first item; an IPv6 scope ("fe80::1%eth0") is not part of the address.
                parsed = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
                if parsed not in addresses:
                    addresses.append(parsed)
        for address in addresses:
            if (network := self.denying(address)) is not None:
                shown = host if literal is not None else f"{host} resolves to {address}, which"
                raise ModelError(
                    "FetchAddressDenied",
                    f"{shown} is in the denied range {network} (the operator's modelUriDeniedRanges: "
                    "model downloads never reach metadata or other refused addresses)",
                )
        return [str(address) for address in addresses]


def policy_from_environment() -> AddressPolicy:
    """The policy `nimify convert` runs under: NIMIFY_MODEL_URI_DENIED_RANGES (the operator sets it in the
    conversion Job from its modelUriDeniedRanges setting), else the defaults."""
    return AddressPolicy.from_setting(os.environ.get(DENIED_RANGES_ENV))
