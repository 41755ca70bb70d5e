"""The node rule set text: kube-proxy's nftables shape, checked piece by piece."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from labkit.proxy import ServicePortView, ServiceView, render_node_ruleset
from labkit.proxy.views import Endpoint
from labkit.proxy.ruleset import plan_node_ruleset

POD_CIDR = "10.244.0.0/16"


def view(name, ip, ports, **kw) -> ServiceView:
    return ServiceView(namespace="default", name=name, type=kw.pop("type", "ClusterIP"), cluster_ip=ip,
                       ports=tuple(ports), **kw)


def port(number, endpoints, protocol="TCP", name=None, node_port=None) -> ServicePortView:
    return ServicePortView(
        name=name, protocol=protocol, port=number, target_port=number, node_port=node_port,
        endpoints=tuple(Endpoint(ip=ip, port=p, pod=f"default/{ip}") for ip, p in endpoints),
    )


WEB = view("web", "10.96.0.20", [port(80, [("10.244.0.2", 8080), ("10.244.1.3", 8080), ("10.244.2.4", 8080)],
                                      name="http", node_port=30080)], type="NodePort")
DNS = view("dns", "10.96.0.10", [port(53, [("10.244.0.7", 53)], protocol="UDP", name="dns")])
STICKY = view("sticky", "10.96.0.30", [port(80, [("10.244.0.2", 80), ("10.244.0.3", 80)])],
              session_affinity="ClientIP", affinity_timeout=600)
EMPTY = view("empty", "10.96.0.40", [port(80, [], node_port=30040)], type="NodePort")
HEADLESS = view("db", None, [port(5432, [("10.244.0.9", 5432)])], headless=True)
EXTERNAL = view("ext", None, [], type="ExternalName", external_name="example.com")
ALL = [WEB, DNS, STICKY, EMPTY, HEADLESS, EXTERNAL]


@pytest.fixture(scope="module")
def text() -> str:
    return render_node_ruleset(ALL, pod_cidr=POD_CIDR)


def chain(text: str, name_prefix: str, comments: bool = False) -> str:
    """A chain's body; without the rules' comments unless asked (they are checked on their own)."""
    match = re.search(rf"\n\tchain ({re.escape(name_prefix)}[^ ]*) {{\n(.*?)\n\t}}\n", text, re.S)
    assert match, f"no chain {name_prefix}"
    return match.group(2) if comments else re.sub(r' comment "[^"]*"$', "", match.group(2), flags=re.M)


def elements(text: str, map_name: str) -> list[str]:
    match = re.search(rf"\n\t(?:map|set) {map_name} {{\n(.*?)\n\t}}\n", text, re.S)
    assert match, f"no map {map_name}"
    body = re.search(r"elements = {(.*?)}", match.group(1), re.S)
    return [e.strip() for e in body.group(1).split(",") if e.strip()] if body else []


def test_replaces_its_table_atomically(text):
    assert text.startswith("table ip labkit-proxy {\n}\ndelete table ip labkit-proxy\ntable ip labkit-proxy {\n")
    assert text.count("delete table") == 1


def test_service_ips_map_has_one_element_per_served_port(text):
    items = elements(text, "service-ips")
    assert [i.split(" : goto ")[0] for i in items] == [
        "10.96.0.10 . udp . 53", "10.96.0.30 . tcp . 80", "10.96.0.20 . tcp . 80",
    ]
    for item in items:
        target = item.split(" : goto ")[1]
        assert f"\n\tchain {target} {{\n" in text
    assert "10.244.0.9" not in text  # headless: DNS only, no rules
    assert "example.com" not in text


def test_hooks_and_masquerade(text):
    assert "type nat hook prerouting priority dstnat; policy accept;\n\t\tjump services" in text
    text = re.sub(r' comment "[^"]*"$', "", text, flags=re.M)
    assert "type nat hook output priority -100; policy accept;\n\t\tjump services" in text
    assert "type nat hook postrouting priority srcnat; policy accept;\n\t\tjump masquerading" in text
    assert chain(text, "masquerading") == (
        "\t\tmeta mark & 0x4000 == 0 return\n\t\tmeta mark set meta mark ^ 0x4000\n\t\tmasquerade fully-random"
    )
    assert chain(text, "services").splitlines()[1].strip() == (
        "fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports"
    )


def test_service_chain_spreads_over_endpoints(text):
    body = chain(text, [c for c in re.findall(r"chain (service-\S+)", text) if "/web/" in c][0])
    lines = [line.strip() for line in body.splitlines()]
    assert lines[0] == (
        "ip daddr 10.96.0.20 meta l4proto tcp th dport 80 ip saddr != 10.244.0.0/16 jump mark-for-masquerade"
    )
    numgen = lines[1]
    assert numgen.startswith("numgen random mod 3 vmap { 0 : goto endpoint-")
    targets = re.findall(r"goto (\S+?)[,} ]", numgen)
    assert [t.rsplit("__", 1)[1] for t in targets] == ["10.244.0.2/8080", "10.244.1.3/8080", "10.244.2.4/8080"]
    for target in targets:
        ip = target.rsplit("__", 1)[1].split("/")[0]
        assert [x.strip() for x in chain(text, target).splitlines()] == [
            f"ip saddr {ip} jump mark-for-masquerade",  # hairpin
            f"meta l4proto tcp dnat to {ip}:8080",
        ]


def test_node_ports_go_through_an_external_chain_that_masquerades(text):
    (item,) = [i for i in elements(text, "service-nodeports")]
    assert item.startswith("tcp . 30080 : goto external-")
    external = item.split(" : goto ")[1]
    assert [x.strip() for x in chain(text, external).splitlines()] == [
        "jump mark-for-masquerade", f"goto {external.replace('external-', 'service-', 1)}",
    ]


def local_view(endpoint_nodes: list[str]) -> ServiceView:
    eps = tuple(Endpoint(ip=f"10.244.{i}.9", port=8080, pod=f"default/e{i}", node=node)
                for i, node in enumerate(endpoint_nodes))
    return view("echo", "10.96.0.50", [ServicePortView(name="http", protocol="TCP", port=8080, target_port=8080,
                                                       node_port=30090, endpoints=eps)],
                type="NodePort", external_traffic_policy="Local")


def test_external_traffic_policy_local_serves_outside_clients_from_local_endpoints_only():
    svc = local_view(["n1", "n2", "n1"])
    text = render_node_ruleset([svc], pod_cidr=POD_CIDR, node_name="n1")
    plan = plan_node_ruleset([svc], pod_cidr=POD_CIDR, node_name="n1")
    (c,) = plan.chains
    assert [e.ip for e in c.local_endpoints] == ["10.244.0.9", "10.244.2.9"]
    body = [x.strip() for x in chain(text, c.external_chain).splitlines() if not x.strip().startswith("#")]
    assert body == [
        f"ip saddr {POD_CIDR} jump mark-for-masquerade", f"ip saddr {POD_CIDR} goto {c.name}",
        "fib saddr type local jump mark-for-masquerade", f"fib saddr type local goto {c.name}",
        f"numgen random mod 2 vmap {{ 0 : goto {c.local_endpoints[0].name}, 1 : goto {c.local_endpoints[1].name} }}",
    ]  # outside clients: no mark, so no masquerade: the pod sees their address
    elsewhere = render_node_ruleset([svc], pod_cidr=POD_CIDR, node_name="n3")
    last = chain(elsewhere, c.external_chain, comments=True).splitlines()[-1].strip()
    assert last == ('drop comment "nodePort 30090/tcp of service default/echo:8080: no local endpoints '
                    '(externalTrafficPolicy: Local)"')
    assert "30090" not in " ".join(elements(elsewhere, "no-endpoint-nodeports"))  # pods still get served


def test_services_without_endpoints_are_rejected(text):
    assert elements(text, "no-endpoint-services") == ["10.96.0.40 . tcp . 80 : goto reject-chain"]
    assert elements(text, "no-endpoint-nodeports") == ["tcp . 30040 : goto reject-chain"]
    assert "10.96.0.40 . tcp . 80 : goto service" not in text
    assert [x.strip() for x in chain(text, "reject-chain").splitlines()] == [
        "meta l4proto tcp reject with tcp reset", "reject with icmp type port-unreachable",
    ]
    assert "type filter hook prerouting priority dstnat - 10; policy accept;\n\t\tct state new jump " \
        "service-endpoints-check" in text
    assert "type filter hook output priority -110; policy accept;\n\t\tct state new jump " \
        "service-endpoints-check" in text


def test_client_ip_affinity(text):
    name = [c for c in re.findall(r"chain (service-\S+)", text) if "/sticky/" in c][0]
    lines = [x.strip() for x in chain(text, name).splitlines()]
    endpoints = re.findall(r"goto (endpoint-\S+?)[,} ]", lines[-1])
    assert len(endpoints) == 2
    # Lookup first: a known client goes straight to its endpoint, before the random pick.
    assert lines[1:3] == [
        f"ip saddr @{e.replace('endpoint-', 'affinity-', 1)} goto {e}" for e in endpoints
    ]
    for e in endpoints:
        affinity = e.replace("endpoint-", "affinity-", 1)
        assert f"update @{affinity} {{ ip saddr }}" in chain(text, e)
        assert f"\tset {affinity} {{\n\t\ttype ipv4_addr\n\t\tflags dynamic,timeout\n\t\ttimeout 600s\n\t}}" in text
    assert text.count("flags dynamic,timeout") == 2


def test_udp_service(text):
    name = [c for c in re.findall(r"chain (endpoint-\S+)", text) if "/dns/" in c][0]
    assert "meta l4proto udp dnat to 10.244.0.7:53" in chain(text, name)


def test_node_ips_restrict_node_ports():
    text = render_node_ruleset([WEB], pod_cidr=POD_CIDR, node_ips=["172.31.0.2", "192.168.7.1"])
    assert elements(text, "nodeport-ips") == ["172.31.0.2", "192.168.7.1"]
    assert "ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports" in text
    assert "fib daddr" not in text


def test_names_are_nft_identifiers_and_stable():
    plan = plan_node_ruleset(ALL, pod_cidr=POD_CIDR)
    for c in plan.chains:
        for name in (c.name, c.external_chain, *(e.name for e in c.endpoints)):
            if name:
                assert re.fullmatch(r"[a-zA-Z][a-zA-Z0-9/_.\-]*", name) and len(name) < 256
    assert render_node_ruleset(list(reversed(ALL)), pod_cidr=POD_CIDR) == render_node_ruleset(
        ALL, pod_cidr=POD_CIDR
    )


def test_empty_cluster_renders_valid_skeleton():
    text = render_node_ruleset([], pod_cidr=POD_CIDR, table="lkt-test")
    assert "elements" not in text
    assert text.count("table ip lkt-test {") == 2


def test_only_addresses_reach_the_text():
    bad = view("web", "10.96.0.20", [port(80, [("10.244.0.2; flush ruleset", 80)])])
    with pytest.raises(ValueError):
        render_node_ruleset([bad], pod_cidr=POD_CIDR)
    with pytest.raises(ValueError):
        render_node_ruleset([WEB], pod_cidr="10.244.0.0/16 accept")


def test_nft_error_names_the_offending_line():
    from labkit.net.nft import explain_nft_error

    text = "table ip t {\n\tchain c {\n\t\tip daddr 10.0.0.300 accept\n\t}\n}\n"
    stderr = (
        "/dev/stdin:3:12-21: Error: Could not resolve hostname: Name or service not known\n"
        "\t\tip daddr 10.0.0.300 accept\n\t\t         ^^^^^^^^^^\n"
    )
    assert explain_nft_error(stderr, text) == (
        "Could not resolve hostname: Name or service not known (line 3: ip daddr 10.0.0.300 accept)"
    )
    assert explain_nft_error("", text) == "nft failed without a message"


def test_rules_name_the_service_endpoint_and_node_port_they_come_from(text):
    """labkit trace reports these comments: the rule that picked an endpoint, the DNAT, the NodePort."""
    dns, web = (plan_node_ruleset([svc], pod_cidr=POD_CIDR).chains[0].name for svc in (DNS, WEB))
    assert chain(text, dns, comments=True).splitlines()[-1].endswith('comment "service default/dns:53/udp"')
    assert chain(text, web, comments=True).splitlines()[-1].endswith('comment "service default/web:80/tcp"')
    endpoint = chain(text, "endpoint-", comments=True).splitlines()[-1].strip()
    assert re.fullmatch(r'meta l4proto \w+ dnat to ([\d.]+):(\d+) comment "endpoint default/\1 \1:\2"',
                        endpoint), endpoint
    external = chain(text, "external-", comments=True)
    assert 'jump mark-for-masquerade comment "nodePort 30080/tcp of service default/web:80"' in external
    assert 'masquerade fully-random comment "masquerade: marked by a service rule"' in text


# ---------------------------------------------------------------- dual-stack: one table per family

GOLDEN = Path(__file__).parent / "golden"
REGOLD = os.environ.get("LABKIT_REGOLD") == "1"
POD_CIDRS = ["10.244.0.0/16", "fd00:10:244::/56"]
NODE_IPS = ["172.31.0.2", "fd00:172:31::2"]


def endpoint(ip: str, port: int, pod: str, node: str = "n1") -> Endpoint:
    return Endpoint(ip=ip, port=port, pod=f"default/{pod}", node=node)


DUAL = ServiceView(
    namespace="default", name="dual", type="NodePort", cluster_ip="10.96.0.20",
    cluster_ips=("10.96.0.20", "fd00:10:96::14"), ip_family_policy="PreferDualStack",
    session_affinity="ClientIP", affinity_timeout=600,
    ports=(ServicePortView(name="http", protocol="TCP", port=80, target_port=8080, node_port=30080, endpoints=(
        endpoint("10.244.0.2", 8080, "a"), endpoint("10.244.1.3", 8080, "b", "n2"),
        endpoint("fd00:10:244::2", 8080, "a"), endpoint("fd00:10:244:1::3", 8080, "b", "n2"))),))
SIX = ServiceView(  # IPv6 only, a LoadBalancer with an IPv6 address, source ranges of both families, Local
    namespace="default", name="six", type="LoadBalancer", cluster_ip="fd00:10:96::30",
    external_traffic_policy="Local", load_balancer={"ip": "fd00:198:51::10"},
    source_ranges=("10.0.0.0/8", "fd00:1::/64"), external_ips=("192.0.2.9", "fd00:192::9"),
    ports=(ServicePortView(name=None, protocol="UDP", port=53, target_port=53, node_port=30053,
                           endpoints=(endpoint("fd00:10:244::7", 53, "d"),)),))
FOUR = view("four", "10.96.0.50", [port(80, [("10.244.0.2", 8080)], node_port=30050)], type="NodePort")
NO_ENDPOINTS = ServiceView(
    namespace="default", name="empty", type="NodePort", cluster_ip="fd00:10:96::40",
    cluster_ips=("fd00:10:96::40", "10.96.0.40"),
    ports=(ServicePortView(name=None, protocol="TCP", port=80, target_port=80, node_port=30040),))
DUAL_ALL = [DUAL, SIX, FOUR, NO_ENDPOINTS, HEADLESS, EXTERNAL]


def golden(name: str, text: str) -> str:
    path = GOLDEN / name
    if REGOLD:
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    return path.read_text()


def test_ipv4_only_text_is_the_golden_one():
    """IPv4-only clusters keep their one `table ip` byte for byte (the golden predates dual-stack)."""
    lb = view("lb", "10.96.0.60", [port(80, [("10.244.0.2", 80)], node_port=30060)], type="LoadBalancer",
              load_balancer={"ip": "198.51.100.10"}, external_ips=("192.0.2.7",), source_ranges=("203.0.113.0/24",))
    text = render_node_ruleset([*ALL, lb], pod_cidr=POD_CIDR, node_ips=["172.31.0.2"], node_name="n1")
    assert text == golden("kube-proxy-ipv4.nft", text)
    assert "ip6" not in text


def test_dual_stack_text_is_the_golden_one():
    text = render_node_ruleset(DUAL_ALL, pod_cidr=POD_CIDRS, node_ips=NODE_IPS, node_name="n1")
    assert text == golden("kube-proxy-dualstack.nft", text)


def tables(text: str) -> dict[str, str]:
    """{"ip": body, "ip6": body} of the final table of each family in the text."""
    found = re.finditer(r"^table (ip6?) labkit-proxy {\n(\t.*?)^}\n", text, re.S | re.M)
    return {m.group(1): m.group(2) for m in found}


def test_one_table_per_family_each_with_its_own_addresses():
    text = render_node_ruleset(DUAL_ALL, pod_cidr=POD_CIDRS, node_ips=NODE_IPS, node_name="n1")
    assert text.count("delete table ip labkit-proxy\n") == 1 and text.count("delete table ip6 labkit-proxy\n") == 1
    v4, v6 = (tables(text)[f] for f in ("ip", "ip6"))
    assert elements("\n" + v4, "service-ips") == [
        f"10.96.0.20 . tcp . 80 : goto {chain_name(v4, 'default/dual')}",
        f"10.96.0.50 . tcp . 80 : goto {chain_name(v4, 'default/four')}"]
    assert elements("\n" + v6, "service-ips") == [
        f"fd00:10:96::14 . tcp . 80 : goto {chain_name(v6, 'default/dual')}",
        f"fd00:10:96::30 . udp . 53 : goto {chain_name(v6, 'default/six')}",
        f"fd00:198:51::10 . udp . 53 : goto firewall-{chain_name(v6, 'default/six')[len('service-'):]}",
        f"fd00:192::9 . udp . 53 : goto firewall-{chain_name(v6, 'default/six')[len('service-'):]}"]
    # NodePorts: a family's table serves the Services with a ClusterIP of that family, on its node address
    assert [e.split(" :")[0] for e in elements("\n" + v4, "service-nodeports")] == ["tcp . 30080", "tcp . 30050"]
    assert [e.split(" :")[0] for e in elements("\n" + v6, "service-nodeports")] == ["tcp . 30080", "udp . 30053"]
    assert elements("\n" + v4, "nodeport-ips") == ["172.31.0.2"]
    assert elements("\n" + v6, "nodeport-ips") == ["fd00:172:31::2"]
    # no endpoints: rejected in both families, ICMPv6 in the IPv6 table
    assert elements("\n" + v4, "no-endpoint-services") == ["10.96.0.40 . tcp . 80 : goto reject-chain"]
    assert elements("\n" + v6, "no-endpoint-services") == ["fd00:10:96::40 . tcp . 80 : goto reject-chain"]
    assert "reject with icmpv6 type port-unreachable" in v6 and "reject with icmp type" in v4
    # source ranges: only the family's own (kube-proxy ignores the other family's)
    assert "ip6 saddr { fd00:1::/64 } goto external-" in v6 and "10.0.0.0/8" not in text
    # masquerade decisions use the family's pod CIDR
    assert "ip6 saddr != fd00:10:244::/56 jump mark-for-masquerade" in v6
    assert "ip saddr != 10.244.0.0/16 jump mark-for-masquerade" in v4
    assert "fd00" not in v4 and not re.search(r"\b10\.\d+\.\d+\.\d+\b", v6)


def chain_name(table: str, service: str) -> str:
    return re.search(rf"\tchain (service-\w+-{re.escape(service)}/[^ ]+) {{", table).group(1)


def test_affinity_dnat_and_hairpin_per_family():
    v6 = tables(render_node_ruleset([DUAL], pod_cidr=POD_CIDRS))["ip6"]
    plan = plan_node_ruleset([DUAL], pod_cidr=POD_CIDRS, family=6)
    (c,) = plan.chains
    assert [e.ip for e in c.endpoints] == ["fd00:10:244::2", "fd00:10:244:1::3"]
    first = c.endpoints[0]
    assert first.name == f"{first.name.split('__')[0]}__fd00.10.244..2/8080"  # no ':' in an nft name
    body = chain("\n" + v6, first.name, comments=True)
    assert [x.strip() for x in body.splitlines()] == [
        "ip6 saddr fd00:10:244::2 jump mark-for-masquerade",
        f"update @{first.affinity_set} {{ ip6 saddr }}",
        'meta l4proto tcp dnat to [fd00:10:244::2]:8080 comment "endpoint default/a [fd00:10:244::2]:8080"']
    assert f"set {first.affinity_set} {{\n\t\ttype ipv6_addr\n\t\tflags dynamic,timeout\n\t\ttimeout 600s" in v6
    v4_plan = plan_node_ruleset([DUAL], pod_cidr=POD_CIDRS, family=4)
    assert {e.affinity_set for e in v4_plan.chains[0].endpoints}.isdisjoint({e.affinity_set for e in c.endpoints})


def test_ipv6_only_cluster_has_only_the_ip6_table():
    text = render_node_ruleset([SIX, FOUR], pod_cidr="fd00:10:244::/56", node_ips=NODE_IPS)
    assert "table ip labkit-proxy" not in text and text.count("table ip6 labkit-proxy {") == 2
    assert "10.96.0.50" not in text and "172.31.0.2" not in text


def test_family_values_are_checked_before_they_reach_the_text():
    with pytest.raises(ValueError):
        render_node_ruleset([DUAL], pod_cidr=["10.244.0.0/16", "10.245.0.0/16"])
    with pytest.raises(ValueError):
        render_node_ruleset([DUAL], pod_cidr=POD_CIDRS, node_ips=["fd00::1; flush ruleset"])
    bad = DUAL.model_copy(update={"cluster_ips": ("10.96.0.20", "fd00::zz")})
    with pytest.raises(ValueError):
        render_node_ruleset([bad], pod_cidr=POD_CIDRS)
