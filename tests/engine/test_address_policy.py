"""The address policy: which resolved addresses a model download may connect to."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import pytest

from nimify.engine.address_policy import DEFAULT_DENIED_RANGES, AddressPolicy, parse_networks
from nimify.model.errors import ModelError


def resolver(*addresses: str) -> Any:
    def resolve(host: str, port: int, family: int, kind: int) -> list[tuple[Any, ...]]:
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, kind, 6, "", (a, port)) for a in addresses]

    return resolve


@pytest.mark.parametrize(
    "address",
    [
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, Oracle, DigitalOcean instance metadata
        "169.254.170.2",  # ECS task credentials
        "169.254.170.23",  # EKS Pod Identity
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "fd00:ec2::23",  # EKS Pod Identity over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "fe80::1",
        "0.0.0.0",
        "::",
        "::ffff:169.254.169.254",  # the same address, IPv4-mapped
        "64:ff9b::a9fe:a9fe",  # ... and through NAT64
        "2002:a9fe:a9fe::1",  # ... and 6to4
    ],
)
def test_metadata_and_link_local_addresses_are_denied_by_default(address: str) -> None:
    assert AddressPolicy().denying(ipaddress.ip_address(address)) is not None
    with pytest.raises(ModelError) as error:
        AddressPolicy().allowed_addresses(address, 80)
    assert error.value.reason == "FetchAddressDenied"


@pytest.mark.parametrize(
    "address", ["127.0.0.1", "::1", "10.0.0.7", "172.16.3.4", "192.168.1.1", "fc00::1", "8.8.8.8"]
)
def test_loopback_private_and_public_addresses_are_allowed_by_default(address: str) -> None:
    assert AddressPolicy().allowed_addresses(address, 443) == [address]


def test_every_resolved_address_is_checked() -> None:
    policy = AddressPolicy()
    with pytest.raises(ModelError) as error:
        policy.allowed_addresses("mirror.example", 443, resolver("93.184.216.34", "169.254.169.254"))
    assert "mirror.example resolves to 169.254.169.254" in error.value.message
    assert policy.allowed_addresses("mirror.example", 443, resolver("93.184.216.34", "10.1.2.3")) == [
        "93.184.216.34",
        "10.1.2.3",
    ]


def test_a_name_that_does_not_resolve() -> None:
    def fails(*_: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    with pytest.raises(ModelError) as error:
        AddressPolicy().allowed_addresses("nowhere.invalid", 443, fails)
    assert error.value.reason == "FetchFailed" and "nowhere.invalid" in error.value.message


def test_the_setting() -> None:
    assert AddressPolicy.from_setting(None) == AddressPolicy()
    assert AddressPolicy.from_setting("[]").denied == ()
    assert AddressPolicy.from_setting('["10.0.0.0/8", "::1"]').denied == parse_networks(["10.0.0.0/8", "::1"])
    assert AddressPolicy.from_setting("127.0.0.0/8, 169.254.0.0/16").denied == parse_networks(
        ["127.0.0.0/8", "169.254.0.0/16"]
    )
    with pytest.raises(ModelError) as error:
        AddressPolicy.from_setting('["10.0.0.0/8", "metadata"]')
    assert error.value.reason == "InvalidSetting" and "'metadata'" in error.value.message


def test_defaults_parse() -> None:
    assert len(parse_networks(DEFAULT_DENIED_RANGES)) == len(DEFAULT_DENIED_RANGES)
