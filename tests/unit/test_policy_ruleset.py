"""The node's policy table as nft text: its shape, what is shared, and that it stays small. Pure.

That nft itself accepts these texts (`nft -c`, which needs root) is checked in
tests/integration/test_policy_nft.py.
"""

from __future__ import annotations

import re

import pytest

from labkit.k8s import parse_manifests
from labkit.policy import compile_node_policy, plan_policy_table, render_node_policies
from labkit.policy.ruleset import delete_table_text


def cluster(pod_count: int, policies: str) -> str:
    docs = ["apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {ns: shop}}\n"]
    for i in range(pod_count):
        role = "front" if i % 2 else "back"
        docs.append(f"""apiVersion: v1
kind: Pod
metadata: {{name: pod-{i}, namespace: shop, labels: {{role: {role}, i: "{i}"}}}}
spec: {{containers: [{{name: c, ports: [{{name: http, containerPort: {8000 + i}}}]}}]}}
""")
    return "---\n".join(docs) + "---\n" + policies


POLICIES = """apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: backends, namespace: shop}
spec:
  podSelector: {matchLabels: {role: back}}
  ingress:
    - from: [{podSelector: {matchLabels: {role: front}}}, {ipBlock: {cidr: 172.16.0.0/12, except: [172.16.5.0/24]}}]
      ports: [{port: http}, {port: 9000, endPort: 9100}, {port: 53, protocol: UDP}]
    - {}
  egress:
    - to: [{podSelector: {}}]
      ports: [{port: http}]
    - to: [{namespaceSelector: {matchLabels: {ns: shop}}}]
    - ports: [{port: 53, protocol: UDP}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-fronts, namespace: shop}
spec: {podSelector: {matchLabels: {role: front}}, policyTypes: [Ingress, Egress]}
"""


def render(pod_count: int = 6, policies: str = POLICIES, node: str = "n1", table: str = "labkit-policy"):
    w = parse_manifests(cluster(pod_count, policies), "t.yaml")
    ips = {f"shop/pod-{i}": f"10.244.{i % 2}.{10 + i}" for i in range(pod_count)}
    placement = {f"shop/pod-{i}": "n1" if i % 3 else "n2" for i in range(pod_count)}
    model = compile_node_policy(w, ips, node_name=node, pod_nodes=placement, node_ips=["192.168.0.1"])
    return model, render_node_policies(model, table)


def chain_body(text: str, prefix: str, pod: str = "") -> list[str]:
    name = rf"{re.escape(prefix)}[^ ]*{re.escape(pod)}" if pod else rf"{re.escape(prefix)}[^ ]*"
    match = re.search(rf"\tchain {name} {{\n(.*?)\n\t}}", text, re.S)
    assert match, f"no chain {prefix}"
    return [line.strip() for line in match.group(1).splitlines()]


def test_replaces_one_inet_table_atomically():
    _, text = render()
    assert text.startswith("table inet labkit-policy {\n}\ndelete table inet labkit-policy\n"
                           "table inet labkit-policy {\n")
    assert text.count("table inet labkit-policy {") == 2
    assert delete_table_text() == "table inet labkit-policy {\n}\ndelete table inet labkit-policy\n"
    assert "table inet lab1-policy {" in render(table="lab1-policy")[1]


def test_base_chains_hook_forward_and_input_not_output():
    _, text = render()
    assert chain_body(text, "forward") == [
        "type filter hook forward priority filter; policy accept;",
        "ct state established,related accept",
        "ip saddr vmap @egress-pods",
        "ip saddr @node-ips accept",
        "ip daddr vmap @ingress-pods",
    ]
    assert chain_body(text, "input")[-1] == "ip saddr vmap @egress-pods"
    assert "hook output" not in text
    assert "elements = { 192.168.0.1 }" in text


def test_a_chain_per_local_isolated_pod_and_direction_in_the_maps():
    model, text = render()
    local = ["shop/pod-1", "shop/pod-2", "shop/pod-4", "shop/pod-5"]  # i % 3 != 0
    assert [g.pod for g in model.ingress] == local
    assert [g.pod for g in model.egress] == local
    for guard in (*model.ingress, *model.egress):
        assert re.search(rf"\t\t\t{re.escape(guard.ip)} : jump {guard.direction}-\w+-{re.escape(guard.pod)},",
                         text)
    assert "shop/pod-0" not in text.split("chain forward")[1]  # pod-0 lives on n2


def test_peer_sets_are_per_rule_and_shared_by_the_pods_it_guards():
    _, text = render(pod_count=40)
    plan = plan_policy_table(render(pod_count=40)[0])
    # backends ingress[0] + egress[0] + egress[1]: one set each, whatever the number of pods
    assert [s.name.split("-", 2)[2] for s in plan.peer_sets] == [
        "shop/backends-ingress0", "shop/backends-egress1"]
    assert len(plan.destination_sets) == 1  # egress[0]'s named port, resolved per destination pod
    back_chains = [c for c in plan.chains if c.comment.startswith("ingress") and "backends" in c.comment]
    assert len(back_chains) == 13  # even pods on n1
    peer_set = plan.peer_sets[0].name
    assert text.count(f"@{peer_set} ") == 13
    # front pods collapse with the ipBlock minus its except into a handful of intervals
    assert "172.16.0.0/22, 172.16.4.0/24, 172.16.6.0/23" in text


def test_pod_chain_lines_follow_the_rules():
    _, text = render()
    back = chain_body(text, "ingress-", "/pod-2")
    assert back[0] == 'comment "ingress of shop/pod-2; policies shop/backends"'
    assert re.fullmatch(r"ip saddr @peers-\w+-shop/backends-ingress0 meta l4proto \. th dport "
                        r"\{ tcp \. 8002, tcp \. 9000-9100, udp \. 53 \} return comment \"shop/backends ingress\[0\]\"",
                        back[1]), back[1]
    assert back[2] == 'return comment "shop/backends ingress[1]"'
    assert back[-1] == ('counter drop comment "denied by NetworkPolicy shop/backends (ingress of shop/pod-2): '
                        'nothing allows it"')
    egress = chain_body(text, "egress-", "/pod-1")
    assert egress[0].startswith('comment "egress of shop/pod-1; policies shop/deny-fronts"')
    assert egress[1:] == ['counter drop comment "denied by NetworkPolicy shop/deny-fronts (egress of shop/pod-1): '
                          'nothing allows it"']


def test_egress_named_ports_become_a_destination_set():
    plan = plan_policy_table(render()[0])
    (named,) = plan.destination_sets
    assert named.elements == tuple(sorted(f"10.244.{i % 2}.{10 + i} . tcp . {8000 + i}" for i in range(6)))
    _, text = render()
    assert f"ip daddr . meta l4proto . th dport @{named.name} return" in text


def test_no_policy_for_the_node_gives_an_empty_table():
    model, text = render(policies=POLICIES.replace("role: back}}\n  ingress", "role: none}}\n  ingress")
                         .replace("role: front}}, policyTypes", "role: none}}, policyTypes"))
    assert model.ingress == () and model.egress == ()
    assert "chain ingress-" not in text and "elements" not in text.split("set node-ips")[1].split("}")[1]


def test_long_names_stay_within_nft_limits():
    long_name = "p" * 200 + ".x" * 20
    text = POLICIES.replace("name: backends", f"name: {long_name}")
    plan = plan_policy_table(render(policies=text)[0])
    names = [s.name for s in plan.peer_sets] + [c.name for c in plan.chains]
    assert max(len(n) for n in names) < 100
    assert len({*names}) == len(names)
    assert all(len(c.comment) <= 120 for c in plan.chains)


def test_table_and_node_names_are_checked():
    model, _ = render()
    with pytest.raises(ValueError, match="table"):
        render_node_policies(model, 'x" drop')
    with pytest.raises(ValueError, match="node name"):
        plan_policy_table(render(node="n1")[0].__class__(node='n1"', node_ips=()))


# ---------------------------------------------------------------- both families

DUAL_POLICIES = POLICIES.replace(
    "except: [172.16.5.0/24]}}]",
    'except: [172.16.5.0/24]}}, {ipBlock: {cidr: "fd00:172:16::/48", except: ["fd00:172:16:5::/64"]}}]')


def render_dual(pod_count: int = 6, policies: str = DUAL_POLICIES, table: str = "labkit-policy", v4: bool = True):
    """The cluster of `render`, each pod with an IPv6 address too (or only, without `v4`)."""
    w = parse_manifests(cluster(pod_count, policies), "t.yaml")
    ips = {f"shop/pod-{i}": (f"10.244.{i % 2}.{10 + i}",) * v4 + (f"fd00:10:244:{i % 2}::{10 + i:x}",)
           for i in range(pod_count)}
    placement = {f"shop/pod-{i}": "n1" if i % 3 else "n2" for i in range(pod_count)}
    model = compile_node_policy(w, ips, node_name="n1", pod_nodes=placement,
                                node_ips=["192.168.0.1", "fd00:172:31::1"][1 - v4:])
    return model, render_node_policies(model, table)


ND = ("icmpv6 type { nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert, nd-redirect } "
      "accept comment \"neighbour discovery: never policy's to block\"")


def test_ipv4_only_tables_have_no_ipv6_parts():
    _, text = render()
    assert "ip6" not in text and "icmpv6" not in text and "ipv6_addr" not in text and "pods6" not in text


def test_dual_stack_base_chains_judge_both_families_after_neighbour_discovery():
    _, text = render_dual()
    assert chain_body(text, "forward") == [
        "type filter hook forward priority filter; policy accept;",
        "ct state established,related accept",
        ND,
        "ip saddr vmap @egress-pods",
        "ip saddr @node-ips accept",
        "ip daddr vmap @ingress-pods",
        "ip6 saddr vmap @egress-pods6",
        "ip6 saddr @node-ips6 accept",
        "ip6 daddr vmap @ingress-pods6",
    ]
    assert chain_body(text, "input")[1:] == ["ct state established,related accept", ND,
                                             "ip saddr vmap @egress-pods", "ip6 saddr vmap @egress-pods6"]
    assert "elements = { 192.168.0.1 }" in text and "elements = { fd00:172:31::1 }" in text


def test_both_addresses_of_a_pod_jump_to_its_one_chain():
    model, text = render_dual()
    for guard in (*model.ingress, *model.egress):
        v4, v6 = guard.ips
        for ip in (v4, v6):
            assert text.count(f"\t\t\t{ip} : jump {guard.direction}-") == 1
        (chain,) = re.findall(rf"\t\t\t{re.escape(v6)} : jump ({guard.direction}-\S+),", text)
        assert f"\t\t\t{v4} : jump {chain}," in text
    maps = text.split("map ingress-pods6 {")[1].split("}")[0]
    assert "type ipv6_addr : verdict" in maps and "10.244." not in maps


def test_peer_and_named_sets_per_family():
    plan = plan_policy_table(render_dual()[0])
    assert [(s.name.split("-", 2)[0], s.name.split("-", 2)[2], s.addr_type) for s in plan.peer_sets] == [
        ("peers", "shop/backends-ingress0", "ipv4_addr"), ("peers6", "shop/backends-ingress0", "ipv6_addr"),
        ("peers", "shop/backends-egress1", "ipv4_addr"), ("peers6", "shop/backends-egress1", "ipv6_addr")]
    v6 = plan.peer_sets[1]
    assert v6.elements[:3] == ("fd00:10:244:1::b/128", "fd00:10:244:1::d/128", "fd00:10:244:1::f/128")
    assert "fd00:172:16:4::/64" in v6.elements and "fd00:172:16:6::/63" in v6.elements  # :5::/64 excepted
    assert not any(e.startswith("fd00:172:16:5:") for e in v6.elements)
    assert [s.addr_type for s in plan.destination_sets] == ["ipv4_addr", "ipv6_addr"]
    assert "fd00:10:244::a . tcp . 8000" in plan.destination_sets[1].elements


def test_a_rule_line_per_family_that_has_peers():
    _, text = render_dual()
    back = chain_body(text, "ingress-", "/pod-2")
    assert back[1].startswith("ip saddr @peers-") and back[2].startswith("ip6 saddr @peers6-")
    assert back[1].split(" meta ")[1] == back[2].split(" meta ")[1]  # the same ports
    assert back[3] == 'return comment "shop/backends ingress[1]"'  # everyone: one line for both
    egress = chain_body(text, "egress-", "/pod-2")
    assert egress[1].startswith("ip daddr . meta l4proto . th dport @named-")
    assert egress[2].startswith("ip6 daddr . meta l4proto . th dport @named6-")
    # an IPv4-only ipBlock in a dual-stack cluster: no IPv6 line, so the rule allows IPv6 nothing
    _, only4 = render_dual(policies=POLICIES.replace("- from: [{podSelector: {matchLabels: {role: front}}}, ",
                                                     "- from: ["))
    back = chain_body(only4, "ingress-", "/pod-2")
    assert back[1].startswith("ip saddr @peers-") and back[2] == 'return comment "shop/backends ingress[1]"'
    assert not re.search(r"\tset peers6-\w+-shop/backends-ingress0 ", only4)


def test_ipv6_only_cluster():
    model, text = render_dual(v4=False)
    assert model.families == (6,)
    assert ("map ingress-pods {\n\t\ttype ipv4_addr : verdict\n"
            "\t\tcomment \"local pods isolated for ingress\"\n\t}") in text
    assert "fd00:10:244::c : jump ingress-" in text
    # pod peers have IPv6 addresses only; the IPv4 ipBlock keeps its (here useless) IPv4 set
    assert re.search(r"\tset peers6-\w+-shop/backends-egress1 ", text)
    assert not re.search(r"\tset peers-\w+-shop/backends-egress1 ", text)
    assert re.search(r"\tset peers-\w+-shop/backends-ingress0 ", text)
