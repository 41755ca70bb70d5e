"""A trace report as text (for a terminal), JSON, or a Mermaid flowchart. Pure.

(`--format html` draws it on the lab picture: labkit.graph, given the report.)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from labkit import templating
from labkit.errors import LabkitError
from labkit.families import host_port

FORMATS = ("text", "json", "mermaid", "html")


def headline(report: Mapping[str, Any]) -> str:
    where = host_port(report["address"], report["port"]) if report.get("port") else report["address"]
    result = report["result"]
    verdict = ("open" if result["open"] else "closed") + (f" ({result['reason']})" if result.get("reason") else "")
    return (f"trace {report['lab']}: {report['source']} -> {report['destination']} ({where}/{report['protocol']}): "
            f"{verdict}")


def summary(report: Mapping[str, Any]) -> list[str]:
    lines = []
    if report.get("service"):
        chosen = report.get("endpoint")
        lines.append(f"service {report['service']} -> " + (f"endpoint {chosen}" if chosen else "no endpoint chosen"))
    if report.get("dropped"):
        lines.append(f"dropped at {report['dropped']['where']}: {report['dropped']['by']}")
    return lines


def _hop_line(i: int, hop: Mapping[str, Any]) -> str:
    inside = "sent" if hop["iif"] is None else f"in {hop['iif']}"
    if hop["outcome"] in ("forwarded", "sent"):
        inside += f", out {hop['oif']}"
    elif hop["outcome"] == "delivered":
        inside += ", delivered"
    else:
        inside += ", DROPPED"
    packet = hop.get("packet_in") or ""
    if hop.get("packet_out") and hop["packet_out"] != packet:
        packet += f"  =>  {hop['packet_out']}"
    return f"{i:>3}. {hop['name']} ({hop['kind']}): {inside}   {packet}"


def text(report: Mapping[str, Any], verbose: bool = False) -> str:
    out = [headline(report), *summary(report)]
    for title in ("probe", "reply"):
        hops = report.get(title) or []
        out.append("")
        out.append(f"{title}:" if hops else f"{title}: none seen")
        for i, hop in enumerate(hops, 1):
            out.append(_hop_line(i, hop))
            if hop.get("route"):
                out.append(f"       route  {hop['route']}")
            if hop.get("encap"):
                out.append(f"       encap  {hop['encap']}")
            for rule in hop.get("rules") or []:
                if rule.get("meaning"):
                    out.append(f"       rule   {rule['meaning']}   [{rule['table']} {rule['chain']}]")
                elif verbose:
                    out.append(f"       rule   {rule['rule']} ({rule['verdict']})   [{rule['table']} {rule['chain']}]")
            if hop.get("dropped_by") and all(r.get("meaning") != hop["dropped_by"] for r in hop.get("rules") or []):
                out.append(f"       drop   {hop['dropped_by']}")
    return "\n".join(out) + "\n"


def mermaid(report: Mapping[str, Any]) -> str:
    return templating.render("trace.mmd.j2", trim=True, report=report, headline=headline(report),
                             summary=summary(report), esc=_mermaid_escape)


_MERMAID = {"&": "#amp;", "#": "#35;", '"': "#quot;", "<": "#lt;", ">": "#gt;", "|": "#124;"}


def _mermaid_escape(value: Any) -> str:
    return "".join(_MERMAID.get(c, c) for c in str(value))


def render(report: Mapping[str, Any], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(report, indent=2) + "\n"
    if fmt == "text":
        return text(report)
    if fmt == "mermaid":
        return mermaid(report)
    raise LabkitError(f"unknown trace format {fmt!r}; valid formats: {', '.join(FORMATS)} (html: labkit trace)")
