"""A pod's extra networks (Multus's part): each NetworkAttachmentDefinition's CNI config run with the
reference plugins, after the cluster network, and undone (CNI DEL) when the pod goes.

What Multus does per attachment, done here the same way through `conflist.execute_conflist`:
the definition's config (one plugin, or a list) run from the pod's node namespace, with the pod's
interface name (`net1`, ... or the one asked for), `CNI_ARGS` naming the pod
(`K8S_POD_NAMESPACE`, `K8S_POD_NAME`, `K8S_POD_INFRA_CONTAINER_ID`), and the annotation's
`ips` and `mac` as runtimeConfig for the plugins that declare those capabilities. host-local
leases live in the lab's folder (`ipam.dataDir`, one folder per node, as each node of a
cluster keeps its own), so nothing of them outlives `down`.

Each attachment made is recorded in the lab's folder with what its DEL needs (config, paths,
the namespaces' identities, the ADD result), so `apply` and `down` undo it from what was
recorded even after a crash, and never in a namespace that is not the one it was made in.
The pod's `k8s.v1.cni.cncf.io/network-status` is built from the results, in Multus's format.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from labkit import paths
from labkit.cni.conflist import execute_conflist
from labkit.cni.errors import CNIError
from labkit.files import makedirs, write_atomic
from labkit.k8s.multus import Attachment
from labkit.net import netns

RECORD_MODE = 0o600  # what DEL runs is read back from here: root's alone


def conflist_for(attachment: Attachment, data_dir: str) -> dict[str, Any]:
    """The definition's config as it runs on a node: host-local leases kept under `data_dir`."""
    listconf = copy.deepcopy(attachment.network.conflist)
    for plugin in listconf["plugins"]:
        ipam = plugin.get("ipam")
        if isinstance(ipam, dict) and ipam.get("type") == "host-local":
            ipam["dataDir"] = data_dir
    return listconf


def cni_args(namespace: str, pod: str, container_id: str) -> str:
    """CNI_ARGS as Multus gives them to every delegate."""
    return (f"IgnoreUnknown=true;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={pod};"
            f"K8S_POD_INFRA_CONTAINER_ID={container_id}")


def status_entry(name: str, ifname: str, result: Mapping[str, Any], sandbox: str | None,
                 *, default: bool = False) -> dict[str, Any]:
    """One element of Multus's network-status: {name, interface, ips, mac, default?, dns}."""
    interfaces = result.get("interfaces") or []
    index = next((i for i, iface in enumerate(interfaces)
                  if iface.get("name") == ifname and (iface.get("sandbox") or not sandbox)), None)
    ips = [str(ip["address"]).split("/")[0] for ip in result.get("ips") or []
           if index is None or ip.get("interface") in (None, index)]
    entry: dict[str, Any] = {"name": name, "interface": ifname, "ips": ips}
    if index is not None and interfaces[index].get("mac"):
        entry["mac"] = interfaces[index]["mac"]
    if default:
        entry["default"] = True
    entry["dns"] = dict(result.get("dns") or {})
    return entry


def _identity(path: str) -> list[int] | None:
    found = netns.namespace_inode(path)
    return list(found) if found else None


def _write(record_path: str, done: list[dict]) -> None:
    makedirs(os.path.dirname(record_path))
    write_atomic(record_path, json.dumps({"attachments": done}, indent=1), mode=RECORD_MODE)


def add(lab: str, namespace: str, pod: str, node: str, attachments: Sequence[Attachment], *,
        container_id: str, netns_path: str, node_netns: str) -> list[dict[str, Any]]:
    """CNI ADD of each attachment in order; the network-status entries. On a failure the ones made
    are undone and CNIError is raised, naming the network."""
    files = paths.lab(lab)
    record_path = files.multus_record(namespace, pod)
    done: list[dict] = []
    statuses = []
    args = cni_args(namespace, pod, container_id)
    for attachment in attachments:
        listconf = conflist_for(attachment, files.multus_ipam_dir(node))
        capability_args: dict[str, Any] = {}
        if attachment.ips:
            capability_args["ips"] = list(attachment.ips)
        if attachment.mac:
            capability_args["mac"] = attachment.mac
        entry = {"network": attachment.key, "conflist": listconf, "ifname": attachment.ifname,
                 "container_id": container_id, "args": args, "capability_args": capability_args,
                 "netns": netns_path, "netns_id": _identity(netns_path),
                 "node_netns": node_netns, "node_netns_id": _identity(node_netns), "result": None}
        try:
            result = execute_conflist("ADD", listconf, container_id=container_id, netns=netns_path,
                                      ifname=attachment.ifname, args=args, capability_args=capability_args,
                                      node_netns=node_netns, in_process=False)
        except CNIError as exc:
            release(lab, namespace, pod)
            raise CNIError(exc.code, f"network {attachment.key} ({attachment.ifname}): {exc.msg}",
                           exc.details) from None
        entry["result"] = result
        done.append(entry)
        _write(record_path, done)
        statuses.append(status_entry(attachment.key, attachment.ifname, result, netns_path))
    return statuses


def _delete(entry: Mapping[str, Any]) -> None:
    """DEL of one recorded attachment, from its node's namespace. A namespace that is no longer the
    one it was made in (gone, or a pid's path now another process's) is never entered: without the
    pod's, the plugins release IPAM and touch no interface; without the node's, nothing runs (the
    plugins need the node's links, and what they would release went with the node)."""
    def same(key: str) -> bool:
        return entry.get(f"{key}_id") is not None and _identity(entry[key]) == entry[f"{key}_id"]

    if not same("node_netns"):
        return
    execute_conflist("DEL", entry["conflist"], container_id=entry["container_id"],
                     netns=entry["netns"] if same("netns") else None, ifname=entry["ifname"],
                     args=entry["args"], capability_args=entry.get("capability_args") or None,
                     prev_result=entry.get("result") or None, node_netns=entry["node_netns"], in_process=False)


def release(lab: str, namespace: str, pod: str) -> None:
    """CNI DEL of every recorded attachment of the pod, last first; then its record goes.
    Raises CNIError (the record stays, so a later `down` tries again)."""
    record_path = paths.lab(lab).multus_record(namespace, pod)
    try:
        with open(record_path, encoding="utf-8") as fh:
            entries = json.load(fh).get("attachments") or []
    except FileNotFoundError:
        return
    except (OSError, ValueError) as exc:
        raise CNIError(7, f"unreadable attachment record {record_path}", str(exc)) from None
    for entry in reversed(entries):
        _delete(entry)
    os.unlink(record_path)


def release_all(lab: str) -> list[str]:
    """`down`: DEL of every attachment the lab's records name; what could not be undone, as text
    (down goes on: the namespaces and the lab's folder, leases with it, go anyway)."""
    folder = paths.lab(lab).multus_pods_dir
    try:
        names = sorted(os.listdir(folder))
    except FileNotFoundError:
        return []
    failed = []
    for name in names:
        stem = name.removesuffix(".json")
        namespace, dot, pod = stem.partition(".")
        if not dot or not name.endswith(".json"):
            continue
        try:
            release(lab, namespace, pod)
        except (CNIError, KeyError, TypeError) as exc:
            failed.append(f"{namespace}/{pod}: {exc}")
    return failed
