"""`labkit graph`: Mermaid, DOT and HTML renderings of a lab summary (labkit.graph).

Every shipped topology is drawn from its file alone (no root, lab not up); a status sample
with pods and services (the shape `labkit status --format json` prints for kube-3node) is
drawn too. Checks: every node and link appears in every format, DOT parses (with graphviz's
`dot` when it is installed), odd names are escaped, the HTML page is self-contained, and the
layout keeps boxes and labels apart, also for a 50-node chain.
"""

from __future__ import annotations

import copy
import itertools
import html.parser
import re
import shutil
import subprocess
from xml.etree import ElementTree
from pathlib import Path

import pytest

from labkit.errors import LabkitError
from labkit.graph import FORMATS, build_model, choose_format, layout, render_graph
from labkit.lab import graph_summary, summarize
from labkit.topology import load_plan

ROOT = Path(__file__).resolve().parents[2]
TOPOLOGIES = sorted([*ROOT.glob("topologies/*.yaml"), *ROOT.glob("topologies/*.yml")])


def topology_summary(path: Path) -> dict:
    return summarize(load_plan(path))


def chain_topology(n: int, directory: Path) -> Path:
    """A topology file: n linux nodes in a chain, a /30 on every link."""
    lines = ["name: chain", "topology:", "  nodes:"]
    lines += [f"    n{i}: {{kind: linux}}" for i in range(n)]
    lines.append("  links:" if n > 1 else "  links: []")
    for i in range(n - 1):
        lines.append(f'    - endpoints: ["n{i}:eth1", "n{i + 1}:eth2"]')
        lines.append(f"      ipv4: [10.{i // 250}.{i % 250}.1/30, 10.{i // 250}.{i % 250}.2/30]")
    path = directory / f"chain{n}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def status_sample() -> dict:
    """A running kube-3node lab's status (trimmed from `labkit status --format json`)."""
    def node(name: str, kind: str, mgmt: str, pod_cidr: str | None) -> dict:
        return {"name": name, "kind": kind, "netns": f"lk-kube3.{name}", "mgmt_ipv4": mgmt, "pod_cidr": pod_cidr,
                "running": True, "interfaces": [{"name": "eth0", "ipv4": [f"{mgmt}/24"], "peer": None}]}

    def pod(ns: str, name: str, on: str, ip: str) -> dict:
        return {"namespace": ns, "name": name, "node": on, "ip": ip, "netns": f"lk-kube3.{ns}.{name}",
                "labels": {}}

    web = [{"ip": "10.244.0.4", "pod": "default/web-7c9-vdkcr", "node": "cp", "hostname": None},
           {"ip": "10.244.1.4", "pod": "default/web-7c9-pt9qk", "node": "w1", "hostname": None}]
    return {
        "name": "kube3", "runtime": "netns", "source": "topologies/kube-3node.yaml", "phase": "up",
        "nodes": [node("cp", "k8s-node", "172.31.0.2", "10.244.0.0/24"),
                  node("w1", "k8s-node", "172.31.0.3", "10.244.1.0/24"),
                  node("w2", "k8s-node", "172.31.0.4", "10.244.2.0/24"),
                  node("ext", "linux", "172.31.0.5", None)],
        "links": [],
        "mgmt": {"netns": "lk-kube3._mgmt", "subnet": "172.31.0.0/24", "host_access": False},
        "pods": [pod("default", "client", "cp", "10.244.0.2"), pod("default", "web-7c9-vdkcr", "cp", "10.244.0.4"),
                 pod("default", "web-7c9-pt9qk", "w1", "10.244.1.4"), pod("team-a", "db-0", "w2", "10.244.2.5"),
                 pod("kube-system", "labkit-dns-4tm7-ncmhl", "w2", "10.244.2.4")],
        "services": [
            {"namespace": "default", "name": "web", "type": "ClusterIP", "cluster_ip": "10.96.62.203",
             "external_name": None, "session_affinity": "None", "endpoints": web,
             "ports": [{"name": "http", "protocol": "TCP", "port": 80, "target_port": "http", "node_port": None,
                        "endpoints": ["10.244.0.4:8080", "10.244.1.4:8080"]}]},
            {"namespace": "default", "name": "web-nodeport", "type": "NodePort", "cluster_ip": "10.96.44.217",
             "external_name": None, "endpoints": web,
             "ports": [{"name": "http", "protocol": "TCP", "port": 80, "target_port": 8080, "node_port": 30080}]},
            {"namespace": "team-a", "name": "db", "type": "ClusterIP", "cluster_ip": "None", "external_name": None,
             "endpoints": [{"ip": "10.244.2.5", "pod": "team-a/db-0", "node": "w2", "hostname": "db-0"}],
             "ports": [{"name": "postgres", "protocol": "TCP", "port": 5432, "target_port": 5432}]},
            {"namespace": "default", "name": "search", "type": "ExternalName", "cluster_ip": None,
             "external_name": "search.example.org", "endpoints": [], "ports": []},
            {"namespace": "default", "name": "nobody", "type": "ClusterIP", "cluster_ip": "10.96.3.173",
             "external_name": None, "endpoints": [], "ports": [{"protocol": "TCP", "port": 80, "target_port": 8080}]},
            {"namespace": "kube-system", "name": "kube-dns", "type": "ClusterIP", "cluster_ip": "10.96.0.10",
             "external_name": None,
             "endpoints": [{"ip": "10.244.2.4", "pod": "kube-system/labkit-dns-4tm7-ncmhl", "node": "w2"}],
             "ports": [{"name": "dns", "protocol": "UDP", "port": 53},
                       {"name": "dns-tcp", "protocol": "TCP", "port": 53}]},
        ],
        "dns": {"ip": "10.96.0.10"},
    }


ODD = ['a"b', "c-d", "end", "<script>alert(1)</script>", "back\\slash {x}|y #1; `z`", "new\nline", "x&amp;y",
       "50% *bold*"]


def odd_summary() -> dict:
    """Names no topology file would let through, as a hand-edited status file might hold."""
    nodes = [{"name": name, "kind": "linux" if i % 2 else "bridge", "interfaces": []} for i, name in enumerate(ODD)]
    links = []
    for i in range(len(ODD) - 1):
        a, b = ODD[i], ODD[i + 1]
        nodes[i]["interfaces"].append({"name": "e<1>", "ipv4": ["10.0.%d.1/24" % i], "peer": f"{b}:e\"2"})
        nodes[i + 1]["interfaces"].append({"name": 'e"2', "ipv4": [], "peer": f"{a}:e<1>"})
        links.append({"a": f"{a}:e<1>", "b": f'{b}:e"2'})
    return {"name": 'odd"<lab>', "runtime": "netns", "nodes": nodes, "links": links, "mgmt": None,
            "pods": [{"namespace": "default", "name": 'p"<1>', "node": "end", "ip": "10.244.0.2"}],
            "services": [{"namespace": "default", "name": "s|1#", "type": "ClusterIP", "cluster_ip": "10.96.0.1",
                          "ports": [{"port": 80, "protocol": "TCP"}], "endpoints": ["10.244.0.2:80"]}],
            "dns": None}


def link_keys(summary: dict) -> list[str]:
    return [f"{link['a']}--{link['b']}" for link in summary.get("links") or []]


def node_names(summary: dict) -> list[str]:
    return [n["name"] for n in summary["nodes"]]


# ---------------------------------------------------------------- parsers for the three formats


class _Elements(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))

    def handle_startendtag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))


def html_elements(page: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = _Elements()
    parser.feed(page)
    parser.close()
    return parser.elements


def html_attr_values(page: str, attr: str) -> list[str]:
    return [a[attr] for _, a in html_elements(page) if attr in a]


EXTERNAL = re.compile(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/|\bsrc\s*=|\bhref\s*=|@import|url\(|<link\b|<iframe\b"
                      r"|<object\b|<embed\b|<img\b|\bfetch\(|XMLHttpRequest|@font-face", re.I)


def external_references(page: str) -> list[str]:
    """Anything in a page that could make a browser fetch something."""
    return EXTERNAL.findall(page)


_DQ = r'"(?:[^"\\]|\\.)*"'
_DOT_NODE = re.compile(rf"^\s*({_DQ})\s*\[(.*)\];\s*$")
_DOT_EDGE = re.compile(rf"^\s*({_DQ})\s*--\s*({_DQ})\s*\[(.*)\];\s*$")


def dot_unquote(token: str) -> str:
    assert token.startswith('"') and token.endswith('"'), token
    text = re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), token[1:-1])
    return text.replace("&amp;", "&")  # graphviz decodes entities: a literal '&' is written '&amp;'



def dot_attr(attrs: str, name: str) -> str | None:
    m = re.search(rf"(?:^|[\s,]){name}=({_DQ}|[^,\s\]]+)", attrs)
    if not m:
        return None
    return dot_unquote(m.group(1)) if m.group(1).startswith('"') else m.group(1)


def parse_dot(text: str) -> tuple[dict[str, str], list[tuple[str, str, dict[str, str | None]]]]:
    """A structural check of our DOT output: every line is a comment, a statement we emit, or a
    brace; quotes and braces balance. Returns {node id: label} and the edges."""
    nodes: dict[str, str] = {}
    edges = []
    depth = 0
    stripped = re.sub(_DQ, '""', text)  # strings removed: braces and quotes outside them must balance
    assert stripped.count('"') % 2 == 0
    assert stripped.count("{") == stripped.count("}")
    for line in text.splitlines():
        body = line.strip()
        if not body or body.startswith("//"):
            continue
        if body.startswith("graph ") and body.endswith("{") and depth == 0:
            depth += 1
            continue
        if body.startswith("subgraph ") and body.endswith("{"):
            depth += 1
            continue
        if body == "}":
            depth -= 1
            continue
        if re.match(r"^(graph|node|edge) \[.*\];$", body) or re.match(r"^(\w+=(\"[^\"]*\"|\w+); ?)+$", body):
            continue
        if m := _DOT_EDGE.match(body):
            edges.append((dot_unquote(m.group(1)), dot_unquote(m.group(2)),
                          {k: dot_attr(m.group(3), k) for k in ("id", "taillabel", "headlabel", "label")}))
            continue
        if m := _DOT_NODE.match(body):
            nodes[dot_unquote(m.group(1))] = dot_attr(m.group(2), "label") or ""
            continue
        raise AssertionError(f"unexpected DOT line: {line!r}")
    assert depth == 0
    return nodes, edges


_MMD_ID = r"[A-Za-z0-9_]+"
_MMD_LABEL = r'"[^"]*"'
_MMD_NODE = re.compile(rf"^({_MMD_ID})(\[{_MMD_LABEL}\]|\(\[{_MMD_LABEL}\]\)|\({_MMD_LABEL}\)|\[\[{_MMD_LABEL}\]\]"
                       rf"|\{{\{{{_MMD_LABEL}\}}\}})(:::\w+)?$")
_MMD_EDGE = re.compile(rf"^({_MMD_ID}) (---|-\.-|-\.->)(\|{_MMD_LABEL}\|)? ({_MMD_ID})$")


def parse_mermaid(text: str) -> tuple[dict[str, str], list[tuple[str, str, str]], list[str]]:
    """Our Mermaid output, line by line: {id: label}, edges (a, b, label), comments."""
    nodes: dict[str, str] = {}
    edges = []
    comments = []
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    assert "flowchart LR" in lines
    for body in lines:
        if body.startswith("%%"):
            assert not body.startswith("%%{"), body  # never a directive
            comments.append(body[2:].strip())
        elif body == "flowchart LR" or body.startswith("classDef "):
            continue
        elif m := _MMD_NODE.match(body):
            assert m.group(1) not in nodes, f"id declared twice: {body}"
            nodes[m.group(1)] = re.search(_MMD_LABEL, m.group(2)).group(0)
        elif m := _MMD_EDGE.match(body):
            edges.append((m.group(1), m.group(4), m.group(3) or ""))
        else:
            raise AssertionError(f"unexpected Mermaid line: {body!r}")
    for a, b, _ in edges:
        assert a in nodes and b in nodes, f"edge {a} -- {b} to an undeclared id"
    assert not {"end", "graph", "subgraph", "flowchart"} & set(nodes)
    return nodes, edges, comments


def mermaid_unescape(label: str) -> list[str]:
    body = label.strip('"')
    entities = {"#amp;": "&", "#35;": "#", "#quot;": '"', "#lt;": "<", "#gt;": ">", "#124;": "|", "#96;": "`",
                "#37;": "%", "#42;": "*"}
    return [re.sub(r"#\w+;", lambda m: entities[m.group(0)], part) for part in body.split("<br/>")]


# ---------------------------------------------------------------- every node and link, every format


@pytest.fixture(params=[p.name for p in TOPOLOGIES])
def shipped(request) -> dict:
    return topology_summary(ROOT / "topologies" / request.param)


def test_topologies_are_shipped():
    assert len(TOPOLOGIES) >= 3


def test_html_has_every_node_and_link(shipped):
    page = render_graph(shipped, "html")
    assert page.startswith("<!DOCTYPE html>")
    assert "<svg" in page and "</svg>" in page
    assert sorted(html_attr_values(page, "data-node")) == sorted(node_names(shipped))
    assert sorted(html_attr_values(page, "data-link")) == sorted(link_keys(shipped))
    ends = html_attr_values(page, "data-end")
    for link in shipped["links"]:
        assert link["a"] in ends and link["b"] in ends
    assert external_references(page) == []
    ids = html_attr_values(page, "id")
    assert len(ids) == len(set(ids)), "element ids are unique"


def test_html_link_labels_show_interfaces_and_addresses(shipped):
    page = render_graph(shipped, "html")
    text = re.sub(r"<[^>]+>", " ", page)
    for node in shipped["nodes"]:
        for iface in node["interfaces"]:
            assert iface["name"] in text
            for address in iface["ipv4"] + iface.get("ipv6", []):
                assert address in text


def test_dot_has_every_node_and_link(shipped):
    nodes, edges = parse_dot(render_graph(shipped, "dot"))
    for node in shipped["nodes"]:
        assert node["name"] in nodes
        assert nodes[node["name"]].split("\n")[0] == node["name"]
    ids = {attrs["id"]: (a, b, attrs) for a, b, attrs in edges}
    by_name = {n["name"]: {i["name"]: i for i in n["interfaces"]} for n in shipped["nodes"]}
    for link in shipped["links"]:
        key = f"{link['a']}--{link['b']}"
        a, b, attrs = ids[key]
        (na, ia), (nb, ib) = link["a"].split(":"), link["b"].split(":")
        assert (a, b) == (na, nb)
        # both families' addresses, IPv4 first
        assert attrs["taillabel"].split("\n") == [ia, *by_name[na][ia]["ipv4"], *by_name[na][ia].get("ipv6", [])]
        assert attrs["headlabel"].split("\n") == [ib, *by_name[nb][ib]["ipv4"], *by_name[nb][ib].get("ipv6", [])]


def test_mermaid_has_every_node_and_link(shipped):
    nodes, edges, comments = parse_mermaid(render_graph(shipped, "mermaid"))
    labels = {mermaid_unescape(label)[0]: ident for ident, label in nodes.items()}
    for node in shipped["nodes"]:
        assert node["name"] in labels
        assert f"node {node['name']}" in comments
    for link in shipped["links"]:
        assert f"link {link['a']}--{link['b']}" in comments
        a, b = labels[link["a"].split(":")[0]], labels[link["b"].split(":")[0]]
        assert any((x, y) == (a, b) and link["a"] in label and link["b"] in label for x, y, label in edges)


@pytest.mark.parametrize("which", ["shipped", "status", "odd"])
def test_dot_renders_with_graphviz(which, request):
    if shutil.which("dot") is None:
        pytest.fail("graphviz missing: apt-get install graphviz")
    summaries = {"status": status_sample, "odd": odd_summary}
    summaries_list = ([topology_summary(p) for p in TOPOLOGIES] if which == "shipped" else [summaries[which]()])
    for summary in summaries_list:
        proc = subprocess.run(["dot", "-Tsvg"], input=render_graph(summary, "dot"), capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 0 and not proc.stderr.strip(), proc.stderr
        svg = ElementTree.fromstring(proc.stdout)
        ids = {el.get("id") for el in svg.iter() if el.get("id")}
        titles = {el.text for el in svg.iter() if el.tag.endswith("}title")}
        model = build_model(summary)
        for node in model.nodes:
            assert node.slug in ids
            # in a DOT id only \" is an escape: our doubled backslashes stay doubled there
            # (the labels, escStrings, show them single)
            assert node.name.replace("\\", "\\\\").replace("\n", "\\n") in titles
        for link in model.links:
            assert link.key.replace("\n", "\\n") in ids  # graphviz ids are escStrings


# ---------------------------------------------------------------- a running lab: pods and services


def test_status_with_pods_and_services_html():
    summary = status_sample()
    page = render_graph(summary, "html")
    assert sorted(html_attr_values(page, "data-node")) == sorted(node_names(summary))
    pods = html_attr_values(page, "data-pod")
    assert sorted(pods) == sorted(f"{p['namespace']}/{p['name']}" for p in summary["pods"])
    assert sorted(html_attr_values(page, "data-service")) == sorted(
        f"{s['namespace']}/{s['name']}" for s in summary["services"])
    # pods are drawn inside their node's box
    model = build_model(summary)
    drawn = layout(model)
    for box in drawn.nodes:
        for pod in box.pods:
            assert pod.pod.node == box.node.name
            assert box.x <= pod.x and pod.x + pod.w <= box.x + box.w
            assert box.y <= pod.y and pod.y + pod.h <= box.y + box.h
    # endpoints point at their pods; headless, ExternalName and empty services read right
    endpoint_pods = html_attr_values(page, "data-endpoint-pod")
    assert "default/web-7c9-vdkcr" in endpoint_pods and "team-a/db-0" in endpoint_pods
    assert "CNAME search.example.org" in page
    assert "headless" in page
    assert "no endpoints" in page
    assert "node 30080" in page
    # the mgmt network is a bus with a stub per node, each labelled with eth0 and its address
    assert html_attr_values(page, "data-mgmt") == ["172.31.0.0/24"]
    assert sorted(html_attr_values(page, "data-mgmt-node")) == sorted(node_names(summary))
    assert "eth0 172.31.0.2/24" in page
    assert "10.96.0.10" in page  # cluster DNS
    assert external_references(page) == []


def test_status_with_pods_and_services_dot_and_mermaid():
    summary = status_sample()
    nodes, edges = parse_dot(render_graph(summary, "dot"))
    for pod in summary["pods"]:
        assert f"_pod/{pod['namespace']}/{pod['name']}" in nodes
    assert ("_svc/default/web", "_pod/default/web-7c9-pt9qk") in {(a, b) for a, b, _ in edges}
    assert ("_mgmt", "cp") in {(a, b) for a, b, _ in edges}
    mnodes, medges, _ = parse_mermaid(render_graph(summary, "mermaid"))
    labels = {mermaid_unescape(label)[0]: ident for ident, label in mnodes.items()}
    assert labels["svc default/web"] and labels["pod default/web-7c9-pt9qk"]
    assert (labels["svc default/web"], labels["pod default/web-7c9-pt9qk"]) in {(a, b) for a, b, _ in medges}
    assert (labels["cp"], labels["pod default/client"]) in {(a, b) for a, b, _ in medges}


def test_partial_and_old_summaries():
    # the status of a lab whose state file is gone: no links, no mgmt keys at all
    bare = {"name": "gone", "nodes": [], "pods": [], "services": [], "dns": None, "runtime": "netns"}
    for fmt in FORMATS:
        assert "gone" in render_graph(bare, fmt)
    # no links[] key: the links come from the interfaces' peers, each once
    summary = topology_summary(ROOT / "topologies" / "routed-triangle.yaml")
    expected = {frozenset((link["a"], link["b"])) for link in summary["links"]}
    del summary["links"]
    model = build_model(summary)
    assert {frozenset((link.a.ref, link.b.ref)) for link in model.links} == expected
    # a pod on a node the summary does not list, and a link to an unknown node, still drawn
    summary = status_sample()
    summary["pods"].append({"namespace": "default", "name": "stray", "node": "w9", "ip": "10.244.9.2"})
    summary["links"] = [{"a": "ext:eth1", "b": "ghost:eth1"}]
    page = render_graph(summary, "html")
    assert "default/stray" in html_attr_values(page, "data-pod")
    assert "ghost" in html_attr_values(page, "data-node")
    nodes, _, _ = parse_mermaid(render_graph(summary, "mermaid"))
    assert any("pod default/stray" in label for label in nodes.values())


def test_deterministic():
    summary = status_sample()
    for fmt in FORMATS:
        assert render_graph(copy.deepcopy(summary), fmt) == render_graph(copy.deepcopy(summary), fmt)


# ---------------------------------------------------------------- escaping and errors


def test_odd_names_html():
    summary = odd_summary()
    page = render_graph(summary, "html")
    assert "<script>alert(1)</script>" not in page
    assert page.count("<script>") == 1  # the page's own
    assert sorted(html_attr_values(page, "data-node")) == sorted(ODD)
    assert sorted(html_attr_values(page, "data-link")) == sorted(link_keys(summary))
    assert html_attr_values(page, "data-pod") == ['default/p"<1>']
    ids = html_attr_values(page, "id")
    assert all(re.fullmatch(r"[A-Za-z0-9_-]+", i) for i in ids), ids
    assert len(ids) == len(set(ids))


def test_odd_names_dot():
    summary = odd_summary()
    text = render_graph(summary, "dot")
    nodes, edges = parse_dot(text)
    for name in ODD:
        assert name in nodes
        assert nodes[name].split("\n")[0] == name.split("\n")[0]
    assert sorted(attrs["id"] for _, _, attrs in edges if attrs["id"] in link_keys(summary)) == sorted(
        link_keys(summary))
    assert "\n" not in "".join(re.findall(_DQ, text)), "no raw newline inside a DOT string"


def test_odd_names_mermaid():
    summary = odd_summary()
    text = render_graph(summary, "mermaid")
    nodes, edges, comments = parse_mermaid(text)
    labels = [mermaid_unescape(label) for label in nodes.values()]
    for name in ODD:
        assert [name.replace("\n", " ")] == [lines[0] for lines in labels if lines[0] == name.replace("\n", " ")]
    for label in nodes.values():
        assert not re.search(r"[<>|`%*]", label.replace("<br/>", "")), label
    assert len(edges) >= len(summary["links"])


def test_similar_names_get_distinct_ids():
    summary = {"name": "ids", "nodes": [{"name": n, "kind": "linux", "interfaces": []} for n in ("a-b", "a_b", "a.b")],
               "links": [], "pods": [], "services": []}
    nodes, _, _ = parse_mermaid(render_graph(summary, "mermaid"))
    assert len(nodes) == 3
    ids = html_attr_values(render_graph(summary, "html"), "id")
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("fmt", ["svg", "png", "HTML", "", "json"])
def test_unknown_format(fmt):
    with pytest.raises(LabkitError) as err:
        render_graph(status_sample(), fmt)
    message = str(err.value)
    assert repr(fmt) in message
    for valid in FORMATS:
        assert valid in message


def test_not_a_summary():
    with pytest.raises(LabkitError):
        render_graph([status_sample()], "html")  # status() returns a list: pass one lab


# ---------------------------------------------------------------- layout: readable at any size


def _overlap(a: tuple[float, float, float, float], b: tuple[float, float, float, float], slack: float = 0) -> bool:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    return ax < bx + bw - slack and bx < ax + aw - slack and ay < by + bh - slack and by < ay + ah - slack


def assert_readable(summary: dict, max_width: float | None = None) -> None:
    drawn = layout(build_model(summary))
    boxes = [(b.x, b.y, b.w, b.h) for b in drawn.nodes]
    labels = [(lbl.x, lbl.y, lbl.w, lbl.h) for s in drawn.links for lbl in (s.a, s.b)]
    for i, a in enumerate(boxes):
        assert 0 <= a[0] and a[0] + a[2] <= drawn.width and 0 <= a[1] and a[1] + a[3] <= drawn.height
        for b in boxes[i + 1:]:
            assert not _overlap(a, b), "node boxes overlap"
    for i, a in enumerate(labels):
        assert -1 <= a[0] and a[0] + a[2] <= drawn.width + 1 and -1 <= a[1] and a[1] + a[3] <= drawn.height + 1
        for b in labels[i + 1:]:
            assert not _overlap(a, b, slack=1), f"link labels overlap: {a} {b}"
        for b in boxes:
            assert not _overlap(a, b, slack=3), f"a link label covers a node: {a} {b}"
    if max_width:
        assert drawn.width <= max_width


def test_layout_shipped_topologies_readable(shipped):
    assert_readable(shipped, max_width=1900)


def test_layout_status_readable():
    assert_readable(status_sample(), max_width=1900)


@pytest.mark.parametrize("n", [1, 2, 10, 50, 120])
def test_layout_chain_scales(n, tmp_path):
    summary = topology_summary(chain_topology(n, tmp_path))
    assert_readable(summary, max_width=1900)
    drawn = layout(build_model(summary))
    # a chain snakes across rows: every link joins neighbouring cells and is drawn straight
    cells = {b.node.name: (b.col, b.row) for b in drawn.nodes}
    for shape in drawn.links:
        (ca, ra), (cb, rb) = cells[shape.link.a.node], cells[shape.link.b.node]
        assert abs(ca - cb) + abs(ra - rb) == 1
        assert " L" in shape.path
    page = render_graph(summary, "html")
    assert len(html_attr_values(page, "data-node")) == n
    assert len(html_attr_values(page, "data-link")) == n - 1


def _two_routers(links: list[tuple[str, str]]) -> dict:
    ifaces: dict[str, list] = {"r1": [], "r2": []}
    for a, b in links:
        (na, ia), (nb, ib) = a.split(":"), b.split(":")
        ifaces[na].append({"name": ia, "ipv4": ["10.0.%d.1/30" % len(ifaces[na])], "peer": b})
        ifaces[nb].append({"name": ib, "ipv4": ["10.0.%d.2/30" % len(ifaces[nb])], "peer": a})
    return {"name": "par", "nodes": [{"name": n, "kind": "linux", "interfaces": i} for n, i in ifaces.items()],
            "links": [{"a": a, "b": b} for a, b in links], "pods": [], "services": []}


@pytest.mark.parametrize("count", [2, 3, 4])
def test_layout_parallel_links(count):
    summary = _two_routers([(f"r1:eth{i}", f"r2:eth{i}") for i in range(1, count + 1)])
    assert_readable(summary)
    drawn = layout(build_model(summary))
    assert len({shape.path for shape in drawn.links}) == count
    page = render_graph(summary, "html")
    assert sorted(html_attr_values(page, "data-link")) == sorted(link_keys(summary))


def test_layout_loop_on_one_node():
    summary = _two_routers([("r1:eth1", "r2:eth1"), ("r1:lo1", "r1:lo2")])
    assert_readable(summary)
    page = render_graph(summary, "html")
    assert sorted(html_attr_values(page, "data-link")) == sorted(link_keys(summary))
    for fmt in ("dot", "mermaid"):
        assert "r1:lo1" in render_graph(summary, fmt)


# ---------------------------------------------------------------- what `labkit graph TOPO` draws


def test_lab_summary_from_file_when_not_up():
    path = ROOT / "topologies" / "routed-triangle.yaml"
    name = "graph-nx"  # a name no lab that is up has
    summary = graph_summary(path, name=name)
    assert summary == summarize(load_plan(path, name=name))
    assert "<svg" in render_graph(summary, "html")


def test_lab_summary_needs_a_file_or_a_running_lab():
    with pytest.raises(LabkitError, match="is up"):
        graph_summary(name="graph-nx")
    with pytest.raises(LabkitError):
        graph_summary()


def shape_summary(name: str, nodes: list[str], pairs: list[tuple[str, str]], kinds: dict | None = None) -> dict:
    """A lab of linux nodes joined as `pairs` says, an address at every end."""
    ifaces: dict[str, list] = {n: [] for n in nodes}
    links = []
    for i, (a, b) in enumerate(pairs):
        ia, ib = f"eth{len(ifaces[a]) + 1}", f"eth{len(ifaces[b]) + 1}"
        ifaces[a].append({"name": ia, "ipv4": [f"10.{i}.0.1/30"], "peer": f"{b}:{ib}"})
        ifaces[b].append({"name": ib, "ipv4": [f"10.{i}.0.2/30"], "peer": f"{a}:{ia}"})
        links.append({"a": f"{a}:{ia}", "b": f"{b}:{ib}"})
    return {"name": name, "runtime": "netns", "links": links, "pods": [], "services": [], "mgmt": None,
            "nodes": [{"name": n, "kind": (kinds or {}).get(n, "linux"), "interfaces": ifaces[n]} for n in nodes]}


SHAPES = {
    "star": shape_summary("star", ["sw", *(f"h{i}" for i in range(10))], [("sw", f"h{i}") for i in range(10)],
                          {"sw": "bridge"}),
    "mesh": shape_summary("mesh", [f"r{i}" for i in range(6)], list(itertools.combinations(
        [f"r{i}" for i in range(6)], 2))),
    "ring": shape_summary("ring", [f"r{i}" for i in range(12)], [(f"r{i}", f"r{(i + 1) % 12}") for i in range(12)]),
    "tree": shape_summary("tree", ["core", *(f"agg{i}" for i in range(3)),
                                   *(f"leaf{i}{j}" for i in range(3) for j in range(3))],
                          [("core", f"agg{i}") for i in range(3)]
                          + [(f"agg{i}", f"leaf{i}{j}") for i in range(3) for j in range(3)]),
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_layout_common_shapes_readable(shape):
    summary = SHAPES[shape]
    assert_readable(summary, max_width=1900)
    page = render_graph(summary, "html")
    assert sorted(html_attr_values(page, "data-link")) == sorted(link_keys(summary))


def test_layout_tree_keeps_leaves_by_their_parent():
    drawn = layout(build_model(SHAPES["tree"]))
    cells = {b.node.name: (b.col, b.row) for b in drawn.nodes}
    for link in SHAPES["tree"]["links"]:
        (ca, ra), (cb, rb) = cells[link["a"].split(":")[0]], cells[link["b"].split(":")[0]]
        assert max(abs(ca - cb), abs(ra - rb)) == 1, "every link of the tree joins neighbouring cells"


@pytest.mark.parametrize(("fmt", "output", "expected"), [
    ("dot", None, "dot"), ("html", "x.dot", "html"), (None, "lab.html", "html"), (None, "lab.HTM", "html"),
    (None, "lab.gv", "dot"), (None, "lab.dot", "dot"), (None, "lab.mmd", "mermaid"), (None, "README.md", "mermaid"),
    (None, None, "mermaid"),
])
def test_choose_format(fmt, output, expected):
    assert choose_format(fmt, output) == expected


@pytest.mark.parametrize(("fmt", "output"), [("svg", None), (None, "lab.svg"), (None, "lab")])
def test_choose_format_errors(fmt, output):
    with pytest.raises(LabkitError, match="html"):
        choose_format(fmt, output)
