"""Plan passes for containerlab's container keys: what the docker runtime makes of them
(`ContainerSettings` on each node), the creation order `stages`/`wait-for` ask for, and the
one note about keys the lab's runtime leaves without effect."""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass
from typing import Any

from labkit.errors import InputError
from labkit.topology import clab
from labkit.yamldoc import read_text

Draft = Any  # labkit.topology.plan.Draft, which imports this module

@dataclass(frozen=True)
class Healthcheck:
    test: tuple[str, ...]
    interval: int | None = None
    retries: int | None = None
    timeout: int | None = None
    start_period: int | None = None


@dataclass(frozen=True)
class ContainerSettings:
    """What the docker runtime makes of containerlab's container keys (the netns runtime notes them)."""

    binds: tuple[str, ...] = ()  # host:container[:ro], the host path made absolute
    env: tuple[tuple[str, str], ...] = ()  # env-files first, then env
    labels: tuple[tuple[str, str], ...] = ()
    cmd: tuple[str, ...] | None = None
    entrypoint: tuple[str, ...] | None = None
    user: str | None = None
    hostname: str | None = None
    healthcheck: Healthcheck | None = None
    after: tuple[tuple[str, str], ...] = ()  # (node, stage) this node's creation waits for
    memory: int | None = None  # bytes
    cpus: float | None = None
    cpu_set: str | None = None
    ports: tuple[tuple[str, int, int], ...] = ()  # (host address, host port, node port), TCP: both runtimes


PORT = re.compile(r"^(?:(?P<ip>[0-9]{1,3}(?:\.[0-9]{1,3}){3}):)?(?:(?P<host>[0-9]{1,5}):)?(?P<port>[0-9]{1,5})"
                  r"(?:/(?P<proto>tcp|udp|sctp))?$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
MAX_ENV_FILE_BYTES = 256 * 1024
STAGE_ORDER = ("create", "create-links", "configure", "healthy", "exit")


def memory_bytes(text: str) -> int:
    """Docker's reading of a memory size: 512m, 1G, 1.5GiB, 1024 (bytes); units are powers of 1024."""
    match = re.match(r"^([0-9]+(?:\.[0-9]+)?)\s*([kKmMgGtT]?)(?:i?[bB])?$", text.strip())
    if not match:
        raise ValueError(text)
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def _env_file(path: str) -> list[tuple[str, str]]:
    """KEY=VALUE lines as Docker's --env-file reads them (comments and blank lines skipped)."""
    pairs = []
    for line in read_text(path, MAX_ENV_FILE_BYTES).splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not ENV_NAME.match(key.strip()):
            raise ValueError(f"{line[:40]!r} is not KEY=VALUE")
        if sep:
            pairs.append((key.strip(), value))
    return pairs


def _split(d: Draft, path: tuple, text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    try:
        return tuple(shlex.split(text))
    except ValueError as exc:
        d.add(path, f"cannot split {text!r}: {exc}; it is split like a shell would: close every quote")
        return None


def container_settings(d: Draft, name: str) -> ContainerSettings | None:
    """The node's container keys, resolved (paths made absolute, env files read, sizes in bytes)."""
    s: dict[str, Any] = d.settings[name]
    path = ("topology", "nodes", name)
    folder = os.path.dirname(os.path.abspath(d.source))
    binds = []
    for i, bind in enumerate(s.get("binds", [])):
        parts = bind.split(":")
        if len(parts) not in (2, 3) or not parts[0] or not parts[1].startswith("/"):
            d.add(path + ("binds", i), f"{bind!r} is not a bind mount: write HOST-PATH:/CONTAINER-PATH[:ro]")
            continue
        parts[0] = os.path.normpath(os.path.join(folder, parts[0]))
        binds.append(":".join(parts))
    env: dict[str, str] = {}
    for i, file in enumerate(s.get("env-files", s.get("env_files", []))):
        try:
            env.update(_env_file(os.path.join(folder, file)))
        except InputError as exc:
            d.add(path + ("env-files", i), f"env file {file!r}: {exc.problems[0].message}")
        except ValueError as exc:
            d.add(path + ("env-files", i), f"env file {file!r}: {exc}")
    env.update({k: _text(v) for k, v in s.get("env", {}).items()})
    memory = None
    if s.get("memory") is not None:
        memory = memory_bytes(s["memory"])
    hc = s.get("healthcheck")
    healthcheck = None
    if hc and hc.get("test"):
        healthcheck = Healthcheck(tuple(hc["test"]), hc.get("interval"), hc.get("retries"), hc.get("timeout"),
                                  hc.get("start_period"))
    elif hc:
        d.add(path + ("healthcheck",), "a healthcheck needs 'test', e.g. test: [CMD-SHELL, ip link show eth1]")
    after = [(other, "create") for other in s.get("wait_for", [])]
    for stage in (s.get("stages") or {}).values():
        for w in (stage or {}).get("wait_for") or []:
            after.append((w["node"], w.get("stage", "create")))
    for i, (other, _stage) in enumerate(after):
        if other not in d.body.nodes or other == name:
            what = "itself" if other == name else f"unknown node {other!r}"
            d.add(path + ("stages",) if s.get("stages") else path + ("wait-for", i),
                  f"node {name!r} waits for {what}; nodes: {', '.join(n for n in d.body.nodes if n != name)}")
    ports = []
    for i, text in enumerate(s.get("ports", [])):
        match = PORT.match(str(text))
        if match is None or not all(0 < int(match.group(g)) < 65536 for g in ("host", "port") if match.group(g)):
            d.add(path + ("ports", i), f"{text!r} is not a port mapping like 8080:80, 127.0.0.1:8080:80 "
                                       "or 8080:80/tcp")
        elif match.group("host") and (match.group("proto") or "tcp") == "tcp":
            ports.append((match.group("ip") or "0.0.0.0", int(match.group("host")), int(match.group("port"))))
        else:
            d.skipped_ports.append(f"{name}: {text}")
    return ContainerSettings(
        binds=tuple(binds), env=tuple(env.items()),
        labels=tuple((k, _text(v)) for k, v in s.get("labels", {}).items()),
        cmd=_split(d, path + ("cmd",), s.get("cmd")), entrypoint=_split(d, path + ("entrypoint",), s.get("entrypoint")),
        user=None if s.get("user") is None else str(s["user"]), hostname=s.get("hostname"),
        healthcheck=healthcheck, after=tuple(dict.fromkeys(after)), memory=memory, cpus=s.get("cpu"),
        cpu_set=s.get("cpu_set"), ports=tuple(ports),
    )


def _text(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def creation_waves(after: dict[str, tuple[tuple[str, str], ...]]) -> list[list[str]] | None:
    """Nodes in waves: each node after every node it waits for; None if they wait in a circle."""
    done: set[str] = set()
    waves, todo = [], list(after)
    while todo:
        wave = [n for n in todo if all(other in done or other not in after for other, _ in after[n])]
        if not wave:
            return None
        waves.append(wave)
        done |= set(wave)
        todo = [n for n in todo if n not in done]
    return waves


def check_order(d: Draft) -> None:
    """`stages`/`wait-for` must not wait in a circle."""
    after = {n.name: n.container.after if n.container else () for n in d.nodes}
    if creation_waves(after) is None:
        stuck = [n for n, deps in after.items() if deps]
        d.add(("topology", "nodes", stuck[0]), f"nodes {', '.join(stuck)} wait for each other in a circle "
                                              "(stages/wait-for); one of them must not wait")


def check_ports(d: Draft) -> None:
    """A host port (on an address, or on all: 0.0.0.0) is forwarded to one node only."""
    seen: list[tuple[str, int, str]] = []
    for node in d.nodes:
        for i, (ip, host_port, _) in enumerate(node.container.ports if node.container else ()):
            owner = next((o for o_ip, o_port, o in seen
                          if o_port == host_port and (o_ip == ip or "0.0.0.0" in (ip, o_ip))), None)
            if owner is not None:
                d.add(("topology", "nodes", node.name, "ports", i),
                      f"host port {host_port} is already forwarded to node {owner!r}")
            seen.append((ip, host_port, node.name))


def collect_notes(d: Draft) -> None:
    """One note naming every key the lab's runtime leaves without effect, and the nodes setting it."""
    runtime = d.runtime or d.topo.runtime
    by_key: dict[str, list[str]] = {}
    for name in d.body.nodes:
        node_model = d.body.nodes[name]
        keys = set(d.settings.get(name, {})) | {k for k in ("mgmt_ipv4", "mgmt_ipv6") if getattr(node_model, k)}
        for key in keys:
            by_key.setdefault(key.replace("_", "-"), []).append(name)
    others = []
    mgmt = d.topo.mgmt
    if mgmt is not None:
        others += [f"mgmt.{k.replace('_', '-')}" for k in mgmt.model_fields_set
                   if k.replace("_", "-") in clab.MGMT_NO_EFFECT]
    others += [k for k in d.topo.model_fields_set if k in clab.TOP_NO_EFFECT]
    for link in d.body.links:
        ends = [*(link.endpoints or []), *([link.endpoint] if link.endpoint else [])]
        others += [f"links.{k}" for k in ("vars", "labels") if getattr(link, k) is not None]
        others += [f"links.endpoints.{k}" for k in ("mac", "vars") for ep in ends if getattr(ep, k)]
    d.notes.extend(clab.notes(runtime, by_key, others))
    if d.skipped_ports:
        d.notes.append("ports are forwarded for TCP host:node mappings only; not forwarded: "
                       + ", ".join(d.skipped_ports))
