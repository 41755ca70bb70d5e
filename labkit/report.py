"""Status as tables for people (rich); the JSON form is `lab.status()` itself."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

# Address columns are no_wrap: rich gives them their full width and folds the others (an address is
# never cut short or split over lines).
PIPED_WIDTH = 160  # not a terminal: wide enough that nothing needs folding


def _console() -> Console:
    console = Console()
    return console if console.is_terminal else Console(width=PIPED_WIDTH)


def print_status(labs: list[dict[str, Any]], console: Console | None = None) -> None:
    console = console or _console()
    if not labs:
        console.print("no labs are up")
    for lab in labs:
        title = lab.get("title") or lab["name"]  # the file's name for it; `name` is what labkit runs it as
        named = title if title == lab["name"] else f"{title} (runs as {lab['name']})"
        nodes = Table(title=f"lab {named} ({lab.get('runtime')}, {lab.get('phase')})", title_justify="left")
        nodes.add_column("node")
        nodes.add_column("kind")
        # a lab with IPv6 shows both families' addresses, one a line; an IPv4-only lab's table is as it was
        v6 = any(n.get("mgmt_ipv6") for n in lab.get("nodes", []))
        nodes.add_column("mgmt ip" if v6 else "mgmt ipv4", no_wrap=True)
        nodes.add_column("pod cidr", no_wrap=True)
        nodes.add_column("interfaces")
        for node in lab.get("nodes", []):
            ifaces = "\n".join(f"{i['name']} {' '.join([*i.get('ipv4', []), *i.get('ipv6', [])])}".strip()
                                for i in node.get("interfaces", []))
            mgmt = "\n".join(a for a in (node.get("mgmt_ipv4"), node.get("mgmt_ipv6")) if a)
            cidrs = "\n".join(node.get("pod_cidrs") or ([node["pod_cidr"]] if node.get("pod_cidr") else []))
            nodes.add_row(node["name"], node["kind"], mgmt, cidrs, ifaces)
        console.print(nodes)
        if any(isinstance(n.get("bgp"), dict) for n in lab.get("nodes", [])):
            console.print(_bgp(lab["nodes"]))
        for problem in lab.get("health", {}).get("problems", []):
            console.print(f"degraded: {problem}")
        if lab.get("impairments"):
            print_impairments(lab["impairments"], console)
        if lab.get("pods"):
            pods = Table(title="pods", title_justify="left")
            for column in ("namespace", "name", "node"):
                pods.add_column(column)
            pods.add_column("ip", no_wrap=True)
            phases = any(pod.get("phase", "Running") != "Running" for pod in lab["pods"])  # pods that ran once
            if phases:
                pods.add_column("phase")
            stand_ins = any(c.get("stand_in") for pod in lab["pods"] for c in pod.get("containers") or [])
            if stand_ins:
                pods.add_column("stand-ins (labkit's stand-in runs instead, and why)", overflow="fold")
            for pod in lab["pods"]:
                row = [pod["namespace"], pod["name"], pod["node"], "\n".join(pod.get("ips") or [pod.get("ip") or ""])]
                if phases:
                    row.append(pod.get("phase", "Running"))
                if stand_ins:
                    row.append("\n".join(f"{c['name']}: {c['stand_in']}" for c in pod.get("containers") or []
                                         if c.get("stand_in")))
                pods.add_row(*row)
            console.print(pods)
        if lab.get("services"):
            console.print(_services(lab["services"]))
        if lab.get("dns"):
            dns_ips = ", ".join(lab["dns"].get("ips") or [lab["dns"]["ip"]])
            console.print(f"cluster DNS {dns_ips} (zone {lab['dns'].get('domain', '')})", highlight=False)
        if lab.get("ingress"):  # the HTTP front door: labkit.ingress
            edge = lab["ingress"]
            ports = ", ".join(f"{f['port']}/{f['protocol']} ({f['routes']} routes)" for f in edge["frontends"])
            console.print(f"ingress: HAProxy behind {edge['service']} on {ports}; config {edge['config']}",
                          highlight=False)
            for name, why in (edge.get("skipped") or {}).items():
                console.print(f"  not served: {name}: {why}", highlight=False)
        if lab.get("cni"):
            console.print(f"CNI bin dir {lab['cni']['bin_dir']} (labkit-cni, served by {lab['cni']['socket']})",
                          highlight=False)


def _services(services: list[dict[str, Any]]) -> Table:
    table = Table(title="services", title_justify="left")
    table.add_column("service", overflow="fold")  # namespace/name: one column less, so addresses fit 80 columns
    table.add_column("type", overflow="fold")
    table.add_column("cluster ip", no_wrap=True)
    table.add_column("ports", overflow="fold")
    table.add_column("endpoints", no_wrap=True)
    for svc in services:
        local = ", Local" if svc.get("external_traffic_policy") == "Local" else ""
        ports = "\n".join(f"{p['port']}/{p['protocol']}" + (f" (node {p['node_port']}{local})" if p.get("node_port")
                                                            else "") for p in svc["ports"])
        target = svc.get("external_name") or "\n".join(e["ip"] for e in svc.get("endpoints", []))
        table.add_row(f"{svc['namespace']}/{svc['name']}", svc["type"], _addresses(svc), ports, target)
    return table


def _addresses(svc: dict[str, Any]) -> str:
    """The ClusterIP, then the external addresses: a LoadBalancer's with its mode and announcing node (L2),
    or why it is pending; externalIPs."""
    ips = [ip for ip in svc.get("cluster_ips") or [] if ip and ip != "None"]
    lines = ips if ips and svc.get("cluster_ip") not in (None, "None") else [str(svc.get("cluster_ip") or "")]
    lb = svc.get("load_balancer")
    if isinstance(lb, dict):
        if lb.get("ip") is None:
            lines.append(f"lb <pending>: {lb.get('pending')}")
        else:
            how = lb.get("mode") or "not announced"
            if "announcing_node" in lb:
                how += f" @{lb['announcing_node'] or 'nobody'}"
            if lb.get("bgp_announcing"):
                how += f" from {','.join(lb['bgp_announcing'])}"
            lines.append(f"lb {lb['ip']} ({how})")
    lines += [f"ext {ip}" for ip in svc.get("external_ips", []) if not (isinstance(lb, dict) and ip == lb.get("ip"))]
    return "\n".join(lines)


def _bgp(nodes: list[dict[str, Any]]) -> Table:
    """Each BGP speaker's sessions and the routes its daemon holds (`birdc -s SOCKET show route` for more)."""
    table = Table(title="bgp (birdc -s <socket> show protocols | show route)", title_justify="left")
    table.add_column("node")
    table.add_column("as / router id", no_wrap=True)
    table.add_column("sessions", no_wrap=True)
    table.add_column("routes", no_wrap=True)
    table.add_column("socket", overflow="fold")
    for node in nodes:
        info = node.get("bgp")
        if not isinstance(info, dict):
            continue
        sessions = "\n".join(f"{s['peer']} AS{s['asn']} {s.get('state', '')}".rstrip() for s in info["sessions"])
        routes = "\n".join(f"{r['prefix']} {r['type']}" + (f" via {', '.join(r['via'])}" if r["via"] else "")
                           + f" ({r['protocol']})" for r in info.get("routes", []) if r.get("primary"))
        table.add_row(node["name"], f"AS{info['asn']}\n{info['router_id']}", sessions,
                      info.get("error") or routes, info.get("socket", ""))
    return table


def print_impairments(found: list[dict[str, Any]], console: Console | None = None) -> None:
    """Impairments in force (labkit netem show, status), one row per interface, as the kernel has them."""
    from labkit.topology.impairment import FIELDS, Impairment

    console = console or _console()
    if not found:
        console.print("no impairments in force")
        return
    table = Table(title="impairments (egress, read back from the kernel)", title_justify="left")
    for column in ("where", "impairment", "via", "dropped"):
        table.add_column(column)
    for item in found:
        imp = Impairment(**{k: item[k] for k in FIELDS if k in item})
        table.add_row(f"{item['node']}:{item['interface']}", imp.describe(), "+".join(item.get("via", [])),
                      str(item["dropped"]) if item.get("dropped") is not None else "")
    console.print(table)
