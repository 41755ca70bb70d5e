"""CNI network configuration lists: render/write them, and run them like libcni.

`render_conflist(...)` fills `templates/cni-conflist.json.j2`; `write_conflist`
puts the result into a config dir atomically (temp file + rename), the way a
runtime expects to find `*.conflist` files.

`execute_conflist(...)` is a small pure-Python libcni: the plugins of a list
run in order for ADD (each gets the previous result as `prevResult`),
in reverse for DEL, in order for CHECK (both with the cached ADD result as
`prevResult`), GC and STATUS only for lists at cniVersion >= 1.1.0 (as libcni
does), `name`/`cniVersion` of the list injected into every plugin config,
`runtimeConfig` built from the capabilities each plugin declares. Reference
plugins (portmap, tuning, bandwidth, ...) are exec'd from `cni_path`, inside the
node's namespace via `nsenter --net=<node_netns>` when one is given; labkit-cni
itself runs in-process unless `in_process=False`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from ipaddress import ip_address, ip_network
from pathlib import Path

from . import lite
from .errors import INTERNAL, INVALID_CONFIG, IO_FAILURE, CNIError

CONFLIST_TEMPLATE = "cni-conflist.json.j2"
DEFAULT_CNI_PATH = ("/opt/cni/bin", "/usr/lib/cni", "/usr/libexec/cni")
PLUGIN_TYPE = "labkit-cni"
_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")


# ---------------------------------------------------------------------------
# rendering


def _version_ge(v: str, want: tuple[int, int, int]) -> bool:
    try:
        return tuple(int(x) for x in v.split(".")) >= want
    except ValueError:
        return False


def render_conflist(
    name: str,
    pod_cidr: str | Sequence[str],
    *,
    gateway: str | None = None,
    mtu: int | None = None,
    data_dir: str | None = None,
    plugins: Sequence[Mapping] = (),
    cni_version: str | None = None,
    routes: Sequence[Mapping] | None = None,
    dns: Mapping | None = None,
    range_start: str | None = None,
    range_end: str | None = None,
    mode: str = "ptp",
) -> str:
    """The conflist JSON text for one node: labkit-cni first, then `plugins`.

    `pod_cidr` is the node's podCIDR, or a list of them, one per address family (a dual-stack node:
    the preferred family first): one gives `ipam.subnet` / `gateway`, several host-local's `ipam.ranges`
    (`[[{"subnet": v4, "gateway": gw4}], [{"subnet": v6, "gateway": gw6}]]`, each gateway the CIDR's
    first address; `gateway`, `range_start` and `range_end` then only for one CIDR). `gateway` defaults to
    the podCIDR's .1, `data_dir` to
    /var/lib/cni/networks/<name>. `mode` is labkit-cni's: ptp or bridge. `cni_version` defaults to 1.1.0, or 1.0.0 when
    chained plugins follow (the reference plugins on Debian 12 stop at 1.0.0).
    """

    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(f"invalid CNI network name {name!r}")
    if not isinstance(pod_cidr, str):
        ranges = dual_stack_ranges(pod_cidr)
        if len(ranges) > 1:
            if gateway or range_start or range_end:
                raise ValueError("gateway, range_start and range_end take one pod CIDR, not one per family")
            return _render(name, ranges=ranges, pod_cidr=None, gateway=None, mtu=mtu, data_dir=data_dir,
                           plugins=plugins, cni_version=cni_version, routes=routes, dns=dns, range_start=None,
                           range_end=None, mode=mode)
        pod_cidr = ranges[0]["subnet"]
    net = ip_network(pod_cidr, strict=False)
    if gateway is None:
        gateway = str(net.network_address + 1)
    elif ip_address(gateway) not in net:
        raise ValueError(f"gateway {gateway} is outside pod CIDR {net}")
    return _render(name, ranges=None, pod_cidr=str(net), gateway=str(gateway), mtu=mtu, data_dir=data_dir,
                   plugins=plugins, cni_version=cni_version, routes=routes, dns=dns, range_start=range_start,
                   range_end=range_end, mode=mode)


def dual_stack_ranges(pod_cidrs: Sequence[str]) -> list[dict[str, str]]:
    """One host-local range per pod CIDR ({subnet, gateway: its first address}); one CIDR per family."""
    nets = [ip_network(c, strict=False) for c in pod_cidrs]
    if not nets or len({n.version for n in nets}) != len(nets):
        raise ValueError(f"pod CIDRs {', '.join(map(str, pod_cidrs))}: one or two, of distinct address families")
    return [{"subnet": str(n), "gateway": str(n.network_address + 1)} for n in nets]


def _render(name: str, *, ranges: list[dict[str, str]] | None, pod_cidr: str | None, gateway: str | None,
            mtu: int | None, data_dir: str | None, plugins: Sequence[Mapping], cni_version: str | None,
            routes: Sequence[Mapping] | None, dns: Mapping | None, range_start: str | None,
            range_end: str | None, mode: str) -> str:
    if mtu is not None and not (isinstance(mtu, int) and 68 <= mtu <= 65535):
        raise ValueError(f"invalid MTU {mtu!r}")
    for p in plugins:
        if not isinstance(p, Mapping):
            raise TypeError(f"chained plugin config must be a mapping: {p!r}")
        if not p.get("type") or not isinstance(p["type"], str):
            raise ValueError(f"chained plugin config needs a 'type': {p!r}")
    if mode not in ("ptp", "bridge"):
        raise ValueError(f"invalid labkit-cni mode {mode!r}: ptp or bridge")
    if cni_version is None:
        cni_version = "1.0.0" if plugins else "1.1.0"
    from labkit import templating  # jinja2: never on the plugin's exec path

    text = templating.render(
        CONFLIST_TEMPLATE,
        name=name,
        cni_version=cni_version,
        pod_cidr=pod_cidr,
        gateway=gateway,
        ranges=ranges,
        mtu=mtu,
        data_dir=data_dir or f"/var/lib/cni/networks/{name}",
        plugins=[dict(p) for p in plugins],
        routes=[dict(r) for r in routes] if routes else None,
        dns=dict(dns) if dns else None,
        range_start=range_start,
        range_end=range_end,
        mode=mode,
    )
    json.loads(text)  # a template bug must not reach a runtime
    return text


def write_conflist(conf_dir: str | os.PathLike, name: str, pod_cidr: str | Sequence[str], *,
                   filename: str | None = None, **kwargs) -> Path:
    """Render and write `<conf_dir>/<filename>` atomically; return its path.

    `filename` defaults to `10-<name>.conflist`; kwargs go to render_conflist.
    """
    from labkit.files import write_atomic

    text = render_conflist(name, pod_cidr, **kwargs)
    return write_atomic(Path(conf_dir) / (filename or f"10-{name}.conflist"), text, sync=True)


def load_conflist(source: str | os.PathLike | Mapping) -> dict:
    """A conflist as a dict, from a dict, JSON text or a file path; CNIError(7) if invalid."""
    if isinstance(source, Mapping):
        raw = dict(source)
    else:
        text = str(source)
        if isinstance(source, os.PathLike) or not text.lstrip().startswith(("{", "[")):
            try:
                text = Path(source).read_text()
            except OSError as e:
                raise CNIError(IO_FAILURE, f"cannot read conflist {source}", str(e)) from None
        try:
            raw = lite.loads(text)  # depth-limited: a deeply nested conflist is an error, not a RecursionError
        except ValueError as e:
            raise CNIError(INVALID_CONFIG, "conflist is not valid JSON", str(e)) from None
    if not isinstance(raw, dict):
        raise CNIError(INVALID_CONFIG, "conflist must be a JSON object")
    if not isinstance(raw.get("name"), str) or not _NAME_RE.match(raw["name"]):
        raise CNIError(INVALID_CONFIG, f"conflist name {raw.get('name')!r} is invalid")
    if not isinstance(raw.get("cniVersion"), str):
        raise CNIError(INVALID_CONFIG, "conflist needs a cniVersion string")
    plugins = raw.get("plugins")
    if not isinstance(plugins, list) or not plugins:
        raise CNIError(INVALID_CONFIG, "conflist needs a non-empty 'plugins' list")
    for i, p in enumerate(plugins):
        if not isinstance(p, dict) or not isinstance(p.get("type"), str) or not p["type"]:
            raise CNIError(INVALID_CONFIG, f"conflist plugins[{i}] needs a 'type'")
        if "/" in p["type"]:
            raise CNIError(INVALID_CONFIG, f"conflist plugins[{i}].type must be a bare name")
    return raw


def labkit_plugin_config(conflist: str | os.PathLike | Mapping) -> dict:
    """The labkit-cni entry of a conflist as a standalone network config, with the
    list's name and cniVersion in it: what `labkit.cni.plugin.execute` takes."""
    listconf = load_conflist(conflist)
    for plugin in listconf["plugins"]:
        if plugin["type"] == PLUGIN_TYPE:
            return plugin_config(listconf, plugin)
    raise CNIError(INVALID_CONFIG, f"conflist {listconf['name']!r} has no {PLUGIN_TYPE} plugin")


# ---------------------------------------------------------------------------
# executing


def plugin_config(listconf: Mapping, plugin: Mapping, *, prev_result: Mapping | None = None,
                  capability_args: Mapping | None = None, extra: Mapping | None = None) -> dict:
    """libcni's buildOneConfig: list name/version, runtimeConfig, prevResult injected."""
    conf = dict(plugin)
    conf["name"] = listconf["name"]
    conf["cniVersion"] = listconf["cniVersion"]
    caps = plugin.get("capabilities") or {}
    if capability_args and isinstance(caps, Mapping):
        rc = {k: v for k, v in capability_args.items() if caps.get(k)}
        if rc:
            conf["runtimeConfig"] = rc
    if prev_result is not None:
        conf["prevResult"] = dict(prev_result)
    if extra:
        conf.update(extra)
    return conf


def find_plugin(ptype: str, cni_path: Iterable[str]) -> str | None:
    for d in cni_path:
        p = os.path.join(d, ptype)
        if os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    if ptype == PLUGIN_TYPE:
        here = os.path.join(os.path.dirname(sys.executable), PLUGIN_TYPE)
        if os.path.isfile(here):
            return here
        return shutil.which(PLUGIN_TYPE)
    return None


def exec_plugin(command: str, conf: Mapping, *, plugin_path: str, container_id: str | None,
                netns: str | None, ifname: str | None, args: str | None,
                cni_path: Sequence[str], node_netns: str | None = None,
                timeout: float = 60.0) -> dict:
    """Exec one plugin binary as a runtime does; return its parsed stdout ({} if none)."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "CNI_COMMAND": command,
        "CNI_PATH": ":".join(cni_path),
    }
    for k, v in (("CNI_CONTAINERID", container_id), ("CNI_NETNS", netns),
                 ("CNI_IFNAME", ifname), ("CNI_ARGS", args)):
        if v:
            env[k] = v
    argv = [plugin_path]
    if node_netns:
        argv = ["nsenter", f"--net={node_netns}", "--", plugin_path]
    try:
        p = subprocess.run(argv, input=json.dumps(conf).encode(), env=env, capture_output=True,
                           timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise CNIError(INTERNAL, f"cannot run CNI plugin {plugin_path}", str(e)) from e
    out = p.stdout.strip()
    parsed = None
    if out:
        try:
            parsed = lite.loads(out)
        except ValueError:
            parsed = None
    name = os.path.basename(plugin_path)
    if p.returncode != 0:
        if isinstance(parsed, dict) and "code" in parsed:
            raise CNIError(int(parsed.get("code") or INTERNAL),
                           f"{name}: {parsed.get('msg', '')}", str(parsed.get("details", "")))
        raise CNIError(INTERNAL, f"{name} {command} failed with exit code {p.returncode}",
                       (p.stderr or p.stdout).decode(errors="replace").strip()[:2000])
    if out and not isinstance(parsed, dict):
        raise CNIError(INTERNAL, f"{name} {command} printed something that is not a JSON object",
                       out.decode(errors="replace")[:2000])
    return parsed or {}


def execute_conflist(
    command: str,
    conflist: str | os.PathLike | Mapping,
    *,
    container_id: str | None = None,
    netns: str | None = None,
    ifname: str | None = "eth0",
    args: str | None = None,
    capability_args: Mapping | None = None,
    prev_result: Mapping | None = None,
    valid_attachments: Sequence[Mapping] | None = None,
    cni_path: Sequence[str] = DEFAULT_CNI_PATH,
    node_netns: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    in_process: bool = True,
    cleanup_on_failure: bool = True,
) -> dict:
    """Run CNI `command` over a conflist the way libcni does; return the ADD result ({} otherwise).

    `capability_args` is the runtime's capability data, e.g.
    {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}.
    For CHECK/DEL, `prev_result` is the ADD result; with `cache_dir` the ADD
    result and `capability_args` are cached there (like /var/lib/cni/results) and
    read back when not given. `valid_attachments` ([{containerID, ifname}])
    is passed to GC. Raises CNIError.
    """
    listconf = load_conflist(conflist)
    cni_path = [cni_path] if isinstance(cni_path, str) else list(cni_path)
    plugins = listconf["plugins"]
    version = listconf["cniVersion"]
    cache = _cache_path(cache_dir, listconf["name"], container_id, ifname)

    def run(plugin: Mapping, conf: dict, cmd: str = command) -> dict:
        if plugin["type"] == PLUGIN_TYPE and in_process:
            from . import plugin as lk

            return lk.execute(cmd, conf, container_id=container_id, netns=netns,
                              ifname=ifname, args=args, node_netns=node_netns)
        path = find_plugin(plugin["type"], cni_path)
        if path is None:
            raise CNIError(INTERNAL, f"failed to find plugin {plugin['type']!r} in path {cni_path}")
        return exec_plugin(cmd, conf, plugin_path=path, container_id=container_id,
                           netns=netns, ifname=ifname, args=args, cni_path=cni_path,
                           node_netns=node_netns)

    if command == "ADD":
        prev = None
        try:
            for plugin in plugins:
                prev = run(plugin, plugin_config(listconf, plugin, prev_result=prev,
                                                 capability_args=capability_args))
        except CNIError:
            if cleanup_on_failure:  # best effort DEL of every plugin, in reverse
                for plugin in reversed(plugins):
                    try:
                        run(plugin, plugin_config(listconf, plugin,
                                                  capability_args=capability_args), "DEL")
                    except CNIError:
                        pass
            raise
        result = prev or {}
        if cache is not None:
            _write_cache(cache, {"kind": "cniCacheV1", "containerId": container_id,
                                 "ifName": ifname, "networkName": listconf["name"],
                                 "netns": netns, "capabilityArgs": dict(capability_args or {}),
                                 "result": result})
        return result

    if command in ("DEL", "CHECK"):
        if cache is not None and (prev_result is None or capability_args is None):
            cached = _read_cache(cache) or {}
            if prev_result is None:
                prev_result = cached.get("result")
            if capability_args is None:  # as libcni: portmap's DEL needs the mappings ADD had
                capability_args = cached.get("capabilityArgs") or None
        if command == "CHECK":
            if not _version_ge(version, (0, 4, 0)):
                raise CNIError(INVALID_CONFIG, f"CHECK is not supported by cniVersion {version}")
            if str(listconf.get("disableCheck", "")).lower() == "true":
                return {}
            if prev_result is None:
                raise CNIError(INVALID_CONFIG, "CHECK needs the ADD result (prev_result or cache)")
            for plugin in plugins:
                run(plugin, plugin_config(listconf, plugin, prev_result=prev_result,
                                          capability_args=capability_args))
            return {}
        for plugin in reversed(plugins):
            run(plugin, plugin_config(listconf, plugin, prev_result=prev_result,
                                      capability_args=capability_args))
        if cache is not None:
            try:
                cache.unlink()
            except FileNotFoundError:
                pass
        return {}

    if command == "GC":
        if not _version_ge(version, (1, 1, 0)) or \
                str(listconf.get("disableGC", "")).lower() == "true":
            return {}
        valid = [{"containerID": a["containerID"], "ifname": a["ifname"]}
                 for a in (valid_attachments or [])]
        if cache_dir is not None:  # like libcni: DEL every cached attachment not still valid
            keep = {(a["containerID"], a["ifname"]) for a in valid}
            for entry in _cached_attachments(cache_dir, listconf["name"]):
                if (entry["containerId"], entry["ifName"]) in keep:
                    continue
                try:
                    execute_conflist("DEL", listconf, container_id=entry["containerId"],
                                     netns=entry.get("netns"), ifname=entry["ifName"],
                                     args=args, capability_args=capability_args,
                                     cni_path=cni_path, node_netns=node_netns,
                                     cache_dir=cache_dir, in_process=in_process)
                except CNIError:
                    pass  # GC below still reclaims what the plugins track
        for plugin in plugins:
            run(plugin, plugin_config(listconf, plugin,
                                      extra={"cni.dev/valid-attachments": valid}))
        return {}

    if command == "STATUS":
        if not _version_ge(version, (1, 1, 0)):
            return {}
        for plugin in plugins:
            run(plugin, plugin_config(listconf, plugin))
        return {}

    raise CNIError(INVALID_CONFIG, f"unsupported conflist command {command!r}",
                   "ADD, DEL, CHECK, GC or STATUS")


def _cache_path(cache_dir, name, cid, ifname) -> Path | None:
    """libcni's result cache layout: <cache dir>/<network>-<container id>-<ifname>."""
    if cache_dir is None or not cid or not ifname:
        return None
    return Path(cache_dir) / f"{name}-{cid}-{ifname}"


def _read_cache(path: Path) -> dict | None:
    try:
        data = lite.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("kind") == "cniCacheV1" else None


def _cached_attachments(cache_dir, name: str) -> list[dict]:
    d = Path(cache_dir)
    if not d.is_dir():
        return []
    out = []
    for p in sorted(d.iterdir()):
        if p.name.startswith(".") or not p.name.startswith(f"{name}-"):
            continue
        data = _read_cache(p)
        if data and data.get("networkName") == name and data.get("containerId") \
                and data.get("ifName"):
            out.append(data)
    return out


def _write_cache(path: Path, result: Mapping) -> None:
    from labkit.files import write_atomic

    write_atomic(path, json.dumps(result), 0o600)  # explicit modes: the folder 0755, the entry root's alone
