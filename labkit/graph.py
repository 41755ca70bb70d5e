"""`labkit graph`: a picture of a lab — nodes, links with interface names and addresses,
pods on their nodes, services — as Mermaid, Graphviz DOT or one self-contained HTML page.

The input is the lab summary `labkit.lab.summarize(plan)` returns (the shape `labkit status
--format json` prints), so a graph can be drawn from a topology file without root and without
the lab being up, or from a running lab's status with its pods and services:

    render_graph(summarize(load_plan("topologies/routed-triangle.yaml")), "html")
    render_graph(status("triangle")[0], "mermaid")

The HTML page draws with inline SVG laid out here, deterministically: no scripts, fonts or
styles are fetched from anywhere, so the file can be mailed, archived, or opened offline.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from labkit import templating
from labkit.errors import LabkitError

FORMATS = ("mermaid", "dot", "html")
_TEMPLATE_FILES = {"mermaid": "graph.mmd.j2", "dot": "graph.dot.j2", "html": "graph.html.j2"}


def render_graph(summary: dict[str, Any], fmt: str, trace: dict[str, Any] | None = None) -> str:
    """The lab `summary` drawn in `fmt` (one of FORMATS); LabkitError for any other format.

    `trace`, a `labkit trace` report (html only), draws the probe's path on the picture: the
    nodes, pods and links it crossed highlighted, each annotated with the rules that acted."""
    if fmt not in FORMATS:
        raise LabkitError(f"unknown graph format {fmt!r}; valid formats: {', '.join(FORMATS)}")
    model = build_model(summary)
    if fmt == "html":
        template = _environment(html=True).get_template(_TEMPLATE_FILES[fmt])
        return template.render(lab=model, layout=layout(model), trace=trace, path=trace_overlay(model, trace),
                               layout_px={"name": NAME_PX, "text": TEXT_PX, "label": LABEL_PX, "pod": POD_PX})
    return _environment(html=False).get_template(_TEMPLATE_FILES[fmt]).render(lab=model)


@dataclass
class PathOverlay:
    """What a trace report marks on the picture: steps and notes per node or pod, links crossed."""

    steps: dict[str, list[int]] = field(default_factory=dict)  # node name or pod key -> probe step numbers
    notes: dict[str, list[str]] = field(default_factory=dict)  # node name or pod key -> what acted there
    dropped: set[str] = field(default_factory=set)
    links: set[str] = field(default_factory=set)  # Link.key of links between consecutive hops
    mgmt_nodes: set[str] = field(default_factory=set)  # nodes whose mgmt port the probe used


def trace_overlay(model: Model, trace: dict[str, Any] | None) -> PathOverlay:
    overlay = PathOverlay()
    if not trace:
        return overlay
    hops = trace.get("probe") or []
    for step, hop in enumerate(hops, 1):
        name = hop.get("name", "")
        overlay.steps.setdefault(name, []).append(step)
        notes = overlay.notes.setdefault(name, [])
        notes += [r["meaning"] for r in hop.get("rules") or [] if r.get("meaning")]
        if hop.get("encap"):
            notes.append(hop["encap"])
        if hop.get("outcome") == "dropped":
            overlay.dropped.add(name)
    pod_node = {p.key: p.node for p in model.pods}
    nodes = [pod_node.get(h.get("name"), h.get("name")) for h in hops]
    mgmt_if = {n.name: n.mgmt_ifname for n in model.nodes}
    for here, there, hop, nxt in zip(nodes, nodes[1:], hops, hops[1:], strict=False):
        if here == there:
            continue
        direct = [link.key for link in model.links
                  if {link.a.ref, link.b.ref} == {f"{here}:{hop.get('oif')}", f"{there}:{nxt.get('iif')}"}]
        if direct:
            overlay.links.update(direct)
        elif mgmt_if.get(here) and mgmt_if.get(there):
            overlay.mgmt_nodes.update((here, there))
    return overlay


_SUFFIXES = {".html": "html", ".htm": "html", ".dot": "dot", ".gv": "dot", ".mmd": "mermaid",
             ".mermaid": "mermaid", ".md": "mermaid"}


def choose_format(fmt: str | None, output: str | Path | None = None) -> str:
    """The format to draw in: `fmt` when given, else what the output file's name says
    (.html, .dot/.gv, .mmd/.mermaid/.md), else mermaid (text for a terminal or a Markdown file)."""
    if fmt:
        if fmt not in FORMATS:
            raise LabkitError(f"unknown graph format {fmt!r}; valid formats: {', '.join(FORMATS)}")
        return fmt
    if output is not None:
        suffix = Path(output).suffix.lower()
        if suffix in _SUFFIXES:
            return _SUFFIXES[suffix]
        raise LabkitError(f"cannot tell the graph format from {str(output)!r}: give --format "
                          f"({', '.join(FORMATS)}) or name the file .html, .dot or .mmd")
    return "mermaid"


# ---------------------------------------------------------------- model


@dataclass
class Interface:
    name: str
    addresses: list[str]
    peer: str | None


@dataclass
class Pod:
    namespace: str
    name: str
    node: str | None
    ip: str | None
    key: str  # "namespace/name"
    slug: str
    ips: list[str] = field(default_factory=list)  # both families' addresses of a dual-stack pod, `ip` first

    @property
    def addresses(self) -> str:
        """What a label shows: every address of the pod (`10.244.1.5 fd00:10:244:1::5`)."""
        return " ".join(self.ips) if self.ips else (self.ip or "")


@dataclass
class Node:
    name: str
    kind: str
    slug: str
    mgmt_ipv4: str | None = None
    mgmt_ifname: str | None = None
    mgmt_addresses: list[str] = field(default_factory=list)
    pod_cidr: str | None = None
    mgmt_ipv6: str | None = None
    pod_cidrs: list[str] = field(default_factory=list)  # one per cluster family, `pod_cidr` first
    running: bool | None = None
    interfaces: dict[str, Interface] = field(default_factory=dict)
    pods: list[Pod] = field(default_factory=list)


@dataclass
class End:
    node: str
    ifname: str
    addresses: list[str]

    @property
    def ref(self) -> str:
        return f"{self.node}:{self.ifname}"


@dataclass
class Link:
    a: End
    b: End
    key: str  # "a-node:a-if--b-node:b-if"
    slug: str


@dataclass
class Endpoint:
    text: str
    ip: str | None
    pod: Pod | None


@dataclass
class Service:
    namespace: str
    name: str
    type: str
    cluster_ip: str | None
    ports: list[str]
    endpoints: list[Endpoint]
    key: str
    slug: str
    external_name: str | None = None
    cluster_ips: list[str] = field(default_factory=list)  # a dual-stack Service's, primary first

    @property
    def address(self) -> str:
        """What the service's name resolves to: its ClusterIP(s), a CNAME, or the pods (headless)."""
        if self.external_name:
            return f"CNAME {self.external_name}"
        if self.cluster_ip and self.cluster_ips:
            return " ".join(self.cluster_ips)
        return self.cluster_ip or "no cluster IP"


@dataclass
class Model:
    name: str
    runtime: str | None
    source: str | None
    phase: str | None
    nodes: list[Node]
    links: list[Link]
    mgmt: dict[str, Any] | None
    pods: list[Pod]
    unplaced_pods: list[Pod]
    services: list[Service]
    dns_ip: str | None

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)


class _Slugs:
    """Identifiers safe in HTML ids, Mermaid ids and file names, unique, and stable: the same
    name gets the same slug in every render of the same lab."""

    def __init__(self) -> None:
        self.used: set[str] = set()

    def __call__(self, prefix: str, name: str) -> str:
        base = f"{prefix}{re.sub(r'[^A-Za-z0-9_-]', '_', name)}"
        slug, n = base, 1
        while slug.replace("-", "_") in self.used:
            n += 1
            slug = f"{base}_{n}"
        self.used.add(slug.replace("-", "_"))
        return slug


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def build_model(summary: dict[str, Any]) -> Model:
    """Normalise a summary (from a plan or from `status`, possibly partial) for the templates."""
    if not isinstance(summary, dict):
        raise LabkitError(f"cannot draw a lab from {type(summary).__name__}: expected the lab summary "
                          "(labkit status --format json)")
    slugs = _Slugs()
    mgmt = summary.get("mgmt") or None
    if isinstance(mgmt, dict):  # the subnets a label shows: IPv4, and IPv6 when the mgmt network has it
        mgmt = {**mgmt, "subnets": " ".join(_text(mgmt.get(k)) for k in ("subnet", "subnet6") if mgmt.get(k))}
    nodes: dict[str, Node] = {}
    for raw in summary.get("nodes") or []:
        name = _text(raw.get("name"))
        pod_cidr = raw.get("pod_cidr") or None
        node = Node(name=name, kind=_text(raw.get("kind")) or "?", slug=slugs("node-", name),
                    mgmt_ipv4=raw.get("mgmt_ipv4") or None, pod_cidr=pod_cidr,
                    running=raw.get("running"), mgmt_ipv6=raw.get("mgmt_ipv6") or None,
                    pod_cidrs=[_text(c) for c in raw.get("pod_cidrs") or ([pod_cidr] if pod_cidr else [])])
        for iface in raw.get("interfaces") or []:
            ifname = _text(iface.get("name"))
            node.interfaces[ifname] = Interface(ifname, [_text(a) for a in [*(iface.get("ipv4") or []),
                                                                              *(iface.get("ipv6") or [])]],
                                                iface.get("peer") or None)
        # the mgmt interface: the one without a peer holding a mgmt address (eth0)
        mgmt_ips = [ip for ip in (node.mgmt_ipv4, node.mgmt_ipv6) if ip]
        for iface in node.interfaces.values():
            if iface.peer is None and mgmt_ips and any(a.split("/")[0] in mgmt_ips for a in iface.addresses):
                node.mgmt_ifname, node.mgmt_addresses = iface.name, iface.addresses
                break
        else:
            if mgmt_ips:
                node.mgmt_ifname, node.mgmt_addresses = "eth0", mgmt_ips
        nodes[name] = node

    def end(ref: Any) -> End:
        text = _text(ref)
        node_name, _, ifname = text.rpartition(":") if ":" in text else (text, "", "")
        if node_name not in nodes:  # a link to a node the summary does not list: still draw it
            nodes[node_name] = Node(name=node_name, kind="?", slug=slugs("node-", node_name))
        iface = nodes[node_name].interfaces.get(ifname)
        return End(node_name, ifname, list(iface.addresses) if iface else [])

    links: list[Link] = []
    raw_links = summary.get("links")
    if raw_links is None:  # older status records: rebuild the links from the interfaces' peers
        seen: set[frozenset[str]] = set()
        raw_links = []
        for node in list(nodes.values()):
            for iface in node.interfaces.values():
                if iface.peer:
                    pair = frozenset((f"{node.name}:{iface.name}", iface.peer))
                    if pair not in seen:
                        seen.add(pair)
                        raw_links.append({"a": f"{node.name}:{iface.name}", "b": iface.peer})
    for raw in raw_links:
        a, b = end(raw.get("a")), end(raw.get("b"))
        key = f"{a.ref}--{b.ref}"
        links.append(Link(a, b, key, slugs("link-", key)))

    pods: list[Pod] = []
    unplaced: list[Pod] = []
    by_ip: dict[str, Pod] = {}
    by_key: dict[str, Pod] = {}
    for raw in summary.get("pods") or []:
        ns, name = _text(raw.get("namespace")) or "default", _text(raw.get("name"))
        key = f"{ns}/{name}"
        pod = Pod(ns, name, raw.get("node") or None, raw.get("ip") or None, key, slugs("pod-", key),
                  [_text(ip) for ip in raw.get("ips") or []])
        pods.append(pod)
        if pod.node in nodes:
            nodes[pod.node].pods.append(pod)
        else:
            unplaced.append(pod)
        by_key[key] = pod
        for ip in pod.ips or ([pod.ip] if pod.ip else []):
            by_ip.setdefault(_canonical(ip.split("/")[0]), pod)

    services: list[Service] = []
    for raw in summary.get("services") or []:
        ns, name = _text(raw.get("namespace")) or "default", _text(raw.get("name"))
        key = f"{ns}/{name}"
        endpoints = [_endpoint(e, ns, by_ip, by_key) for e in raw.get("endpoints") or []]
        cluster_ip = _text(raw.get("cluster_ip")) or None
        kind = _text(raw.get("type")) or "ClusterIP"
        if cluster_ip == "None":
            cluster_ip, kind = None, f"{kind}, headless"
        services.append(Service(ns, name, kind, cluster_ip, [_port(p) for p in raw.get("ports") or []],
                                endpoints, key, slugs("svc-", key), _text(raw.get("external_name")) or None,
                                [_text(ip) for ip in raw.get("cluster_ips") or [] if ip and ip != "None"]))

    dns = summary.get("dns") or None
    return Model(name=_text(summary.get("name")) or "lab", runtime=summary.get("runtime"),
                 source=summary.get("source"), phase=summary.get("phase"), nodes=list(nodes.values()),
                 links=links, mgmt=mgmt, pods=pods, unplaced_pods=unplaced, services=services,
                 dns_ip=_text(dns.get("ip")) or None if isinstance(dns, dict) else None)


def _canonical(ip: str) -> str:
    """An address as `ipaddress` writes it (IPv6 compressed, lowercase), so lookups by address match."""
    try:
        return str(ipaddress.ip_address(ip))
    except ValueError:
        return ip


def _port(port: Any) -> str:
    if not isinstance(port, dict):
        return _text(port)
    text = f"{_text(port.get('port'))}/{_text(port.get('protocol') or 'TCP')}"
    if port.get("name"):
        text = f"{port['name']} {text}"
    target = port.get("targetPort", port.get("target_port"))
    if target not in (None, "", port.get("port")):
        text += f" → {target}"
    node_port = port.get("nodePort", port.get("node_port"))
    if node_port:
        text += f" (node {node_port})"
    return text


def _endpoint(raw: Any, namespace: str, by_ip: dict[str, Pod], by_key: dict[str, Pod]) -> Endpoint:
    """An endpoint as `status` gives it: {ip, pod, node, hostname}, "ip" or "ip:port"."""
    if isinstance(raw, dict):
        ip = _text(raw.get("ip") or raw.get("address")) or None
        port = raw.get("port")
        text = f"{ip}:{port}" if ip and port else (ip or _text(raw.get("pod") or raw))
        if raw.get("hostname"):
            text += f" ({raw['hostname']})"
        if raw.get("ready") is False:
            text += " (not ready)"
        pod_name = _text(raw.get("pod"))
        if pod_name:
            pod = by_key.get(pod_name if "/" in pod_name else f"{namespace}/{pod_name}")
            if pod is not None:
                return Endpoint(text, ip, pod)
    else:
        text = _text(raw)
        ip = text
        if text.count(":") == 1:  # ipv4:port
            ip = text.split(":")[0]
        elif text.startswith("[") and "]" in text:  # [ipv6]:port
            ip = text[1:text.index("]")]
    if ip:
        try:
            ip = str(ipaddress.ip_address(ip.split("/")[0]))
        except ValueError:
            ip = None
    return Endpoint(text, ip, by_ip.get(ip) if ip else None)


# ---------------------------------------------------------------- text formats


def _dot_escape(value: Any) -> str:
    """A DOT double-quoted string's content (escString: backslash, quote and newline escaped)."""
    # graphviz decodes HTML entities in strings: '&' is written '&amp;' so names show as they are
    return (_text(value).replace("&", "&amp;").replace("\\", "\\\\").replace('"', '\\"')
            .replace("\r", "").replace("\n", "\\n"))


def dot_quote(value: Any) -> str:
    return f'"{_dot_escape(value)}"'


def dot_label(lines: Iterable[Any]) -> str:
    """Several lines as one quoted DOT label, centred."""
    return '"' + "\\n".join(_dot_escape(line) for line in lines if _text(line)) + '"'


_MERMAID_ENTITIES = {"&": "#amp;", "#": "#35;", '"': "#quot;", "<": "#lt;", ">": "#gt;", "|": "#124;",
                     "`": "#96;", "%": "#37;", "*": "#42;", "\n": " ", "\r": ""}


def mermaid_escape(value: Any) -> str:
    """Text safe inside a quoted Mermaid label: entity codes for what Mermaid would parse."""
    return "".join(_MERMAID_ENTITIES.get(ch, ch) for ch in _text(value))


def mermaid_label(lines: Iterable[Any]) -> str:
    return '"' + "<br/>".join(mermaid_escape(line) for line in lines if _text(line)) + '"'


def mermaid_id(slug: str) -> str:
    """Mermaid ids: letters, digits, '_' (never a keyword such as `end`, thanks to the prefix)."""
    return re.sub(r"[^A-Za-z0-9_]", "_", slug)


def _environment(html: bool) -> jinja2.Environment:
    env = templating.environment(trim=True, html=html)
    env.filters.update(dot=dot_quote, dot_label=dot_label, mmd=mermaid_label, mmd_id=mermaid_id,
                       addrs=lambda addrs: " ".join(addrs))
    return env


# ---------------------------------------------------------------- HTML layout
#
# Nodes go on a grid, placed greedily in breadth-first order: each at the free cell closest
# to its already placed neighbours, so chains snake across rows, stars gather around their hub
# and small meshes stay planar. Links between neighbouring cells are straight; longer ones bow.
# Pods are small boxes inside their node's box; the mgmt network is a bus: a trunk on the left
# with a branch above every row and a stub down to each node's eth0.

CHAR = 0.62  # width of a monospace character, in ems (DejaVu Sans Mono 0.602, with room)
NAME_PX, TEXT_PX, LABEL_PX, POD_PX = 14, 11, 11, 10.5
LINE = 1.3  # line height, in ems
MARGIN = 28
MAX_WIDTH = 1800  # natural width the grid aims to stay within (the page scrolls beyond)
BOX_MAX = 340


def _w(text: str, px: float) -> float:
    return len(text) * px * CHAR


@dataclass
class Label:
    x: float
    y: float
    w: float
    h: float
    lines: list[str]
    ux: float = 0.0  # the way it may move to get clear of others: away from its node
    uy: float = -1.0


@dataclass
class PodBox:
    pod: Pod
    x: float
    y: float
    w: float
    h: float
    text: str
    ip: str


@dataclass
class NodeBox:
    node: Node
    x: float = 0
    y: float = 0
    w: float = 0
    h: float = 0
    col: int = 0
    row: int = 0
    lines: list[tuple[str, str]] = field(default_factory=list)  # (css class, text)
    pods: list[PodBox] = field(default_factory=list)
    stub: dict[str, Any] | None = None

    @property
    def cx(self) -> float:
        return self.x + self.w / 2

    @property
    def cy(self) -> float:
        """Links aim at the middle of the header (name and kind), so links along a row are
        level whatever the pods below make of the boxes' heights."""
        return self.y + min(self.h, self.head) / 2

    @property
    def head(self) -> float:
        return 10 + NAME_PX * LINE + (len(self.lines) - 1) * TEXT_PX * LINE + 8


@dataclass
class LinkShape:
    link: Link
    path: str
    a: Label
    b: Label
    extent: list[tuple[float, float]] = field(default_factory=list)  # points the drawing reaches


@dataclass
class Layout:
    width: float
    height: float
    nodes: list[NodeBox]
    links: list[LinkShape]
    bus: dict[str, Any] | None
    columns: int


def _label(lines: list[str]) -> tuple[float, float]:
    return (max((_w(t, LABEL_PX) for t in lines), default=0) + 10,
            len(lines) * LABEL_PX * LINE + 6)


def _link_lines(end: End) -> list[str]:
    return [end.ifname or "?", *end.addresses]


def layout(model: Model) -> Layout:
    boxes = {n.name: NodeBox(n) for n in model.nodes}
    # ---- box contents and sizes: one width for all, heights per node
    for box in boxes.values():
        node = box.node
        box.lines.append(("name", node.name))
        kind = node.kind if node.running is not False else f"{node.kind} (not running)"
        box.lines.append(("kind", kind))
        if node.pod_cidrs:
            box.lines.append(("info", f"pods {', '.join(node.pod_cidrs)}"))
    text_w = max([_w(t, NAME_PX if c == "name" else TEXT_PX) for b in boxes.values() for c, t in b.lines]
                 + [_w(f"{_pod_text(p)}  {p.addresses}", POD_PX) + 16 for p in model.pods if p.node in boxes]
                 + [0])
    box_w = min(BOX_MAX, max(130.0, text_w + 24))
    pod_h = POD_PX * LINE + 6
    for box in boxes.values():
        box.w = box_w
        box.h = box.head + (len(box.node.pods) * (pod_h + 4) + 4 if box.node.pods else 0)

    # ---- label sizes decide the gaps between cells
    label_w, label_h = 40.0, 0.0
    for link in model.links:
        for end in (link.a, link.b):
            w, h = _label(_link_lines(end))
            label_w, label_h = max(label_w, w), max(label_h, h)
    has_bus = model.mgmt is not None and any(n.mgmt_ifname for n in model.nodes)
    gap_x = max(90.0, 2 * label_w + 44) if model.links else 70.0
    degree: dict[str, int] = {}
    for link in model.links:
        for end in (link.a, link.b):
            degree[end.node] = degree.get(end.node, 0) + 1
    crowd = max(0, max(degree.values(), default=0) - 3)  # busy nodes: more room for labels
    gap_y = max(64.0, 2 * label_h + 56 + 24 * min(crowd, 4)) if model.links else 48.0
    bus_gap = 30.0 if has_bus else 0.0
    gap_y += bus_gap

    n = len(boxes)
    pitch_x = box_w + gap_x
    columns = max(1, min(n, math.ceil(math.sqrt(1.6 * n)), int((MAX_WIDTH - 2 * MARGIN + gap_x) // pitch_x)))
    cells = _place(model, columns)
    for name, (col, row) in cells.items():
        boxes[name].col, boxes[name].row = col, row

    rows = max((r for _, r in cells.values()), default=-1) + 1
    row_h = [max((b.h for b in boxes.values() if b.row == r), default=0) for r in range(rows)]
    left = MARGIN + (34 if has_bus else 0)
    loops = any(link.a.node == link.b.node for link in model.links)
    top = MARGIN + (44 if has_bus else 0) + bus_gap + (label_h + 12 if loops else 0)
    row_y = []
    y = top
    for r in range(rows):
        row_y.append(y)
        y += row_h[r] + gap_y
    used_cols = max((b.col for b in boxes.values()), default=0) + 1
    width = left + used_cols * pitch_x - gap_x + MARGIN
    height = (y - gap_y + MARGIN) if rows else top + MARGIN

    # links may bow and their labels reach beyond the grid: if they would leave the drawing at
    # the top or left, move everything down/right and draw them again
    dx = dy = 0.0
    for _ in range(3):
        for box in boxes.values():
            box.x = left + dx + box.col * pitch_x
            box.y = row_y[box.row] + dy
            _fill_pods(box, pod_h)
        shapes = _link_shapes(model.links, boxes, label_h)
        points = [p for shape in shapes for p in shape.extent]
        points += [(lbl.x, lbl.y) for shape in shapes for lbl in (shape.a, shape.b)]
        min_x, min_y = min((p[0] for p in points), default=MARGIN), min((p[1] for p in points), default=MARGIN)
        if min_x >= MARGIN / 2 - 0.5 and min_y >= MARGIN / 2 - 0.5:
            break
        dx += max(0.0, MARGIN / 2 - min_x)
        dy += max(0.0, MARGIN / 2 - min_y)
    right = max([p[0] for p in points] + [lbl.x + lbl.w for shape in shapes for lbl in (shape.a, shape.b)],
                default=0)
    bottom = max([p[1] for p in points] + [lbl.y + lbl.h for shape in shapes for lbl in (shape.a, shape.b)],
                 default=0)
    width = max(width + dx, right + MARGIN / 2)
    height = max(height + dy, bottom + MARGIN / 2)
    row_y = [y + dy for y in row_y]
    left += dx
    bus = _bus(model, boxes, row_y, bus_gap, left) if has_bus else None
    if bus:
        width = max(width, bus["title_x"] + bus["title_w"] + MARGIN)
    width = max(width, 320.0)
    return Layout(round(width), round(height), [boxes[n.name] for n in model.nodes], shapes, bus, columns)


def _fill_pods(box: NodeBox, pod_h: float) -> None:
    box.pods = []
    y = box.y + box.head
    for pod in box.node.pods:
        box.pods.append(PodBox(pod, box.x + 8, y, box.w - 16, pod_h, _pod_text(pod), pod.addresses))
        y += pod_h + 4


def _pod_text(pod: Pod) -> str:
    return pod.name if pod.namespace == "default" else pod.key


def _place(model: Model, columns: int) -> dict[str, tuple[int, int]]:
    """Grid cells (col, row) for every node: components in bands of rows one below the other,
    greedy inside each; nodes without links fill up the last row, then rows of their own."""
    order = {n.name: i for i, n in enumerate(model.nodes)}
    adjacency: dict[str, list[str]] = {name: [] for name in order}
    for link in model.links:
        a, b = link.a.node, link.b.node
        if a != b:
            if b not in adjacency[a]:
                adjacency[a].append(b)
            if a not in adjacency[b]:
                adjacency[b].append(a)
    components: list[list[str]] = []
    seen: set[str] = set()
    for name in order:
        if name in seen:
            continue
        comp, stack = [], [name]
        seen.add(name)
        while stack:
            current = stack.pop()
            comp.append(current)
            for other in adjacency[current]:
                if other not in seen:
                    seen.add(other)
                    stack.append(other)
        components.append(sorted(comp, key=order.__getitem__))

    cells: dict[str, tuple[int, int]] = {}
    band = 0  # the first row below everything placed so far
    for comp in (c for c in components if len(c) > 1):
        degree = {name: len(adjacency[name]) for name in comp}
        pathlike = max(degree.values()) <= 2
        ends = [name for name in comp if degree[name] == 1]
        # a path starts at an end in the first column and snakes; anything else grows around
        # its best connected node, in the middle, upwards as well as downwards
        start = ends[0] if pathlike and ends else max(comp, key=lambda nm: (degree[nm], -order[nm]))
        taken: dict[tuple[int, int], str] = {(0 if pathlike else columns // 2, 0): start}
        local = {start: next(iter(taken))}
        queue, parent = [start], {start}
        while queue:
            current = queue.pop(0)
            for other in adjacency[current]:
                if other in parent:
                    continue
                parent.add(other)
                placed = [local[x] for x in adjacency[other] if x in local]
                cell = _best_cell(placed, local[current], taken, columns, upwards=not pathlike)
                taken[cell] = other
                local[other] = cell
                queue.append(other)
        top = min(r for _, r in local.values())
        for name, (col, row) in local.items():
            cells[name] = (col, row - top + band)
        band = max(r for _, r in cells.values()) + 1
    row = band - 1 if cells else 0
    col = max((c for c, r in cells.values() if r == row), default=-1) + 1
    for comp in (c for c in components if len(c) == 1):
        if col >= columns:
            row, col = row + 1, 0
        cells[comp[0]] = (col, row)
        col += 1
    return cells


# neighbour preference, relative to the node that reached this one: right, left, down, diagonals
_PREFER = [(1, 0), (-1, 0), (0, 1), (1, 1), (-1, 1), (0, -1), (1, -1), (-1, -1)]


def _best_cell(placed: list[tuple[int, int]], parent: tuple[int, int], taken: dict[tuple[int, int], str],
               columns: int, upwards: bool) -> tuple[int, int]:
    """The free cell nearest (in summed distance) to the placed neighbours; ties go by _PREFER."""
    rows = [r for _, r in taken]
    best: tuple[Any, ...] | None = None
    for row in range(min(rows) - 2 if upwards else min(rows), max(rows) + 3):
        for col in range(columns):
            if (col, row) in taken:
                continue
            cost = round(sum(math.hypot(col - c, row - r) for c, r in placed), 6)
            rel = (col - parent[0], row - parent[1])
            prefer = _PREFER.index(rel) if rel in _PREFER else len(_PREFER)
            key = (cost, prefer, row, col)
            if best is None or key < best:
                best = key
    assert best is not None
    return best[3], best[2]


def _exit(box: NodeBox, cx: float, cy: float, ux: float, uy: float) -> tuple[float, float]:
    """Where a ray from (cx, cy) inside `box` in direction u leaves it."""
    tx = ((box.x + box.w - cx) if ux > 0 else (cx - box.x)) / abs(ux) if ux else math.inf
    ty = ((box.y + box.h - cy) if uy > 0 else (cy - box.y)) / abs(uy) if uy else math.inf
    t = max(0.0, min(tx, ty))
    return cx + ux * t, cy + uy * t


def _end_label(box: NodeBox, cx: float, cy: float, ux: float, uy: float, lines: list[str]) -> Label:
    w, h = _label(lines)
    ex, ey = _exit(box, cx, cy, ux, uy)
    s = abs(ux) * w / 2 + abs(uy) * h / 2 + 5
    return Label(ex + ux * s - w / 2, ey + uy * s - h / 2, w, h, lines, ux, uy)


def _link_shapes(links: list[Link], boxes: dict[str, NodeBox], label_h: float) -> list[LinkShape]:
    pairs: dict[frozenset[str], list[Link]] = {}
    for link in links:
        pairs.setdefault(frozenset((link.a.node, link.b.node)), []).append(link)
    shapes = []
    for link in links:
        a, b = boxes[link.a.node], boxes[link.b.node]
        siblings = pairs[frozenset((link.a.node, link.b.node))]
        index, count = siblings.index(link), len(siblings)
        la, lb = _link_lines(link.a), _link_lines(link.b)
        if a is b:  # a loop on one node: a bow up from its top edge, a label either side
            wa, ha = _label(la)
            wb, hb = _label(lb)
            sx = a.x + wa + 12 + index * (wa + wb + 50)
            ex = sx + 30
            path = f"M{sx:.1f},{a.y:.1f} C{sx - 12:.1f},{a.y - 44:.1f} {ex + 12:.1f},{a.y - 44:.1f} {ex:.1f},{a.y:.1f}"
            shapes.append(LinkShape(link, path, Label(sx - 6 - wa, a.y - 4 - ha, wa, ha, la, -0.6, -0.8),
                                    Label(ex + 6, a.y - 4 - hb, wb, hb, lb, 0.6, -0.8),
                                    [(sx - 9, a.y), (ex + 9, a.y), ((sx + ex) / 2, a.y - 33)]))
            continue
        dx, dy = b.cx - a.cx, b.cy - a.cy
        dist = math.hypot(dx, dy) or 1
        ux, uy = dx / dist, dy / dist
        px, py = -uy, ux  # perpendicular; the same side for a->b and b->a, so siblings fan out
        if (a.row, a.col, link.a.node) > (b.row, b.col, link.b.node):
            px, py = -px, -py
        spread = index - (count - 1) / 2
        adjacent = abs(a.col - b.col) <= 1 and abs(a.row - b.row) <= 1
        base = 0.0 if adjacent else 0.22 * dist  # far links bow, so they miss the boxes between
        if count == 1 and base == 0:
            sa, sb = _exit(a, a.cx, a.cy, ux, uy), _exit(b, b.cx, b.cy, -ux, -uy)
            path = f"M{sa[0]:.1f},{sa[1]:.1f} L{sb[0]:.1f},{sb[1]:.1f}"
            shapes.append(LinkShape(link, path, _end_label(a, a.cx, a.cy, ux, uy, la),
                                    _end_label(b, b.cx, b.cy, -ux, -uy, lb), [sa, sb]))
            continue
        if count == 1:
            qx, qy = (a.cx + b.cx) / 2 + px * base, (a.cy + b.cy) / 2 + py * base
            ua, ub = _unit(qx - a.cx, qy - a.cy), _unit(qx - b.cx, qy - b.cy)
            sa, sb = _exit(a, a.cx, a.cy, *ua), _exit(b, b.cx, b.cy, *ub)
            label_a, label_b = _end_label(a, a.cx, a.cy, *ua, la), _end_label(b, b.cx, b.cy, *ub, lb)
        else:
            # siblings between the same two nodes: their end labels stack across the links, in
            # the same order at both ends; each link runs in its own lane through its labels
            off = spread * (label_h + 6)
            offset = off + base * 0.5  # a far pair's lanes bow out together
            label_a = _end_label(a, a.cx, a.cy, ux, uy, la)
            label_b = _end_label(b, b.cx, b.cy, -ux, -uy, lb)
            for label in (label_a, label_b):
                label.x += px * offset
                label.y += py * offset
            shift = spread * min(10.0, min(a.head, b.head) * 0.6 / max(1, count - 1))
            ca = (label_a.x + label_a.w / 2, label_a.y + label_a.h / 2)
            cb = (label_b.x + label_b.w / 2, label_b.y + label_b.h / 2)
            ax, ay = a.cx + px * shift, a.cy + py * shift
            bx, by = b.cx + px * shift, b.cy + py * shift
            sa = _exit(a, ax, ay, *_unit(ca[0] - ax, ca[1] - ay))
            sb = _exit(b, bx, by, *_unit(cb[0] - bx, cb[1] - by))
            path = (f"M{sa[0]:.1f},{sa[1]:.1f} L{ca[0]:.1f},{ca[1]:.1f} L{cb[0]:.1f},{cb[1]:.1f} "
                    f"L{sb[0]:.1f},{sb[1]:.1f}")
            shapes.append(LinkShape(link, path, label_a, label_b, [sa, ca, cb, sb]))
            continue
        path = f"M{sa[0]:.1f},{sa[1]:.1f} Q{qx:.1f},{qy:.1f} {sb[0]:.1f},{sb[1]:.1f}"
        mid = (0.25 * sa[0] + 0.5 * qx + 0.25 * sb[0], 0.25 * sa[1] + 0.5 * qy + 0.25 * sb[1])
        shapes.append(LinkShape(link, path, label_a, label_b, [sa, sb, mid]))
    _declutter(shapes, boxes)
    return shapes


def _declutter(shapes: list[LinkShape], boxes: dict[str, NodeBox]) -> None:
    """Move a label that covers a node or an earlier label away from its node, step by step,
    until it is clear (loops' labels last: they give way)."""
    labels = [lbl for s in shapes if s.link.a.node != s.link.b.node for lbl in (s.a, s.b)]
    labels += [lbl for s in shapes if s.link.a.node == s.link.b.node for lbl in (s.a, s.b)]
    rects = [(b.x, b.y, b.w, b.h) for b in boxes.values()]
    placed: list[Label] = []
    # candidates nearest first: out along the link, then sideways as well
    moves = sorted({(a, c) for a in range(0, 31) for c in range(-12, 13)},
                   key=lambda m: (m[0] ** 2 + 2 * m[1] ** 2, m[0], m[1]))
    for label in labels:
        x0, y0 = label.x, label.y
        px, py = -label.uy, label.ux
        best: tuple[float, float, float] | None = None  # (covered area, x, y): the least bad
        for along, across in moves:
            label.x = x0 + (label.ux * along + px * across) * 6
            label.y = y0 + (label.uy * along + py * across) * 6
            covered = sum(_area(label, *r) for r in rects) * 4 + sum(
                _area(label, p.x - 1, p.y - 1, p.w + 2, p.h + 2) for p in placed)
            if covered == 0:
                break
            if best is None or covered < best[0]:
                best = (covered, label.x, label.y)
        else:
            if best is not None:
                label.x, label.y = best[1], best[2]
        placed.append(label)


def _area(a: Label, x: float, y: float, w: float, h: float) -> float:
    """How much of the rectangle (x, y, w, h) the label covers."""
    dx = min(a.x + a.w, x + w) - max(a.x, x)
    dy = min(a.y + a.h, y + h) - max(a.y, y)
    return dx * dy if dx > 0 and dy > 0 else 0.0


def _unit(x: float, y: float) -> tuple[float, float]:
    d = math.hypot(x, y) or 1
    return x / d, y / d


def _bus(model: Model, boxes: dict[str, NodeBox], row_y: list[float], bus_gap: float,
         left: float) -> dict[str, Any]:
    mgmt = model.mgmt or {}
    title = f"mgmt {mgmt.get('subnets') or mgmt.get('subnet') or ''}".strip()
    extra = []
    if mgmt.get("host_access"):
        extra.append("host access")
    if mgmt.get("netns"):
        extra.append(f"bridge in {mgmt['netns']}")
    trunk_x = left - 18
    title_y = MARGIN
    branches = []
    attached = [b for b in boxes.values() if b.node.mgmt_ifname]
    for row, y in enumerate(row_y):
        in_row = [b for b in attached if b.row == row]
        if not in_row:
            continue
        by = y - bus_gap + 8
        for box in in_row:
            sx = box.x + 14
            label = f"{box.node.mgmt_ifname} {' '.join(box.node.mgmt_addresses)}".strip()
            box.stub = {"x": sx, "y1": by, "y2": box.y, "label": label, "lx": sx + 5, "ly": box.y - 5}
        branches.append({"y": by, "x1": trunk_x, "x2": max(b.x + 14 for b in in_row)})
    bottom = max(b["y"] for b in branches)
    return {"title": title, "extra": " · ".join(extra), "title_x": trunk_x - 8, "title_y": title_y,
            "title_w": _w(title, TEXT_PX + 1) + _w(" · ".join(extra), TEXT_PX) + 40,
            "title_h": 26, "trunk_x": trunk_x, "trunk_y1": title_y + 26, "trunk_y2": bottom,
            "branches": branches}
