"""Status as tables for people (rich); the JSON form is `lab.status()` itself."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def print_status(labs: list[dict[str, Any]], console: Console | None = None) -> None:
    console = console or Console()
    if not labs:
        console.print("no labs are up")
    for lab in labs:
        nodes = Table(title=f"lab {lab['name']} ({lab.get('runtime')}, {lab.get('phase')})", title_justify="left")
        for column in ("node", "kind", "mgmt ipv4", "pod cidr", "interfaces"):
            nodes.add_column(column)
        for node in lab.get("nodes", []):
            ifaces = ", ".join(f"{i['name']} {' '.join(i['ipv4'])}".strip() for i in node.get("interfaces", []))
            nodes.add_row(node["name"], node["kind"], node.get("mgmt_ipv4") or "", node.get("pod_cidr") or "",
                          ifaces)
        console.print(nodes)
        if lab.get("pods"):
            pods = Table(title="pods", title_justify="left")
            for column in ("namespace", "name", "node", "ip"):
                pods.add_column(column)
            for pod in lab["pods"]:
                pods.add_row(pod["namespace"], pod["name"], pod["node"], pod.get("ip") or "")
            console.print(pods)
        if lab.get("services"):
            services = Table(title="services", title_justify="left")
            for column in ("namespace", "name", "type", "cluster ip", "ports", "endpoints"):
                services.add_column(column)
            for svc in lab["services"]:
                ports = ", ".join(
                    f"{p['port']}/{p['protocol']}" + (f" (node {p['node_port']})" if p.get("node_port") else "")
                    for p in svc["ports"])
                target = svc.get("external_name") or ", ".join(e["ip"] for e in svc.get("endpoints", []))
                services.add_row(svc["namespace"], svc["name"], svc["type"], str(svc.get("cluster_ip") or ""),
                                 ports, target)
            console.print(services)
