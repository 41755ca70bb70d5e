"""Phases `nodes`, `links`, `addresses and routes`, `host access` and `exec`: the lab's nodes and wires."""

from __future__ import annotations

from typing import TYPE_CHECKING

from labkit.errors import LabkitError
from labkit.net import netns, wiring
from labkit.runtime import NodeSpec
from labkit.topology.plan import Plan

if TYPE_CHECKING:
    from labkit.phases.build import Build


def _hosts_file(plan: Plan) -> str:
    """Every node by name, per family: its mgmt address, else its first link address of that family
    (an IPv4-only lab's file is as it always was; IPv6 lines come with IPv6 addresses)."""
    lines = ["127.0.0.1\tlocalhost"]
    ipv6 = any(node.has_ipv6 for node in plan.nodes)
    if ipv6:
        lines.append("::1\tlocalhost ip6-localhost ip6-loopback")
    for node in plan.nodes:
        links = [a for i in node.interfaces for a in i.addresses]
        for family, mgmt in ((4, node.mgmt_ipv4), (6, node.mgmt_ipv6)):
            address = mgmt or next((a for a in links if a.version == family), None)
            if address is not None:
                lines.append(f"{address.ip}\t{node.name}")
    return "\n".join(lines) + "\n"


def _resolv_conf(plan: Plan) -> str:
    """Nodes resolve each other from their hosts file; with no DNS server in the lab, fail fast, not in 5 s."""
    if plan.cluster:
        return f"nameserver {plan.cluster.dns_ip}\nsearch {plan.cluster.domain}\noptions timeout:1 attempts:2\n"
    return f"# lab {plan.lab}: names come from /etc/hosts; there is no DNS server\noptions timeout:1 attempts:1\n"


def create_nodes(b: Build) -> None:
    plan = b.plan
    hosts, resolv_conf = _hosts_file(plan), _resolv_conf(plan)
    specs = [NodeSpec(name=n.name, kind=n.kind, netns=n.netns, image=n.image, hostname=n.name,
                      hosts=hosts + "".join(f"{ip}\t{name}\n" for name, ip in n.hosts),  # the node's `hosts:`
                      resolv_conf=resolv_conf, container=n.container) for n in plan.nodes]
    if plan.mgmt:
        netns.create_namespaces([plan.mgmt.netns])
    b.sandboxes = {s.name: s for s in b.runtime.create_nodes(plan.lab, specs)}


def create_links(b: Build) -> None:
    wiring.create_links(b.plan, _netns_paths(b))


def configure_nodes(b: Build) -> None:
    wiring.configure_nodes(b.plan, _netns_paths(b))


def connect_host(b: Build) -> None:
    assert b.plan.mgmt is not None
    wiring.connect_host(b.plan.mgmt)


def _netns_paths(b: Build) -> dict[str, str]:
    return {name: sandbox.netns_path for name, sandbox in b.sandboxes.items()}


def run_exec(b: Build) -> None:
    for node in b.plan.nodes:
        for argv in node.exec:
            code, output = b.runtime.exec(b.sandboxes[node.name], argv, capture=True)
            if code != 0:
                raise LabkitError(f"node {node.name}: exec {' '.join(argv)!r} exited with {code}: {output.strip()}")


def publish_ports(b: Build) -> None:
    """containerlab's `ports`: the lab's forwarder listens on each host port (labkit.runtime.portfwd)."""
    from labkit.runtime import portfwd

    forwards = [portfwd.Forward(ip, host_port, b.sandboxes[n.name].netns_path,
                                str(n.mgmt_ipv4.ip) if n.mgmt_ipv4 else "127.0.0.1", port,
                                f"node {n.name} port {port}")
                for n in b.plan.nodes for ip, host_port, port in (n.container.ports if n.container else ())]
    portfwd.start(b.plan.lab, forwards)
