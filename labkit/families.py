"""Address families as values: IPv4, IPv6, and the pairs dual-stack clusters are built from. Pure.

    family_of("fd00::1")                                    # 6
    parse_cidrs("10.244.0.0/16,fd00:10:244::/56")          # (IPv4Network(...), IPv6Network(...))
    host_port("fd00::1", 80)                                # "[fd00::1]:80"

A cluster's families are an ordered tuple, (4,), (6,), (4, 6) or (6, 4): the first is the
preferred one (kube-controller-manager's `--cluster-cidr=v4,v6` order), which decides a
Service's primary clusterIP, a pod's `status.podIP` and the DNS server pods ask first.
Code that handles addresses asks this module for the family instead of assuming IPv4.
The standard library's `ipaddress` does the parsing; this module only adds the pairs and
the `[addr]:port` form, which it has no helper for.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

Family = int  # 4 or 6
FAMILIES: tuple[Family, ...] = (4, 6)
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

_NAMES = {4: "IPv4", 6: "IPv6"}  # Kubernetes' spec.ipFamilies values
T = TypeVar("T")


def family_of(value: Any) -> Family:
    """4 or 6 for an address, network or interface, as an object or a string ("10.0.0.1/24" too)."""
    if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv4Network, ipaddress.IPv4Interface)):
        return 4
    if isinstance(value, (ipaddress.IPv6Address, ipaddress.IPv6Network, ipaddress.IPv6Interface)):
        return 6
    return ipaddress.ip_interface(str(value).strip("[]")).version


def is_ip(text: str, family: Family | None = None) -> bool:
    """Whether `text` is an IP address (of `family`, if given): "10.0.0.1", "fd00::1"; not a name or CIDR."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    return family is None or address.version == family


def family_name(family: Family) -> str:
    """Kubernetes' name of a family: 4 -> "IPv4"."""
    return _NAMES[family]


def family_number(name: str) -> Family:
    """The reverse of family_name; ValueError for anything but "IPv4" or "IPv6"."""
    for number, text in _NAMES.items():
        if text == name:
            return number
    raise ValueError(f"{name!r} is not an IP family: use IPv4 or IPv6")


def max_prefixlen(family: Family) -> int:
    return 32 if family == 4 else 128


def parse_cidrs(value: Any) -> tuple[IPNetwork, ...]:
    """One CIDR, or a dual-stack pair of different families, from "a", "a,b" or a list [a, b].

    The order is kept: the first network's family is the preferred one. A host address with
    host bits set ("10.244.0.1/16") is refused, as kube-controller-manager refuses it."""
    if isinstance(value, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        return (value,)
    if isinstance(value, str):
        items = [part.strip() for part in value.split(",")]
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        raise ValueError(f"should be a CIDR or a v4,v6 pair of CIDRs, got {value!r}")
    if not 1 <= len(items) <= 2:
        raise ValueError(f"one CIDR, or two (one IPv4 and one IPv6) for dual-stack; got {len(items)}")
    networks = []
    for item in items:
        try:
            networks.append(ipaddress.ip_network(str(item)))
        except ValueError as exc:
            raise ValueError(f"{item!r} is not a CIDR like 10.244.0.0/16 or fd00:10:244::/56: {exc}") from None
    if len(networks) == 2 and networks[0].version == networks[1].version:
        raise ValueError(f"a dual-stack pair is one IPv4 and one IPv6 CIDR, got two IPv{networks[0].version} "
                         f"ones ({networks[0]}, {networks[1]})")
    return tuple(networks)


def families_of(items: Iterable[Any]) -> tuple[Family, ...]:
    """The families of `items`, in order, each once."""
    seen: list[Family] = []
    for item in items:
        family = family_of(item)
        if family not in seen:
            seen.append(family)
    return tuple(seen)


def pick(items: Sequence[T], family: Family) -> T | None:
    """The first of `items` of `family`, or None."""
    return next((item for item in items if family_of(item) == family), None)


def host_port(ip: Any, port: int | str) -> str:
    """`10.0.0.1:80`, or `[fd00::1]:80` (RFC 3986's brackets, so the port cannot be read as a group)."""
    text = str(ip)
    return f"[{text}]:{port}" if ":" in text else f"{text}:{port}"


def nth_host(network: IPNetwork, n: int) -> IPAddress:
    """The n-th address of `network` (n=1: the first after the network address), as the API server
    numbers its service CIDR (`kubernetes` gets the 1st, kube-dns by convention the 10th)."""
    if n >= network.num_addresses:
        raise ValueError(f"{network} has no address number {n}")
    return network.network_address + n
