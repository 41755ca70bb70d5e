"""NetworkPolicy semantics on the compiled model: selectors, peers, ports, policy types. Pure."""

from __future__ import annotations

import ipaddress

import pytest

from labkit.k8s import parse_manifests
from labkit.k8s.models import LabelSelector
from labkit.policy import PortRange, compile_node_policy, selects

NAMESPACES = """
apiVersion: v1
kind: Namespace
metadata: {name: prod, labels: {env: prod, team: web}}
---
apiVersion: v1
kind: Namespace
metadata: {name: dev, labels: {env: dev}}
"""

# name, namespace, labels, node, ip, named ports
PODS = [
    ("web", "prod", {"app": "web", "tier": "front"}, "n1", "10.0.1.2", {"http": 8080}),
    ("api", "prod", {"app": "api"}, "n1", "10.0.1.3", {"http": 9090}),
    ("db", "prod", {"app": "db"}, "n2", "10.0.2.2", {}),
    ("web", "dev", {"app": "web"}, "n2", "10.0.2.3", {"http": 8000}),
    ("tool", "dev", {"app": "tool"}, "n1", "10.0.1.4", {}),
]
NODE_OF = {f"{ns}/{name}": node for name, ns, _, node, _, _ in PODS}
IPS = {f"{ns}/{name}": ip for name, ns, _, _, ip, _ in PODS}


def manifests(policies: str) -> str:
    docs = [NAMESPACES]
    for name, ns, labels, _, _, ports in PODS:
        port_list = ", ".join(f"{{name: {n}, containerPort: {p}}}" for n, p in ports.items())
        label_map = ", ".join(f"{k}: {v}" for k, v in labels.items())
        docs.append(f"""apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {ns}, labels: {{{label_map}}}}}
spec: {{containers: [{{name: c, ports: [{port_list}]}}]}}
""")
    return "---\n".join(docs) + ("---\n" + policies if policies else "")


def policy(namespace: str, spec: str, name: str = "p") -> str:
    return f"""apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: {name}, namespace: {namespace}}}
spec:
{spec}
"""


def node_model(policies: str, node: str = "n1", ips=None):
    w = parse_manifests(manifests(policies), "t.yaml")
    return compile_node_policy(w, IPS if ips is None else ips, node_name=node, pod_nodes=NODE_OF,
                               node_ips=["192.168.0.1"])


def allows(model, direction, pod, peer, protocol="tcp", port=80) -> bool:
    return model.allows(direction, IPS[pod], IPS.get(peer, peer), protocol, port)


# ---------------------------------------------------------------- selectors


def sel(**kw) -> LabelSelector:
    return LabelSelector.model_validate(kw)


@pytest.mark.parametrize(("selector", "labels", "expected"), [
    (sel(), {}, True),
    (sel(), {"a": "1"}, True),
    (sel(matchLabels={"a": "1"}), {"a": "1", "b": "2"}, True),
    (sel(matchLabels={"a": "1"}), {"a": "2"}, False),
    (sel(matchLabels={"a": "1"}), {}, False),
    (sel(matchExpressions=[{"key": "a", "operator": "In", "values": ["1", "2"]}]), {"a": "2"}, True),
    (sel(matchExpressions=[{"key": "a", "operator": "In", "values": ["1"]}]), {}, False),
    (sel(matchExpressions=[{"key": "a", "operator": "NotIn", "values": ["1"]}]), {"a": "2"}, True),
    (sel(matchExpressions=[{"key": "a", "operator": "NotIn", "values": ["1"]}]), {"a": "1"}, False),
    (sel(matchExpressions=[{"key": "a", "operator": "NotIn", "values": ["1"]}]), {}, True),
    (sel(matchExpressions=[{"key": "a", "operator": "Exists"}]), {"a": ""}, True),
    (sel(matchExpressions=[{"key": "a", "operator": "Exists"}]), {"b": "1"}, False),
    (sel(matchExpressions=[{"key": "a", "operator": "DoesNotExist"}]), {"b": "1"}, True),
    (sel(matchExpressions=[{"key": "a", "operator": "DoesNotExist"}]), {"a": "1"}, False),
    # every term must hold, and matchLabels with them
    (sel(matchLabels={"b": "1"}, matchExpressions=[{"key": "a", "operator": "Exists"}]), {"a": "x"}, False),
    (sel(matchLabels={"b": "1"}, matchExpressions=[{"key": "a", "operator": "Exists"},
                                                   {"key": "c", "operator": "DoesNotExist"}]),
     {"a": "x", "b": "1"}, True),
])
def test_selector(selector, labels, expected):
    assert selects(selector, labels) is expected


# ---------------------------------------------------------------- isolation and policy types


def test_no_policies_nothing_isolated():
    model = node_model("")
    assert model.ingress == () and model.egress == ()
    assert allows(model, "ingress", "prod/web", "dev/tool")


def test_only_pods_of_this_node_and_of_the_policy_namespace_are_guarded():
    model = node_model(policy("prod", "  podSelector: {}\n  policyTypes: [Ingress]"))
    assert [g.pod for g in model.ingress] == ["prod/web", "prod/api"]  # prod/db is on n2
    assert model.egress == ()
    assert node_model(policy("prod", "  podSelector: {}"), node="n2").ingress[0].pod == "prod/db"
    # dev/web has the label a prod policy selects on, but lives in another namespace
    other = node_model(policy("prod", "  podSelector: {matchLabels: {app: web}}"), node="n2")
    assert [g.pod for g in other.ingress] == []


def test_policy_types_default_like_the_api():
    ingress_only = node_model(policy("prod", "  podSelector: {}\n  ingress: [{}]"))
    assert ingress_only.egress == () and len(ingress_only.ingress) == 2
    with_egress = node_model(policy("prod", "  podSelector: {}\n  egress: [{to: [{podSelector: {}}]}]"))
    assert len(with_egress.egress) == 2
    # Ingress is always among the defaults: no ingress rules then means no ingress at all
    assert not allows(with_egress, "ingress", "prod/web", "prod/api")
    assert allows(with_egress, "egress", "prod/web", "prod/api")
    assert not allows(with_egress, "egress", "prod/web", "dev/tool")


def test_explicit_policy_types_win():
    egress_only = node_model(policy("prod", "  podSelector: {}\n  policyTypes: [Egress]"))
    assert egress_only.ingress == ()
    assert not allows(egress_only, "egress", "prod/web", "8.8.8.8")
    # egress rules under policyTypes [Ingress] are not enforced
    listed = node_model(policy("prod", "  podSelector: {}\n  policyTypes: [Ingress]\n"
                                       "  egress: [{to: [{podSelector: {}}]}]"))
    assert listed.egress == ()


def test_policies_add_up():
    text = (policy("prod", "  podSelector: {matchLabels: {app: web}}\n"
                           "  ingress: [{from: [{podSelector: {matchLabels: {app: api}}}]}]", "one")
            + "---\n" + policy("prod", "  podSelector: {}\n  ingress: [{from: [{namespaceSelector: "
                                       "{matchLabels: {env: dev}}, podSelector: {matchLabels: {app: tool}}}]}]",
                               "two"))
    model = node_model(text)
    web = model.isolated("ingress", IPS["prod/web"])
    assert web.policies == ("prod/one", "prod/two")
    assert allows(model, "ingress", "prod/web", "prod/api")
    assert allows(model, "ingress", "prod/web", "dev/tool")
    assert not allows(model, "ingress", "prod/web", "dev/web")
    assert allows(model, "ingress", "prod/api", "dev/tool")
    assert not allows(model, "ingress", "prod/api", "prod/web")


# ---------------------------------------------------------------- peers


def ingress_from(peers: str) -> str:
    return policy("prod", f"  podSelector: {{matchLabels: {{app: web}}}}\n  ingress: [{{from: {peers}}}]")


def peers_of(text: str) -> set[str]:
    guard = node_model(text).isolated("ingress", IPS["prod/web"])
    return {pod for pod, ip in IPS.items() if guard.allowed(ip, "tcp", 80)}


def test_pod_selector_alone_means_the_policy_namespace():
    assert peers_of(ingress_from("[{podSelector: {matchLabels: {app: web}}}]")) == {"prod/web"}
    assert peers_of(ingress_from("[{podSelector: {}}]")) == {"prod/web", "prod/api", "prod/db"}


def test_namespace_selector_alone_means_all_pods_there():
    assert peers_of(ingress_from("[{namespaceSelector: {matchLabels: {env: dev}}}]")) == {"dev/web", "dev/tool"}
    assert peers_of(ingress_from("[{namespaceSelector: {}}]")) == set(IPS)
    by_name = "[{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: dev}}}]"
    assert peers_of(ingress_from(by_name)) == {"dev/web", "dev/tool"}


def test_both_selectors_in_one_peer_are_and_in_two_peers_or():
    both = "[{namespaceSelector: {matchLabels: {env: dev}}, podSelector: {matchLabels: {app: web}}}]"
    assert peers_of(ingress_from(both)) == {"dev/web"}
    two = "[{namespaceSelector: {matchLabels: {env: dev}}}, {podSelector: {matchLabels: {app: web}}}]"
    assert peers_of(ingress_from(two)) == {"dev/web", "dev/tool", "prod/web"}


def test_match_expressions_in_namespace_selector():
    text = ingress_from("[{namespaceSelector: {matchExpressions: [{key: team, operator: DoesNotExist}]}}]")
    assert peers_of(text) == {"dev/web", "dev/tool"}
    text = ingress_from("[{namespaceSelector: {matchExpressions: [{key: env, operator: NotIn, values: [dev]}]},"
                        " podSelector: {matchExpressions: [{key: tier, operator: Exists}]}}]")
    assert peers_of(text) == {"prod/web"}


def test_ip_block_with_except():
    text = ingress_from("[{ipBlock: {cidr: 10.0.0.0/16, except: [10.0.2.0/24, 10.0.1.3/32]}}]")
    assert peers_of(text) == {"prod/web", "dev/tool"}
    guard = node_model(text).isolated("ingress", IPS["prod/web"])
    (allow,) = guard.allows
    covered = sum(net.num_addresses for net in allow.peers)
    assert covered == 2**16 - 256 - 1
    assert not any(ipaddress.IPv4Address("10.0.1.3") in net for net in allow.peers)
    assert guard.allowed("10.0.200.9", "tcp", 80) and not guard.allowed("10.1.0.1", "tcp", 80)


def test_empty_from_means_everyone_and_no_rules_means_no_one():
    everyone = node_model(policy("prod", "  podSelector: {}\n  ingress: [{ports: [{port: 80}]}]"))
    assert everyone.isolated("ingress", IPS["prod/web"]).allows[0].peers is None
    assert allows(everyone, "ingress", "prod/web", "203.0.113.9")
    no_one = node_model(policy("prod", "  podSelector: {}\n  policyTypes: [Ingress]\n  ingress: []"))
    assert no_one.isolated("ingress", IPS["prod/web"]).allows == ()


def test_pods_without_an_address_are_neither_guarded_nor_peers():
    ips = {k: v for k, v in IPS.items() if k not in ("prod/api", "dev/tool")}
    model = node_model(ingress_from("[{namespaceSelector: {}}]"), ips=ips)
    assert [g.pod for g in model.ingress] == ["prod/web"]
    (allow,) = model.ingress[0].allows
    assert {str(n) for n in allow.peers} == {"10.0.1.2/32", "10.0.2.2/31"}  # collapsed


# ---------------------------------------------------------------- ports


def ingress_ports(ports: str) -> str:
    return policy("prod", f"  podSelector: {{}}\n  ingress: [{{ports: {ports}}}]")


def test_rule_without_ports_allows_every_protocol_and_port():
    model = node_model(policy("prod", "  podSelector: {}\n  ingress: [{from: [{podSelector: {}}]}]"))
    assert model.isolated("ingress", IPS["prod/web"]).allows[0].ports is None
    assert allows(model, "ingress", "prod/web", "prod/api", "udp", 5353)


def test_protocol_defaults_to_tcp_and_udp_is_separate():
    model = node_model(ingress_ports("[{port: 53}, {port: 53, protocol: UDP}, {port: 80}]"))
    assert model.isolated("ingress", IPS["prod/web"]).allows[0].ports == (
        PortRange("tcp", 53, 53), PortRange("tcp", 80, 80), PortRange("udp", 53, 53))
    model = node_model(ingress_ports("[{port: 53, protocol: UDP}]"))
    assert allows(model, "ingress", "prod/web", "dev/tool", "udp", 53)
    assert not allows(model, "ingress", "prod/web", "dev/tool", "tcp", 53)


def test_end_port_ranges_and_merging():
    model = node_model(ingress_ports("[{port: 8000, endPort: 8080}, {port: 8081}, {port: 8050, endPort: 9000}]"))
    assert model.isolated("ingress", IPS["prod/web"]).allows[0].ports == (PortRange("tcp", 8000, 9000),)
    assert allows(model, "ingress", "prod/web", "dev/tool", "tcp", 8500)
    assert not allows(model, "ingress", "prod/web", "dev/tool", "tcp", 9001)


def test_protocol_without_port_means_all_its_ports():
    model = node_model(ingress_ports("[{protocol: UDP}]"))
    assert allows(model, "ingress", "prod/web", "dev/tool", "udp", 1)
    assert not allows(model, "ingress", "prod/web", "dev/tool", "tcp", 1)


def test_named_ingress_port_resolves_on_each_guarded_pod():
    model = node_model(ingress_ports("[{port: http}]"))
    assert model.isolated("ingress", IPS["prod/web"]).allows[0].ports == (PortRange("tcp", 8080, 8080),)
    assert model.isolated("ingress", IPS["prod/api"]).allows[0].ports == (PortRange("tcp", 9090, 9090),)
    # a pod without the name: the rule allows it nothing
    db = node_model(ingress_ports("[{port: http}]"), node="n2").isolated("ingress", IPS["prod/db"])
    assert db.allows[0].matches_nothing and not db.allowed(IPS["dev/tool"], "tcp", 8080)
    # the protocol is part of the name's identity
    udp = node_model(ingress_ports("[{port: http, protocol: UDP}]"))
    assert udp.isolated("ingress", IPS["prod/web"]).allows[0].matches_nothing


def test_named_egress_port_resolves_on_each_destination_pod():
    text = policy("dev", "  podSelector: {matchLabels: {app: tool}}\n"
                         "  egress: [{to: [{namespaceSelector: {}}], ports: [{port: http}, {port: 443}]}]")
    model = node_model(text)
    (allow,) = model.isolated("egress", IPS["dev/tool"]).allows
    assert {str(d) for d in allow.destinations} == {
        "10.0.1.2 . tcp . 8080", "10.0.1.3 . tcp . 9090", "10.0.2.3 . tcp . 8000"}
    assert allows(model, "egress", "dev/tool", "prod/api", "tcp", 9090)
    assert not allows(model, "egress", "dev/tool", "prod/api", "tcp", 8080)
    assert allows(model, "egress", "dev/tool", "prod/api", "tcp", 443)


def test_named_egress_port_matches_only_pods_even_in_an_ip_block():
    text = policy("dev", "  podSelector: {matchLabels: {app: tool}}\n"
                         "  egress: [{to: [{ipBlock: {cidr: 10.0.1.0/24}}], ports: [{port: http}]}]")
    model = node_model(text)
    assert allows(model, "egress", "dev/tool", "prod/web", "tcp", 8080)
    assert not allows(model, "egress", "dev/tool", "10.0.1.200", "tcp", 8080)  # not a pod
    assert not allows(model, "egress", "dev/tool", "dev/web", "tcp", 8000)  # a pod outside the block
    anywhere = node_model(policy("dev", "  podSelector: {matchLabels: {app: tool}}\n"
                                        "  egress: [{ports: [{port: http}]}]"))
    assert allows(anywhere, "egress", "dev/tool", "dev/web", "tcp", 8000)
    assert not allows(anywhere, "egress", "dev/tool", "8.8.8.8", "tcp", 8000)


def test_addresses_are_checked():
    with pytest.raises(ValueError):
        node_model("", ips={**IPS, "prod/web": "10.0.1.2; drop"})
    w = parse_manifests(manifests(""), "t.yaml")
    with pytest.raises(ValueError):
        compile_node_policy(w, IPS, node_name="n1", pod_nodes=NODE_OF, node_ips=["not-an-ip"])
    with pytest.raises(ValueError, match="prod/api and prod/web have the same address"):
        node_model("", ips={**IPS, "prod/api": IPS["prod/web"]})
    twice = compile_node_policy(w, IPS, node_name="n1", pod_nodes=NODE_OF, node_ips=["10.0.0.1", "10.0.0.1"])
    assert twice.node_ips == ("10.0.0.1",)


# ---------------------------------------------------------------- both families

# 10.0.1.2 -> fd00:10:244:1::2
IPS6 = {key: f"fd00:10:244:{ip.split('.')[2]}::{ip.split('.')[3]}" for key, ip in IPS.items()}
DUAL = {key: (IPS[key], IPS6[key]) for key in IPS}


def dual_model(policies: str, node: str = "n1", ips=None):
    w = parse_manifests(manifests(policies), "t.yaml")
    return compile_node_policy(w, DUAL if ips is None else ips, node_name=node, pod_nodes=NODE_OF,
                               node_ips=["192.168.0.1", "fd00:172:31::1"])


def test_a_dual_stack_pod_is_one_guard_under_both_addresses():
    model = dual_model(ingress_from("[{podSelector: {matchLabels: {app: api}}}]"))
    web = model.isolated("ingress", IPS["prod/web"])
    assert web is model.isolated("ingress", IPS6["prod/web"]) and web.ips == DUAL["prod/web"]
    assert web.ip == IPS["prod/web"]  # the preferred family's, as before
    assert model.families == (4, 6) and model.node_ips_of(6) == ("fd00:172:31::1",)
    # a pod peer stands for both of its addresses; each family is judged on its own addresses
    assert web.allowed(IPS["prod/api"], "tcp", 80) and web.allowed(IPS6["prod/api"], "tcp", 80)
    assert not web.allowed(IPS6["dev/tool"], "tcp", 80)
    (allow,) = web.allows
    assert [str(n) for n in allow.peers] == ["10.0.1.3/32", "fd00:10:244:1::3/128"]  # IPv4 first


def test_an_ip_block_admits_its_own_family_only():
    v4 = dual_model(ingress_from("[{ipBlock: {cidr: 10.0.0.0/16}}]")).isolated("ingress", IPS["prod/web"])
    assert v4.allowed(IPS["dev/tool"], "tcp", 80) and not v4.allowed(IPS6["dev/tool"], "tcp", 80)
    assert v4.allows[0].peers_of(6) == ()
    v6 = dual_model(ingress_from('[{ipBlock: {cidr: "fd00:10:244::/48"}}]')).isolated("ingress", IPS["prod/web"])
    assert v6.allowed(IPS6["dev/tool"], "tcp", 80) and not v6.allowed(IPS["dev/tool"], "tcp", 80)


def test_ipv6_ip_block_with_except():
    text = ingress_from('[{ipBlock: {cidr: "fd00:10:244::/48", except: ["fd00:10:244:2::/64", '
                        '"fd00:10:244:1::3/128"]}}, {ipBlock: {cidr: 10.0.2.0/24}}]')
    guard = dual_model(text).isolated("ingress", IPS["prod/web"])
    allowed = {pod for pod in IPS if guard.allowed(IPS6[pod], "tcp", 80)}
    assert allowed == {"prod/web", "dev/tool"}  # not api (excepted), nor node n2's /64
    assert {pod for pod in IPS if guard.allowed(IPS[pod], "tcp", 80)} == {"prod/db", "dev/web"}
    (allow,) = guard.allows
    v6 = allow.peers_of(6)
    assert sum(n.num_addresses for n in v6) == 2**80 - 2**64 - 1
    assert ipaddress.IPv6Network("fd00:10:244:1::2/128") in v6 and ipaddress.IPv6Network("fd00:10:244:1::4/126") in v6
    assert guard.allowed("fd00:10:244:ffff::9", "tcp", 80) and not guard.allowed("fd00:10:245::1", "tcp", 80)


def test_named_egress_ports_resolve_on_each_address_of_a_destination():
    text = policy("dev", "  podSelector: {matchLabels: {app: tool}}\n"
                         "  egress: [{to: [{podSelector: {}, namespaceSelector: {}}], ports: [{port: http}]},\n"
                         '           {to: [{ipBlock: {cidr: "fd00:10:244:2::/64"}}], ports: [{port: http}]}]')
    first, second = dual_model(text).isolated("egress", IPS["dev/tool"]).allows
    assert {str(d) for d in first.destinations} == {
        "10.0.1.2 . tcp . 8080", "10.0.1.3 . tcp . 9090", "10.0.2.3 . tcp . 8000",
        "fd00:10:244:1::2 . tcp . 8080", "fd00:10:244:1::3 . tcp . 9090", "fd00:10:244:2::3 . tcp . 8000"}
    # through an ipBlock: only the addresses the block holds (dev/web's IPv6, not its IPv4)
    assert {str(d) for d in second.destinations} == {"fd00:10:244:2::3 . tcp . 8000"}
    # held by a block and by a selector: both of its addresses
    both = dual_model(policy("dev", "  podSelector: {matchLabels: {app: tool}}\n  egress: [{to: ["
                                    '{ipBlock: {cidr: "fd00:10:244:2::/64"}}, {podSelector: {matchLabels: {app: web}}}'
                                    "], ports: [{port: http}]}]"))
    (allow,) = both.isolated("egress", IPS["dev/tool"]).allows
    assert {str(d) for d in allow.destinations} == {"10.0.2.3 . tcp . 8000", "fd00:10:244:2::3 . tcp . 8000"}


def test_single_stack_ipv6_pods():
    model = dual_model(ingress_from("[{namespaceSelector: {matchLabels: {env: dev}}}]"), ips=IPS6)
    guard = model.isolated("ingress", IPS6["prod/web"])
    assert guard.ips == (IPS6["prod/web"],) and model.isolated("ingress", IPS["prod/web"]) is None
    assert guard.allowed(IPS6["dev/web"], "tcp", 80) and not guard.allowed(IPS6["prod/api"], "tcp", 80)


def test_dual_stack_addresses_are_checked():
    with pytest.raises(ValueError, match="prod/web has two addresses of one family"):
        dual_model("", ips={**DUAL, "prod/web": ("10.0.1.2", "10.0.1.9")})
    with pytest.raises(ValueError, match="prod/api and prod/web have the same address fd00:10:244:1::2"):
        dual_model("", ips={**DUAL, "prod/api": ("10.0.1.3", "fd00:10:244:1:0::2")})  # the same, written longer
    with pytest.raises(ValueError):
        dual_model("", ips={**DUAL, "prod/web": ("10.0.1.2", "fd00::1/64")})


def test_mixed_family_except_is_a_manifest_error_and_refused_below_it():
    from labkit.errors import InputError
    from labkit.policy.compile import _ip_block

    with pytest.raises(InputError, match=r"t\.yaml:\d+: .*ipBlock\.except: 10\.0\.0\.0/8 is IPv4 but cidr "
                                         r"fd00::/48 is IPv6"):
        dual_model(ingress_from('[{ipBlock: {cidr: "fd00::/48", except: [10.0.0.0/8]}}]'))
    with pytest.raises(ValueError, match="not of the same address family"):
        _ip_block("fd00::/48", ["10.0.0.0/8"])
