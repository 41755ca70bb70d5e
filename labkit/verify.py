"""Declarative reachability and DNS checks (`expect:` in a topology) and their matrix.

    expect:
      - {from: default/client, to: web.default.svc.cluster.local:80, result: open}
      - {from: default/client, to: db.prod:5432, result: closed}
      - {from: ext, to: cp:30080, result: open}
      - {from: default/client, to: kube-dns.kube-system:53, protocol: udp, result: open}
      - {from: default/client, resolve: web, result: 10.96.0.0/16}
      - {from: default/client, resolve: nope.default, result: NXDOMAIN}

`from` is a pod (`NS/POD`) or a node (`NODE`). `to` is `NS/POD:PORT` (the pod's
IP), `NODE:PORT` (the node's mgmt IP), `IP:PORT` (`[IPv6]:PORT`), or a DNS name with
a port; with `protocol: icmp`, the same without a port, pinged. A
name is resolved inside the source, as the source would: a pod asks the cluster
DNS with its namespace's search list (`<ns>.svc.<zone> svc.<zone> <zone>`,
ndots 5), so DNS is part of what is checked; a node asks the same way as a pod
in `default` would (ClusterFirstWithHostNet). A single label that is the name of
a node of the lab means that node. A name that does not resolve counts as closed.

Address families: `family: 4|6` on a check picks the pod's address, the node's mgmt
address and the DNS records (A or AAAA) of that family. Without it a pod is reached at
its primary address (`ip`), a node at its mgmt IPv4 address (IPv6 when it has none), and
a name at the addresses of every family of the lab, the cluster's preferred first, tried
in turn (as getaddrinfo does): an IPv4-only lab asks for A records alone, as always.

Every probe runs in the source's network namespace through `labkit.agent`
(`nsenter --net=<netns path> <host python> -m labkit.agent probe-many`): one
agent process per source, all sources at once, all of a source's probes at once.

As a grader: a check that misses is probed again while its `within:` lasts, or
`retry` more rounds, with a short growing pause between rounds (never past the
check's time); exit codes 0 (all met), 1 (some not met), 2 (the lab is not up,
its topology is unknown, or the expectations are invalid or empty); the report
as JUnit XML and several labs in one table.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from labkit.errors import LabkitError
from labkit.families import family_number, family_of, is_ip
from labkit.topology.expect import Expect, Target, parse_expects

DEFAULT_TIMEOUT = 1.0
DEFAULT_DOMAIN = "cluster.local"
POD_NDOTS = 5


def lab_families(lab_status: Mapping[str, Any]) -> tuple[int, ...]:
    """The cluster's address families, preferred first: (4,) for an IPv4-only lab or one without a cluster.

    From `cluster.ip_families` in the status, else from the DNS Service's addresses (`dns.ips`)."""
    cluster = lab_status.get("cluster") or {}
    named = [family_number(f) for f in cluster.get("ip_families") or [] if f in ("IPv4", "IPv6")]
    if named:
        return tuple(dict.fromkeys(named))
    dns = lab_status.get("dns") or {}
    ips = [str(ip) for ip in dns.get("ips") or ([dns["ip"]] if dns.get("ip") else [])]
    found = tuple(dict.fromkeys(family_of(ip) for ip in ips))
    return found or (4,)

# ---------------------------------------------------------------- the lab as seen by verify


@dataclass(frozen=True)
class Endpoint:
    """A source: where its agent runs and how it resolves names."""

    name: str
    netns_path: str
    namespace: str          # the pod's namespace; "default" for nodes
    is_pod: bool


class LabView:
    """The parts of `labkit.lab.status(name)[0]` that verify needs."""

    def __init__(self, lab_status: Mapping[str, Any], domain: str | None = None):
        self.name = lab_status.get("name", "?")
        self.pods = {f"{p['namespace']}/{p['name']}": p for p in lab_status.get("pods") or []}
        self.nodes = {n["name"]: n for n in lab_status.get("nodes") or []}
        dns = lab_status.get("dns") or {}
        self.dns_ip: str | None = dns.get("ip")
        self.domain = (domain or dns.get("domain") or DEFAULT_DOMAIN).strip(".")
        self.families = lab_families(lab_status)

    def source(self, ref: str) -> Endpoint:
        if "/" in ref:
            pod = self.pods.get(ref)
            if pod is None:
                raise LabkitError(f"lab {self.name!r} has no pod {ref!r} (pods: {', '.join(self.pods) or 'none'})")
            path = pod.get("netns_path") or (f"/run/netns/{pod['netns']}" if pod.get("netns") else None)
            if not path:
                raise LabkitError(f"pod {ref!r} has no network namespace")
            return Endpoint(ref, path, pod["namespace"], True)
        node = self.nodes.get(ref)
        if node is None:
            raise LabkitError(f"lab {self.name!r} has no node or pod {ref!r} "
                              f"(nodes: {', '.join(self.nodes) or 'none'}; pods are NS/POD)")
        path = node.get("netns_path") or (f"/run/netns/{node['netns']}" if node.get("netns") else None)
        if not path:
            raise LabkitError(f"node {ref!r} has no network namespace")
        return Endpoint(ref, path, "default", False)

    def dns_config(self, source: Endpoint) -> dict | None:
        if not self.dns_ip:
            return None
        z = self.domain
        return {"nameserver": self.dns_ip, "search": [f"{source.namespace}.svc.{z}", f"svc.{z}", z],
                "ndots": POD_NDOTS}

    def target_host(self, target: Target, family: int | None = None) -> str:
        """The IP to probe, or the name for the agent to resolve; `family` (4, 6) picks a pod's or a
        node's address of that family."""
        if target.kind == "ip":
            return target.host
        if target.kind == "pod":
            pod = self.pods.get(target.host)
            if pod is None:
                raise LabkitError(f"lab {self.name!r} has no pod {target.host!r} "
                                  f"(pods: {', '.join(self.pods) or 'none'})")
            ips = [str(ip).split("/")[0] for ip in pod.get("ips") or ([pod["ip"]] if pod.get("ip") else [])]
            if not ips:
                raise LabkitError(f"pod {target.host!r} has no IP")
            if family is None:
                return str(pod.get("ip") or ips[0]).split("/")[0]
            chosen = next((ip for ip in ips if family_of(ip) == family), None)
            if chosen is None:
                raise LabkitError(f"pod {target.host!r} has no IPv{family} address (it has {', '.join(ips)})")
            return chosen
        node = self.nodes.get(target.host)
        if node is not None:
            v4, v6 = node.get("mgmt_ipv4"), node.get("mgmt_ipv6")
            chosen = {4: v4, 6: v6}.get(family) if family is not None else (v4 or v6)
            if not chosen:
                what = f"IPv{family} " if family is not None else ""
                raise LabkitError(f"node {target.host!r} has no {what}mgmt address to connect to")
            return str(chosen).split("/")[0]
        return target.host

    def name_families(self, check: Expect) -> list[int]:
        """The records a name of `check` is looked up for, in order: its `family`, else the lab's."""
        if check.kind == "resolve":
            return [check.resolve_family or self.families[0]]
        return [check.family] if check.family is not None else list(self.families)


# ---------------------------------------------------------------- results and report


@dataclass(frozen=True)
class CheckResult:
    index: int
    expect: Expect
    actual: str                  # open | closed | NXDOMAIN | NODATA | addresses (comma-joined) | error
    ok: bool
    reason: str
    addresses: tuple[str, ...] = ()   # what the name resolved to (DNS targets, resolve checks)
    address: str | None = None        # the address probed last
    attempts: int = 1                 # rounds this check was probed in
    elapsed: float = 0.0              # seconds from the first probe to this result

    @property
    def expected(self) -> str:
        return self.expect.result

    def line(self) -> str:
        """`default/client -> web.default:80 expected open, got closed (connection refused)`."""
        return f"{self.expect.describe()} expected {self.expected}, got {self.actual} ({self.reason})"

    def as_dict(self) -> dict[str, Any]:
        e = self.expect
        return {"index": self.index, "from": e.source, "kind": e.kind,
                "to": str(e.to) if e.to else None, "protocol": e.proto if e.to else None,
                "resolve": e.resolve, "family": e.family, "expected": self.expected, "actual": self.actual,
                "ok": self.ok, "reason": self.reason, "addresses": list(self.addresses), "address": self.address,
                "within": e.within, "attempts": self.attempts, "elapsed": round(self.elapsed, 3)}


CELL_OPEN, CELL_CLOSED, CELL_MISMATCH, CELL_NONE = ".", "X", "!", ""


EXIT_MET, EXIT_NOT_MET, EXIT_CANNOT_CHECK = 0, 1, 2


class CannotCheck(LabkitError):
    """The lab is not up, its topology is unknown, or its expectations are invalid or empty."""

    exit_code = EXIT_CANNOT_CHECK


@dataclass
class Report:
    lab: str
    results: list[CheckResult] = field(default_factory=list)
    elapsed: float = 0.0
    error: str | None = None        # why the lab could not be checked at all (exit code 2)
    source: str | None = None       # the topology file whose expectations were checked

    @property
    def ok(self) -> bool:
        return self.error is None and all(r.ok for r in self.results)

    @property
    def exit_code(self) -> int:
        if self.error is not None:
            return EXIT_CANNOT_CHECK
        return EXIT_MET if self.ok else EXIT_NOT_MET

    @classmethod
    def cannot_check(cls, lab: str, error: str, source: str | None = None) -> Report:
        return cls(lab, [], 0.0, error, source)

    @property
    def mismatches(self) -> list[CheckResult]:
        return [r for r in self.results if not r.ok]

    def grid(self) -> tuple[list[str], list[str], dict[tuple[str, str], str]]:
        """Rows (sources), columns (connection destinations) in first-seen order, and the cells.

        A cell is `.` (open), `X` (closed), an http check's status code, with `!` appended when that
        differs from what was expected; several checks in one cell (rare) show the worst.
        """
        rows: list[str] = []
        cols: list[str] = []
        cells: dict[tuple[str, str], str] = {}
        for r in self.results:
            if r.expect.kind != "connect":
                continue
            row, col = r.expect.source, r.expect.destination
            if row not in rows:
                rows.append(row)
            if col not in cols:
                cols.append(col)
            if r.expect.http is not None:  # an http check's cell is the status code it got
                cell = (r.actual.split(" ")[0] if r.actual[:1].isdigit() else CELL_CLOSED) + \
                    ("" if r.ok else CELL_MISMATCH)
            else:
                cell = (CELL_OPEN if r.actual == "open" else CELL_CLOSED) + ("" if r.ok else CELL_MISMATCH)
            if (row, col) not in cells or not r.ok:
                cells[(row, col)] = cell
        return rows, cols, cells

    def matrix(self) -> str:
        """Plain text: rows = sources, columns = destinations; `.` open, `X` closed, `!` not as expected."""
        rows, cols, cells = self.grid()
        if not rows:
            return ""
        left = max(len("from \\ to"), *(len(r) for r in rows))
        widths = [max(len(c), 2) for c in cols]
        lines = ["from \\ to".ljust(left) + "  " + "  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
        for row in rows:
            # the symbol sits in the middle of its column; a `!` follows it
            lines.append(row.ljust(left) + "  " + "  ".join(
                (" " * ((w - 1) // 2) + cells.get((row, c), CELL_NONE)).ljust(w)
                for c, w in zip(cols, widths, strict=True)))
        return "\n".join(line.rstrip() for line in lines)

    def resolutions(self) -> list[CheckResult]:
        return [r for r in self.results if r.expect.kind == "resolve"]

    def summary(self) -> str:
        if self.error is not None:
            return f"lab {self.lab}: not checked: {self.error}"
        passed = sum(r.ok for r in self.results)
        return (f"lab {self.lab}: {passed}/{len(self.results)} checks as expected "
                f"in {self.elapsed:.2f}s")

    def as_dict(self) -> dict[str, Any]:
        rows, cols, cells = self.grid()
        return {"lab": self.lab, "ok": self.ok, "exit_code": self.exit_code, "error": self.error,
                "source": self.source, "elapsed": round(self.elapsed, 3),
                "checks": [r.as_dict() for r in self.results],
                "matrix": {"rows": rows, "columns": cols,
                           "cells": [[cells.get((r, c), CELL_NONE) for c in cols] for r in rows]},
                "mismatches": [r.line() for r in self.mismatches]}

    def as_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.as_dict(), indent=indent)

    def text(self) -> str:
        """The whole report as plain text (what print_report prints off a terminal)."""
        parts = []
        if self.matrix():
            parts.append(self.matrix())
            parts.append("legend: . open   X closed   ! not as expected")
        for r in self.resolutions():
            mark = "ok " if r.ok else "!! "
            parts.append(f"{mark}{r.expect.source} resolve {r.expect.resolve}: {r.actual} "
                         f"(expected {r.expected})")
        parts.append(self.summary())
        if self.mismatches:
            parts.append("not as expected:")
            parts.extend(f"  {r.line()}" for r in self.mismatches)
        return "\n".join(parts)


def print_report(report: Report, console: Any = None, file: Any = None) -> int:
    """Print the matrix (coloured with rich on a terminal) and what differed; return the exit code."""
    stream = file or sys.stdout
    if console is None:
        if not (hasattr(stream, "isatty") and stream.isatty()):
            print(report.text(), file=stream, flush=True)
            return report.exit_code
        from rich.console import Console

        console = Console(file=stream, emoji=False)  # an IPv6 address is no emoji shortcode
    _print_rich(report, console)
    return report.exit_code


def _print_rich(report: Report, console: Any) -> None:
    from rich.table import Table
    from rich.text import Text

    rows, cols, cells = report.grid()
    if rows:
        table = Table(title=f"lab {report.lab}", title_justify="left", show_lines=False)
        table.add_column("from \\ to", style="bold")
        for c in cols:
            table.add_column(c, justify="center")
        for row in rows:
            rendered = []
            for c in cols:
                cell = cells.get((row, c), CELL_NONE)
                style = "bold white on red" if CELL_MISMATCH in cell else "green" if cell == CELL_OPEN else "yellow"
                rendered.append(Text(cell, style=style))
            table.add_row(row, *rendered)
        console.print(table)
        console.print("[dim]legend: [green].[/green] open   [yellow]X[/yellow] closed   "
                      "[bold white on red]![/bold white on red] not as expected[/dim]")
    for r in report.resolutions():
        mark = "[green]ok[/green]" if r.ok else "[bold red]!![/bold red]"
        console.print(f"{mark} {r.expect.source} resolve {r.expect.resolve}: {r.actual} "
                      f"[dim](expected {r.expected})[/dim]", highlight=False)
    colour = "green" if report.ok else "red"
    console.print(f"[{colour}]{report.summary()}[/{colour}]", highlight=False)
    if report.mismatches:
        console.print("[bold red]not as expected:[/bold red]")
        for r in report.mismatches:
            console.print(f"  {r.line()}", highlight=False, markup=False)


# ---------------------------------------------------------------- running the agent


def agent_argv(netns_path: str, *args: str) -> list[str]:
    """The command that runs `labkit.agent` with the host's Python inside a network namespace,
    without `site` (labkit.lean): one start per source, so `verify` waits for none of it."""
    from importlib.util import find_spec

    from labkit.lean import module_argv

    spec = find_spec("dns")  # dnspython, for `resolve`: its site-packages folder, not the whole of `site`
    extra = (os.path.dirname(spec.submodule_search_locations[0]),) if spec and spec.submodule_search_locations else ()
    return ["nsenter", f"--net={netns_path}", "--", *module_argv("labkit.agent", *args, extra_paths=extra)]


def _run_agent(netns_path: str, requests: list[dict], timeout: float) -> dict[Any, dict]:
    payload = "".join(json.dumps(r) + "\n" for r in requests)
    budget = 10 + timeout * (4 + len(requests))
    try:
        proc = subprocess.run(agent_argv(netns_path, "probe-many"), input=payload, capture_output=True,
                              text=True, timeout=budget)
    except subprocess.TimeoutExpired:
        return {r["id"]: {"id": r["id"], "open": False, "status": "ERROR",
                          "reason": f"agent did not finish in {budget:g}s"} for r in requests}
    except OSError as exc:
        return {r["id"]: {"id": r["id"], "open": False, "status": "ERROR",
                          "reason": f"cannot start the agent: {exc}"} for r in requests}
    results: dict[Any, dict] = {}
    for line in proc.stdout.splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        results[item.get("id")] = item
    if len(results) < len(requests):
        why = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        for r in requests:
            results.setdefault(r["id"], {"id": r["id"], "open": False, "status": "ERROR",
                                         "reason": f"agent failed in {netns_path}: {why}"})
    return results


def _judge(index: int, expect: Expect, raw: dict) -> CheckResult:
    if expect.http is not None:
        code = raw.get("http_status")
        body = raw.get("body") or ""
        want_code, _, want_text = expect.result.partition(" ")
        if raw.get("status") == "ERROR" or code is None:
            actual = "error" if raw.get("status") == "ERROR" else "closed"
        else:
            first = body.strip().splitlines()[0] if body.strip() else ""
            actual = f"{code} {first}".strip()
        ok = code is not None and str(code) == want_code and (not want_text or want_text in body)
        return CheckResult(index, expect, actual, ok, raw.get("reason", ""), (), raw.get("address"))
    if expect.kind == "connect":
        if raw.get("status") == "ERROR":
            actual = "error"
        else:
            actual = "open" if raw.get("open") else "closed"
        resolved = raw.get("resolved") or {}
        return CheckResult(index, expect, actual, actual == expect.result, raw.get("reason", ""),
                           tuple(resolved.get("addresses") or ()), raw.get("address"))
    status = raw.get("status", "ERROR")
    addresses = tuple(raw.get("addresses") or ())
    if status == "NOERROR":
        actual = ", ".join(addresses)
    elif status in ("NXDOMAIN", "NODATA"):
        actual = status
    else:
        actual = "error"
    want = expect.result
    if want == "NXDOMAIN":
        ok = status == "NXDOMAIN"
    elif status != "NOERROR" or not addresses:
        ok = False
    elif "/" in want:
        net = ipaddress.ip_network(want)
        ok = all(ipaddress.ip_address(a) in net for a in addresses)
    else:
        ok = all(a == want for a in addresses)
    return CheckResult(index, expect, actual, ok, raw.get("reason", ""), addresses)


def _plan_requests(view: LabView, checks: list[Expect], indices: Iterable[int], timeout: float,
                   results: dict[int, CheckResult]) -> tuple[dict[str, list[dict]], dict[str, str]]:
    """Agent requests per source for the checks of `indices`; a check the lab cannot take (a name it
    does not have) gets its result at once, with actual `error`."""
    per_source: dict[str, list[dict]] = {}
    paths: dict[str, str] = {}
    for i in indices:
        check = checks[i]
        try:
            src = view.source(check.source)
            dns = view.dns_config(src)
            if check.kind == "connect":
                assert check.to is not None
                # a node's own `hosts:` entries first, as its /etc/hosts comes before DNS (nsswitch)
                host = _hosts_entry(view.nodes.get(check.source, {}).get("hosts", {}), check.to.host, check.family) \
                    or view.target_host(check.to, check.family)
                if dns is None and not is_ip(host):
                    raise LabkitError(f"cannot resolve {host!r}: lab {view.name!r} has no cluster DNS")
                req = {"id": i, "op": "connect", "protocol": check.proto, "host": host,
                       "port": check.to.port, "timeout": timeout, "dns": dns}
                if view.name_families(check) != [4]:  # an IPv4-only lab's requests are as they always were
                    req["families"] = view.name_families(check)
                if check.proto == "icmp":  # a ping: ICMP or ICMPv6 echo, by the address's family
                    req.update(op="ping", port=None)
                if check.http is not None:  # one HTTP request: status code (and body text) judged
                    spec = check.http.model_dump()
                    if spec["host"] is None and check.to.kind not in ("ip", "pod") and check.to.host != host:
                        spec["host"] = check.to.host  # a name asked for by name is the request's Host
                    req.update(op="http", http=spec, timeout=max(timeout, 2.0))
            else:
                if dns is None:
                    raise LabkitError(f"lab {view.name!r} has no cluster DNS to ask")
                req = {"id": i, "op": "resolve", "name": check.resolve, "timeout": timeout, "dns": dns}
                if view.name_families(check) != [4]:
                    req["families"] = view.name_families(check)
        except LabkitError as exc:
            results[i] = CheckResult(i, check, "error", False, str(exc))
            continue
        per_source.setdefault(src.name, []).append(req)
        paths[src.name] = src.netns_path
    return per_source, paths


def _hosts_entry(hosts: Mapping[str, Any], name: str, family: int | None) -> str | None:
    """The address a node's own `hosts:` entries give `name` (of `family`, when given); None if none."""
    found = hosts.get(name)
    candidates = [str(a) for a in (found if isinstance(found, list | tuple) else [found] if found else [])]
    return next((a for a in candidates if family is None or family_of(a) == family), None)


def _run_round(view: LabView, checks: list[Expect], indices: list[int], timeout: float) -> dict[int, CheckResult]:
    """One probe of each check of `indices`: one agent per source, all at once."""
    results: dict[int, CheckResult] = {}
    per_source, paths = _plan_requests(view, checks, indices, timeout, results)
    if per_source:
        with ThreadPoolExecutor(max_workers=min(32, len(per_source))) as pool:
            futures = {name: pool.submit(_run_agent, paths[name], reqs, timeout)
                       for name, reqs in per_source.items()}
            for _name, fut in futures.items():
                for item_id, raw in fut.result().items():
                    if isinstance(item_id, int) and item_id in indices and item_id not in results:
                        results[item_id] = _judge(item_id, checks[item_id], raw)
    return results


FIRST_PAUSE, LONGEST_PAUSE = 0.2, 2.0  # seconds between rounds of probes for checks still missing


def run_checks(lab_status: Mapping[str, Any], expects: Iterable[Expect | Mapping[str, Any]],
               timeout: float = DEFAULT_TIMEOUT, domain: str | None = None, retry: int = 0,
               refresh: Callable[[], Mapping[str, Any]] | None = None) -> Report:
    """Run every check from its source's network namespace; one agent per source, all at once.

    `lab_status`: `labkit.lab.status(name)[0]`. Dict entries are validated first (InputError).
    Names that the lab does not have (a source, a pod or node target) make that check fail
    with actual `error` and the reason; the other checks still run. A check that misses is
    probed again, in rounds, while its `within:` seconds last or for `retry` more rounds;
    `refresh` gives the lab's status anew before each further round (pods an `apply` adds).
    """
    if isinstance(retry, bool) or not isinstance(retry, int) or retry < 0:
        raise LabkitError(f"retry must be a whole number of rounds, 0 or more; got {retry!r}")
    started = time.monotonic()
    checks = parse_expects(list(expects))
    view = LabView(lab_status, domain)
    done = _run_round(view, checks, list(range(len(checks))), timeout)
    attempts = dict.fromkeys(range(len(checks)), 1)
    stamps = dict.fromkeys(range(len(checks)), time.monotonic() - started)
    rounds, pause = 0, FIRST_PAUSE
    while True:
        now = time.monotonic()
        missing = [i for i, r in done.items() if not r.ok]
        again = [i for i in missing if rounds < retry or now < started + checks[i].within]
        if not again:
            break
        wait = pause
        if rounds >= retry:  # only `within` keeps them going: the last round falls on the latest deadline
            wait = min(pause, max(started + checks[i].within for i in again) - now)
        time.sleep(wait)  # a pause between rounds of a poll, bounded by the checks' deadlines
        pause = min(pause * 2, LONGEST_PAUSE)
        rounds += 1
        if refresh is not None:
            view = LabView(refresh(), domain)
        for i, result in _run_round(view, checks, again, timeout).items():
            done[i] = result
            attempts[i] += 1
            stamps[i] = time.monotonic() - started
    ordered = [replace(done[i], attempts=attempts[i], elapsed=stamps[i]) for i in sorted(done)]
    return Report(view.name, ordered, time.monotonic() - started)


def load_expects(path: str) -> list[Expect]:
    """The `expect:` of a topology file: its plan's typed checks (file:line in every message)."""
    from labkit.topology import load_plan

    return list(load_plan(path).expects)


FORMATS = ("table", "json", "junit")


def print_verify(report: Report | list[Report], output_format: str = "table", file: Any = None) -> int:
    """Print a report (or several labs' reports) as `labkit verify --format table|json|junit` does;
    return the exit code: the worst of the labs' (0 all met, 1 some not met, 2 some not checked)."""
    check_output_format(output_format)
    reports = report if isinstance(report, list) else [report]
    stream = file or sys.stdout
    code = max((r.exit_code for r in reports), default=EXIT_CANNOT_CHECK)
    if output_format == "junit":
        stream.write(junit_xml(reports))
        stream.flush()
        return code
    if output_format == "json":
        data = reports[0].as_dict() if not isinstance(report, list) else [r.as_dict() for r in reports]
        print(json.dumps(data, indent=2), file=stream, flush=True)
        return code
    if not isinstance(report, list):
        if report.error is not None:
            print(report.summary(), file=stream, flush=True)
            return code
        return print_report(report, file=file)
    print(labs_table(reports), file=stream, flush=True)
    return code


def check_output_format(output_format: str) -> None:
    if output_format not in FORMATS:
        raise LabkitError(f"unknown format {output_format!r}; valid: {', '.join(FORMATS)}")


# ---------------------------------------------------------------- grading: JUnit XML and the labs table


def junit_xml(reports: Iterable[Report], hostname: str | None = None) -> str:
    """JUnit XML as CI systems and grading scripts read it: a `testsuite` per lab, a `testcase` per
    expect entry; a miss is a `failure`, a check that could not run (no such pod, the agent failed)
    an `error`, and a lab that could not be checked at all one `error` testcase "lab is up"."""
    import socket
    import xml.etree.ElementTree as ET
    from datetime import datetime, timezone

    reports = list(reports)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    host = hostname or socket.gethostname()
    root = ET.Element("testsuites", name="labkit verify")
    totals = {"tests": 0, "failures": 0, "errors": 0}
    for n, report in enumerate(reports):
        suite = ET.SubElement(root, "testsuite", name=report.lab, id=str(n), package="labkit.verify",
                              timestamp=stamp, hostname=host)
        if report.source:
            props = ET.SubElement(suite, "properties")
            ET.SubElement(props, "property", name="topology", value=report.source)
        counts = {"tests": 0, "failures": 0, "errors": 0}
        if report.error is not None:
            case = ET.SubElement(suite, "testcase", name="lab is up", classname=f"labkit.verify.{report.lab}",
                                 time="0")
            ET.SubElement(case, "error", message=report.error, type="CannotCheck").text = report.error
            counts["tests"], counts["errors"] = 1, 1
        for r in report.results:
            counts["tests"] += 1
            case = ET.SubElement(suite, "testcase", name=f"{r.expect.describe()} {r.expected}",
                                 classname=f"labkit.verify.{report.lab}", time=f"{r.elapsed:.3f}")
            if r.ok:
                continue
            message = f"expected {r.expected}, got {r.actual} ({r.reason})"
            if r.actual == "error":
                counts["errors"] += 1
                ET.SubElement(case, "error", message=message, type="CheckError").text = r.line()
            else:
                counts["failures"] += 1
                waited = f", within {r.expect.within:g}s" if r.expect.within else ""
                ET.SubElement(case, "failure", message=message, type="NotAsExpected").text = (
                    f"{r.line()}\nattempts: {r.attempts}{waited}")
        for key, value in counts.items():
            suite.set(key, str(value))
            totals[key] += value
        suite.set("skipped", "0")
        suite.set("time", f"{report.elapsed:.3f}")
        ET.SubElement(suite, "system-out").text = report.text() if report.error is None else report.summary()
    for key, value in totals.items():
        root.set(key, str(value))
    root.set("time", f"{sum(r.elapsed for r in reports):.3f}")
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def labs_table(reports: Iterable[Report]) -> str:
    """An instructor's view: one row per lab (passed / failed / total, and what failed), then a total."""
    rows = [("lab", "passed", "failed", "total", "not as expected")]
    reports = list(reports)
    for r in reports:
        if r.error is not None:
            rows.append((r.lab, "-", "-", "-", f"not checked: {r.error}"))
            continue
        passed = sum(c.ok for c in r.results)
        failing = "; ".join(f"{c.expect.describe()} expected {c.expected}, got {c.actual}" for c in r.mismatches)
        rows.append((r.lab, str(passed), str(len(r.results) - passed), str(len(r.results)), failing))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join([row[0].ljust(widths[0]), *(row[i].rjust(widths[i]) for i in (1, 2, 3)), row[4]]).rstrip()
             for row in rows]
    met = sum(r.ok for r in reports)
    unchecked = sum(r.error is not None for r in reports)
    lines.append(f"{met}/{len(reports)} labs meet every expectation"
                 + (f"; {unchecked} not checked" if unchecked else ""))
    return "\n".join(lines)


# ---------------------------------------------------------------- serving ports for tests and demos


class Servers:
    """`agent serve` processes started by `serve_ports`; stop() (or leave the `with`) ends them."""

    def __init__(self) -> None:
        self.procs: dict[str, subprocess.Popen] = {}
        self.ports: dict[str, dict[str, list[int]]] = {}

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
            if proc.stdin:
                try:
                    proc.stdin.close()
                except OSError:
                    pass
        for proc in self.procs.values():
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream:
                    stream.close()
        self.procs.clear()

    def __enter__(self) -> Servers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _split_ports(where: str, ports: Iterable[int | str]) -> tuple[list[int], list[int]]:
    tcp: list[int] = []
    udp: list[int] = []
    for p in ports:
        text = str(p).lower()
        number, _, proto = text.partition("/")
        if not number.isdigit() or not 0 <= int(number) <= 65535 or proto not in ("", "tcp", "udp"):
            raise LabkitError(f"serve_ports: {where}: {p!r} is not PORT, PORT/tcp or PORT/udp")
        (udp if proto == "udp" else tcp).append(int(number))
    return tcp, udp


def serve_ports(lab_status: Mapping[str, Any], targets: Mapping[str, Iterable[int | str]],
                ready_timeout: float = 10.0) -> Servers:
    """Start `agent serve` in each pod or node of `targets` ({"ns/pod": [80, "53/udp"], "cp": [9000]}).

    Each answers with its pod's or node's name. Returns once all are listening; on any
    failure the ones started are stopped and LabkitError says why.
    """
    view = LabView(lab_status)
    servers = Servers()
    try:
        for where, ports in targets.items():
            src = view.source(where)
            tcp, udp = _split_ports(where, ports)
            args = ["serve", "--until-eof", "--reply", where.split("/")[-1]]
            if tcp:
                args += ["--tcp", ",".join(map(str, tcp))]
            if udp:
                args += ["--udp", ",".join(map(str, udp))]
            # stdin stays open while we live: the agent stops when it closes, even if we crash
            servers.procs[where] = subprocess.Popen(agent_argv(src.netns_path, *args), stdin=subprocess.PIPE,
                                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                                    start_new_session=True)
        deadline = time.monotonic() + ready_timeout
        for where, proc in servers.procs.items():
            line = _read_line(proc, deadline)
            if not line:
                err = proc.stderr.read().strip() if proc.poll() is not None and proc.stderr else ""
                raise LabkitError(f"serve_ports: agent in {where} did not start: {err or 'no ready line'}")
            info = json.loads(line)
            servers.ports[where] = {"tcp": info.get("tcp", []), "udp": info.get("udp", [])}
    except BaseException:
        servers.stop()
        raise
    return servers


def _read_line(proc: subprocess.Popen, deadline: float) -> str:
    import selectors

    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not sel.select(remaining):
            return ""
    return proc.stdout.readline().strip()
