"""Multus in the plan: NetworkAttachmentDefinitions and the pod annotation that attaches pods to them.

A `NetworkAttachmentDefinition` (`k8s.cni.cncf.io/v1`) holds a CNI network config as a JSON
string in `spec.config`, in either form a runtime reads from /etc/cni/net.d: one plugin (`type`
at the top) or a list (`plugins`). A pod's `k8s.v1.cni.cncf.io/networks` annotation names the
definitions it joins, as comma-separated `name`, `namespace/name` or `name@ifname`, or as
Multus's JSON list (`[{"name": ..., "namespace": ..., "interface": ..., "ips": [...], "mac": ...}]`).
Each becomes the pod's `net1`, `net2`, ... (or the interface asked for) after the cluster
network's `eth0`, the way Multus numbers them. Everything here is checked when the plan is
loaded; the reference plugins run the configs later (labkit.cni.attach).
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import StrictStr, model_validator
from pydantic_core import PydanticCustomError

from labkit.errors import Problem
from labkit.k8s import names
from labkit.k8s.models import K8sModel, Pod, _Object

API_VERSION = "k8s.cni.cncf.io/v1"
KIND = "NetworkAttachmentDefinition"
NETWORKS_ANNOTATION = "k8s.v1.cni.cncf.io/networks"
STATUS_ANNOTATION = "k8s.v1.cni.cncf.io/network-status"

MAX_CONFIG_BYTES = 64 * 1024  # a CNI config is a few hundred bytes; an object is at most 1.5 MiB in etcd
MAX_ANNOTATION_BYTES = 64 * 1024
MAX_NETWORKS = 16  # attachments per pod
MAX_PLUGINS = 8
MAX_DEPTH = 32

# What the reference plugins installed here (containernetworking-plugins 1.1) speak.
CNI_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0")
# The first plugin of an attachment makes the pod's interface; the others may follow it in a list.
INTERFACE_TYPES = ("macvlan", "bridge", "ptp")
CHAINED_TYPES = ("tuning", "sbr")
IPAM_TYPES = ("host-local", "static")
NOT_HERE = {
    "ipvlan": "ipvlan links are not available on this kernel; use macvlan (the same idea: the pod's own "
              "address on a node's link, with its own MAC)",
    "vlan": "802.1Q VLAN sub-interfaces are not available on this kernel; give the network its own link "
            "and use macvlan or bridge on it",
    "host-device": "it moves a node's own interface into the pod, away from the node; labkit does not run it "
                   "(use macvlan on that interface)",
    "bandwidth": "it needs the ingress qdisc, which this kernel does not have",
    "dhcp": "it needs the CNI dhcp daemon, which labkit does not run; use host-local or static",
    "labkit-cni": "it is the cluster network's own plugin; an attachment is another network",
}
SELECTION_KEYS = ("name", "namespace", "interface", "ips", "mac")
_IFNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,14}$")
_MAC = re.compile(r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$")
_PLUGIN_TYPE = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,63}$")
_NET_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]{0,99}$")


# ---------------------------------------------------------------- the definition's CNI config


def _depth(value: Any, limit: int = MAX_DEPTH) -> int:
    if limit < 0:
        return 1
    if isinstance(value, Mapping):
        return 1 + max((_depth(v, limit - 1) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v, limit - 1) for v in value), default=0)
    return 0


def parse_config(text: str) -> dict[str, Any]:
    """`spec.config` as a conflist dict ({cniVersion, name?, plugins}); ValueError says what is wrong."""
    if not text.strip():
        raise ValueError("is empty; labkit reads the network's CNI config from here (not from a file on a node): "
                         'e.g. \'{"cniVersion": "0.3.1", "type": "macvlan", "master": "net1", '
                         '"ipam": {"type": "host-local", "subnet": "10.10.0.0/24"}}\'')
    if len(text.encode()) > MAX_CONFIG_BYTES:
        raise ValueError(f"is {len(text.encode())} bytes; a CNI config here may be at most {MAX_CONFIG_BYTES}")
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"is not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise ValueError("must be a JSON object: a CNI network config, with 'type', or a list, with 'plugins'")
    if _depth(raw) > MAX_DEPTH:
        raise ValueError(f"nests deeper than {MAX_DEPTH} levels")
    version = raw.get("cniVersion")
    if not isinstance(version, str):
        raise ValueError(f"cniVersion: required, a string; valid: {', '.join(CNI_VERSIONS)}")
    if version not in CNI_VERSIONS:
        raise ValueError(f"cniVersion: {version!r} is not spoken by the reference plugins here; "
                         f"valid: {', '.join(CNI_VERSIONS)}")
    name = raw.get("name")
    if name is not None and (not isinstance(name, str) or not _NET_NAME.match(name)):
        raise ValueError(f"name: {name!r} is not a CNI network name (letters, digits, '_', '.', '-'); "
                         "or leave it out: the definition's own name is used")
    if "plugins" in raw:
        if "type" in raw:
            raise ValueError("has both 'type' (one plugin) and 'plugins' (a list); give one of them")
        plugins = raw["plugins"]
        if not isinstance(plugins, list) or not plugins:
            raise ValueError("plugins: must be a non-empty list of plugin configs")
        if len(plugins) > MAX_PLUGINS:
            raise ValueError(f"plugins: {len(plugins)} plugins; at most {MAX_PLUGINS}")
        listconf = {k: v for k, v in raw.items() if k != "plugins"}
        where = [f"plugins[{i}]." for i in range(len(plugins))]
    elif "type" in raw:
        plugins = [{k: v for k, v in raw.items() if k not in ("cniVersion", "name")}]
        listconf = {k: raw[k] for k in ("cniVersion", "name") if k in raw}
        where = [""]
    else:
        raise ValueError("needs 'type' (one plugin, e.g. \"type\": \"macvlan\") or 'plugins' (a list)")
    for i, (plugin, at) in enumerate(zip(plugins, where, strict=True)):
        _check_plugin(plugin, at, first=i == 0)
    return {**listconf, "plugins": [dict(p) for p in plugins]}


def _check_plugin(plugin: Any, at: str, *, first: bool) -> None:
    if not isinstance(plugin, dict):
        raise ValueError(f"{at or 'plugins[0]'}: expected a plugin config (a JSON object)")
    ptype = plugin.get("type")
    valid = INTERFACE_TYPES if first else CHAINED_TYPES
    role = "the first plugin makes the pod's interface" if first else "a plugin after the first"
    if not isinstance(ptype, str) or not ptype:
        raise ValueError(f"{at}type: required; valid ({role}): {', '.join(valid)}")
    if ptype in NOT_HERE:
        raise ValueError(f"{at}type: {ptype!r} cannot run here: {NOT_HERE[ptype]}")
    if ptype not in valid:
        raise ValueError(f"{at}type: {ptype!r} is not valid ({role}); valid: {', '.join(valid)}")
    ipam = plugin.get("ipam")
    if ipam is not None:
        if not isinstance(ipam, dict):
            raise ValueError(f"{at}ipam: expected an object, e.g. {{\"type\": \"host-local\", ...}}")
        itype = ipam.get("type")
        if ipam and itype in NOT_HERE:
            raise ValueError(f"{at}ipam.type: {itype!r} cannot run here: {NOT_HERE[itype]}")
        if ipam and itype not in IPAM_TYPES:
            raise ValueError(f"{at}ipam.type: {itype!r} is not valid; valid: {', '.join(IPAM_TYPES)} "
                             "(or \"ipam\": {} for no addresses)")
    if ptype == "macvlan" and "master" in plugin:
        master = plugin["master"]
        if not isinstance(master, str) or not _IFNAME.match(master):
            raise ValueError(f"{at}master: {master!r} is not an interface name")
    if ptype == "bridge":
        bridge = plugin.get("bridge")
        if bridge is None or bridge == "cni0":
            raise ValueError(f"{at}bridge: name the node's bridge for this network (e.g. \"bridge\": "
                             "\"br-data\"); cni0 is the cluster network's bridge in cni.mode bridge")
        if not isinstance(bridge, str) or not _IFNAME.match(bridge):
            raise ValueError(f"{at}bridge: {bridge!r} is not an interface name (1-15 letters, digits, '_.-')")
    caps = plugin.get("capabilities")
    if caps is not None and not isinstance(caps, dict):
        raise ValueError(f"{at}capabilities: expected an object, e.g. {{\"ips\": true}}")


class NetworkAttachmentDefinitionSpec(K8sModel):
    config: StrictStr = ""

    @model_validator(mode="after")
    def _config(self) -> NetworkAttachmentDefinitionSpec:
        try:
            parse_config(self.config)
        except ValueError as exc:
            raise PydanticCustomError("k8s_value", "{message}", {"message": str(exc), "at": ("config",)}) from None
        return self


class NetworkAttachmentDefinition(_Object):
    """A network pods may join by name: its CNI config, run by the reference plugins."""

    apiVersion: Literal["k8s.cni.cncf.io/v1"] = API_VERSION
    kind: Literal["NetworkAttachmentDefinition"] = KIND
    spec: NetworkAttachmentDefinitionSpec

    @property
    def conflist(self) -> dict[str, Any]:
        """The config as a conflist; without a `name`, the definition's own (as Multus does)."""
        listconf = parse_config(self.spec.config)
        listconf.setdefault("name", self.name)
        return listconf

    def capability(self, name: str) -> bool:
        """Whether a plugin of it declares the runtime capability `name` (libcni passes only those)."""
        return any((p.get("capabilities") or {}).get(name) is True for p in self.conflist["plugins"])


KINDS = {KIND: NetworkAttachmentDefinition}
API_VERSIONS = {KIND: API_VERSION}


# ---------------------------------------------------------------- the pod's annotation


@dataclass(frozen=True)
class NetworkSelection:
    """One entry of a pod's networks annotation (Multus's NetworkSelectionElement)."""

    name: str
    namespace: str
    interface: str | None = None
    ips: tuple[str, ...] = ()
    mac: str | None = None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Attachment:
    """A pod's extra network as it is attached: which definition, which interface, what it asks for."""

    network: NetworkAttachmentDefinition
    ifname: str
    ips: tuple[str, ...] = ()
    mac: str | None = None

    @property
    def key(self) -> str:
        return self.network.key


def _check_name(name: Any, what: str) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"{what}: expected a name, got {name!r}")
    problem = names.dns1123_subdomain(name)
    if problem:
        raise ValueError(f"{what} {name!r}: {problem}")
    return name


def _check_ifname(name: Any) -> str:
    if not isinstance(name, str) or not _IFNAME.match(name):
        raise ValueError(f"interface {name!r} is not an interface name: 1-15 letters, digits, '_', '.', '-'")
    return name


def parse_networks(text: str, pod_namespace: str) -> tuple[NetworkSelection, ...]:
    """The annotation's entries, in order; ValueError says what is wrong and what is valid."""
    if len(text.encode()) > MAX_ANNOTATION_BYTES:
        raise ValueError(f"is {len(text.encode())} bytes; at most {MAX_ANNOTATION_BYTES}")
    if text.strip().startswith("["):
        selections = _json_form(text, pod_namespace)
    else:
        selections = _names_form(text, pod_namespace)
    if len(selections) > MAX_NETWORKS:
        raise ValueError(f"names {len(selections)} networks; a pod may join at most {MAX_NETWORKS}")
    return selections


def _names_form(text: str, pod_namespace: str) -> tuple[NetworkSelection, ...]:
    out = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            raise ValueError(f"{text!r} has an empty entry; write names separated by commas: "
                             "net-a, other-ns/net-b, net-c@data0")
        ref, _, ifname = item.partition("@")
        namespace, slash, name = ref.rpartition("/")
        if slash and "/" in namespace:
            raise ValueError(f"{item!r}: write NAME, NAMESPACE/NAME or NAME@INTERFACE")
        out.append(NetworkSelection(
            name=_check_name(name, "network"),
            namespace=_check_name(namespace, "namespace") if slash else pod_namespace,
            interface=_check_ifname(ifname) if "@" in item else None,
        ))
    return tuple(out)


def _json_form(text: str, pod_namespace: str) -> tuple[NetworkSelection, ...]:
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"is not valid JSON ({exc}); e.g. "
                         '[{"name": "storage", "interface": "net1", "ips": ["10.10.0.11/24"]}]') from None
    if not isinstance(raw, list) or not raw:
        raise ValueError("the JSON form is a non-empty list of {\"name\": ...} objects")
    out = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise ValueError(f"[{i}]: expected an object with a \"name\"")
        unknown = sorted(set(item) - set(SELECTION_KEYS))
        if unknown:
            raise ValueError(f"[{i}]: {', '.join(map(repr, unknown))} not supported by labkit; "
                             f"valid: {', '.join(SELECTION_KEYS)}")
        ips = item.get("ips", [])
        if not isinstance(ips, list):
            raise ValueError(f"[{i}].ips: expected a list of addresses, e.g. [\"10.10.0.11/24\"]")
        for ip in ips:
            _check_ip(ip, f"[{i}].ips")
        mac = item.get("mac")
        if mac is not None and (not isinstance(mac, str) or not _MAC.match(mac)):
            raise ValueError(f"[{i}].mac: {mac!r} is not a MAC address like 02:00:00:00:00:01")
        try:
            out.append(NetworkSelection(
                name=_check_name(item.get("name"), "name"),
                namespace=_check_name(item["namespace"], "namespace") if "namespace" in item else pod_namespace,
                interface=_check_ifname(item["interface"]) if "interface" in item else None,
                ips=tuple(ips), mac=mac,
            ))
        except ValueError as exc:
            raise ValueError(f"[{i}].{exc}") from None
    return tuple(out)


def _check_ip(ip: Any, where: str) -> None:
    if not isinstance(ip, str) or "/" not in ip:
        raise ValueError(f"{where}: {ip!r} needs its prefix length, e.g. \"10.10.0.11/24\" (static IPAM takes it)")
    try:
        ipaddress.IPv4Interface(ip)
    except ValueError:
        raise ValueError(f"{where}: {ip!r} is not an IPv4 address with a prefix length") from None


def _definitions(networks: Iterable[NetworkAttachmentDefinition]) -> dict[str, NetworkAttachmentDefinition]:
    return {n.key: n for n in networks}


def pod_attachments(pod: Pod, networks: Iterable[NetworkAttachmentDefinition]) -> tuple[Attachment, ...]:
    """The pod's extra networks, in the annotation's order, named as Multus names them (net1, net2, ...).
    Raises ValueError on an annotation the plan would have refused (see attachment_problems)."""
    text = pod.metadata.annotations.get(NETWORKS_ANNOTATION)
    if text is None:
        return ()
    known = _definitions(networks)
    out = []
    for index, sel in enumerate(parse_networks(text, pod.namespace), start=1):
        network = known.get(sel.key)
        if network is None:
            raise ValueError(f"no NetworkAttachmentDefinition {sel.key}")
        out.append(Attachment(network, sel.interface or f"net{index}", sel.ips, sel.mac))
    return tuple(out)


def attachment_problems(pods: Iterable[Pod], networks: Iterable[NetworkAttachmentDefinition],
                        node_of: Mapping[str, str], interfaces_of: Mapping[str, Iterable[str]],
                        problem) -> list[Problem]:
    """Every pod's networks annotation against the definitions there are and the node it is placed on:
    names that exist, interfaces that do not clash, `ips`/`mac` only where a plugin takes them (libcni
    would drop them silently), a macvlan `master` the node has. `problem(pod, message)` makes the Problem."""
    known = _definitions(networks)
    out = []
    for pod in pods:
        if NETWORKS_ANNOTATION not in pod.metadata.annotations:
            continue
        if pod.spec.hostNetwork:
            out.append(problem(pod, "a hostNetwork pod lives in its node's network namespace, and Multus attaches "
                                    "no networks to it; drop the annotation or hostNetwork: true"))
            continue
        try:
            selections = parse_networks(pod.metadata.annotations[NETWORKS_ANNOTATION], pod.namespace)
        except ValueError as exc:
            out.append(problem(pod, str(exc)))
            continue
        seen = {"eth0", "lo"}
        node = node_of.get(pod.key)
        for index, sel in enumerate(selections, start=1):
            network = known.get(sel.key)
            if network is None:
                here = sorted(k for k in known if k.startswith(f"{sel.namespace}/"))
                out.append(problem(pod, f"network {sel.key!r}: no NetworkAttachmentDefinition of that name; "
                                        f"defined in {sel.namespace}: {', '.join(here) or 'none'}"))
                continue
            ifname = sel.interface or f"net{index}"
            if ifname in seen:
                out.append(problem(pod, f"network {sel.key!r}: interface {ifname} is already the pod's "
                                        "(eth0 is the cluster network's; each attachment needs its own)"))
            seen.add(ifname)
            for cap, asked in (("ips", sel.ips), ("mac", sel.mac)):
                if asked and not network.capability(cap):
                    out.append(problem(pod, f"network {sel.key!r}: asks for {cap!r}, but no plugin of its config "
                                            f"declares \"capabilities\": {{\"{cap}\": true}} (libcni would drop "
                                            "it); add it to " + ("the plugin, with static IPAM" if cap == "ips"
                                                                 else "a tuning plugin")))
            master = network.conflist["plugins"][0].get("master")
            if node is not None and master and master not in set(interfaces_of.get(node, ())):
                out.append(problem(pod, f"network {sel.key!r}: its macvlan master {master!r} is not an interface "
                                        f"of node {node!r}, where the pod runs; give the node that link "
                                        f"(e.g. links: [{{endpoints: [\"{node}:{master}\", \"SWITCH:PORT\"]}}])"))
    return out
