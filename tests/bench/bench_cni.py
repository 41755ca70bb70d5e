"""Benchmark: `labkit-cni` as an executable vs the reference bridge + host-local.

`bench_cni_exec(pods)` builds one node namespace and `pods` pod namespaces,
then for each plugin ADDs every pod and DELs every pod again, each call a
fresh process run exactly as a runtime would (env vars + config on stdin,
`nsenter --net=<node ns>` in front of each so the wrapper cost is equal).
Rows: the reference `bridge` (which execs `host-local` for IPAM), and the
launcher labkit puts in a CNI bin dir (`labkit.cni.install`) in both of the
plugin's modes (ptp and bridge): handing each call to a running labkit CNI
server (`labkit.cni.server`, what a lab starts), and running the plugin in
place in a `python -IS` (no server).
Dual-stack rows: labkit-cni ptp with an IPv4 and an IPv6 range set (through the server, and in
place) beside the reference `ptp` + `host-local` with one range set and with the same two;
`dual_vs_single` is each dual row's ADD+DEL p50 over its single-stack twin's. The reference ptp
waits in ADD until the pod's IPv6 addresses have passed duplicate address detection (1-2 s each;
labkit-cni adds them `nodad`), so its two rows run on the first REF_PTP_PODS pods only, interleaved
with each other.
Calls are interleaved so the rows share whatever else the machine is doing;
`p50_vs_ref` is each row's ADD+DEL p50 over the reference's.
Returns milliseconds; `invoke bench` prints them. Needs root.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
REF_DIR = "/usr/lib/cni"
REFERENCE = "bridge+host-local"
REF_PTP_PODS = 20
# dual-stack row -> its single-stack twin
DUAL_OF = {"ptp+host-local dual": "ptp+host-local", "labkit-cni ptp dual -> CNI server": "labkit-cni ptp -> CNI server",
           "labkit-cni ptp dual in place": "labkit-cni ptp in place"}


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return round(s[min(len(s) - 1, int(round(q * (len(s) - 1))))], 2)


def _summary(adds: list[float], dels: list[float]) -> dict:
    both = [a + d for a, d in zip(adds, dels, strict=False)]
    return {
        "add_p50": _pct(adds, 0.5), "add_p95": _pct(adds, 0.95),
        "del_p50": _pct(dels, 0.5), "del_p95": _pct(dels, 0.95),
        "add_del_p50": _pct(both, 0.5), "add_del_p95": _pct(both, 0.95),
        "add_del_mean": round(statistics.fmean(both), 2) if both else float("nan"),
    }


def _run(argv: list[str], env: dict, conf: bytes) -> float:
    t0 = time.perf_counter()
    p = subprocess.run(argv, input=conf, env=env, capture_output=True, check=False)
    dt = (time.perf_counter() - t0) * 1000
    if p.returncode != 0:
        raise RuntimeError(f"{argv[-1]} {env['CNI_COMMAND']} failed: {p.stdout!r} {p.stderr!r}")
    return dt


def _drive(plugins: list[tuple[str, str, dict, str]], node_ns: str, pod_ns: list[str],
           tag: str) -> dict:
    """ADD every pod with every plugin, then DEL them all; calls are interleaved
    (plugin order rotating per pod) so load from elsewhere hits every row alike."""
    base = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "CNI_PATH": REF_DIR}
    raw = {label: json.dumps(conf).encode() for label, _, conf, _ in plugins}
    adds: dict[str, list[float]] = {label: [] for label, *_ in plugins}
    dels: dict[str, list[float]] = {label: [] for label, *_ in plugins}
    for command, bucket in (("ADD", adds), ("DEL", dels)):
        for i, ns in enumerate(pod_ns):
            k = i % len(plugins)
            for label, path, _, ifname in plugins[k:] + plugins[:k]:
                env = dict(base, CNI_COMMAND=command, CNI_CONTAINERID=f"{tag}{i}",
                           CNI_NETNS=f"/run/netns/{ns}", CNI_IFNAME=ifname)
                argv = ["nsenter", f"--net=/run/netns/{node_ns}", path]
                bucket[label].append(_run(argv, env, raw[label]))
    return {label: _summary(adds[label], dels[label]) for label, *_ in plugins}


def _python_floor(flags: list[str], n: int = 30) -> float:
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run([str(REPO / ".venv" / "bin" / "python"), *flags, "-c", "pass"],
                       check=True)
        ts.append((time.perf_counter() - t0) * 1000)
    return _pct(ts, 0.5)


def bench_cni_exec(pods: int = 200) -> dict:
    """Time ADD then DEL for `pods` pods: labkit-cni vs bridge+host-local (ms)."""
    # Byte-compile like a wheel install would (the dev env may set PYTHONDONTWRITEBYTECODE).
    from labkit.cni.install import EXEC_PATH_OUTSIDE

    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "labkit" / "cni"),
                    *(str(REPO / m) for m in EXEC_PATH_OUTSIDE)], check=False, capture_output=True)
    tag = secrets.token_hex(3)
    prefix = f"lkt-cni-b{tag}"
    node = f"{prefix}-node"
    pod_ns = [f"{prefix}-p{i}" for i in range(pods)]
    tmp = tempfile.mkdtemp(prefix="lkt-cni-bench-")
    created: list[str] = []
    server = None
    try:
        for ns in [node, *pod_ns]:
            subprocess.run(["ip", "netns", "add", ns], check=True)
            created.append(ns)
        br_conf = {"cniVersion": "1.0.0", "name": f"brb{tag}", "type": "bridge",
                   "bridge": f"lkb{tag}", "isGateway": True, "ipMasq": False,
                   "ipam": {"type": "host-local", "subnet": "10.252.0.0/16",
                            "dataDir": f"{tmp}/bridge"}}

        def lk_conf(net: str, subnet: str, mode: str = "ptp", subnet6: str | None = None) -> dict:
            ipam = {"subnet": subnet, "dataDir": f"{tmp}/{net}"}
            if subnet6:
                ipam["ranges"] = [[{"subnet": subnet6}]]  # after `subnet`'s, as host-local orders them
            conf = {"cniVersion": "1.0.0", "name": f"{net}{tag}", "type": "labkit-cni", "mode": mode, "ipam": ipam}
            return conf | ({"bridge": f"lk{net}{tag}"} if mode == "bridge" else {})

        def ptp_conf(net: str, *subnets: str) -> dict:
            return {"cniVersion": "1.0.0", "name": f"{net}{tag}", "type": "ptp", "ipMasq": False,
                    "ipam": {"type": "host-local", "ranges": [[{"subnet": sub}] for sub in subnets],
                             "dataDir": f"{tmp}/{net}"}}

        from labkit.cni.install import install_launcher
        from labkit.cni.server import command, wait_serving

        sock, log = f"{tmp}/labkit-cni.sock", f"{tmp}/server.log"
        with open(log, "wb") as out:
            server = subprocess.Popen(command(sock), stdout=out, stderr=subprocess.STDOUT)
        wait_serving(sock, server.pid, log, timeout=30)
        served = str(install_launcher(f"{tmp}/served", socket=sock))
        in_place = str(install_launcher(f"{tmp}/bin"))
        # (row label, executable, config, ifname): one pod namespace holds all five
        plugins = [
            (REFERENCE, f"{REF_DIR}/bridge", br_conf, "eth0"),
            ("labkit-cni ptp -> CNI server", served, lk_conf("lks", "10.251.0.0/16"), "eth1"),
            ("labkit-cni bridge -> CNI server", served, lk_conf("lbs", "10.249.0.0/16", "bridge"), "eth3"),
            ("labkit-cni ptp in place", in_place, lk_conf("lkl", "10.253.0.0/16"), "eth2"),
            ("labkit-cni bridge in place", in_place, lk_conf("lbl", "10.248.0.0/16", "bridge"), "eth4"),
            ("labkit-cni ptp dual -> CNI server", served,
             lk_conf("lds", "10.245.0.0/16", subnet6="fd00:245::/64"), "eth7"),
            ("labkit-cni ptp dual in place", in_place, lk_conf("ldl", "10.244.0.0/16", subnet6="fd00:244::/64"),
             "eth8"),
        ]
        ref_ptp = [
            ("ptp+host-local", f"{REF_DIR}/ptp", ptp_conf("rps", "10.247.0.0/16"), "eth5"),
            ("ptp+host-local dual", f"{REF_DIR}/ptp", ptp_conf("rpd", "10.246.0.0/16", "fd00:246::/64"), "eth6"),
        ]
        _drive(plugins + ref_ptp, node, pod_ns[:3], "warm")  # page cache and bytecode
        rows = _drive(plugins, node, pod_ns, "c")
        rows |= _drive(ref_ptp, node, pod_ns[:REF_PTP_PODS], "r")
        for label, row in rows.items():
            row["p50_vs_ref"] = round(row["add_del_p50"] / rows[REFERENCE]["add_del_p50"], 2)
            twin = DUAL_OF.get(label)
            row["dual_vs_single"] = round(row["add_del_p50"] / rows[twin]["add_del_p50"], 2) if twin else "-"
        return {
            "pods": pods,
            "pods_ref_ptp": min(pods, REF_PTP_PODS),
            "unit": "ms",
            **rows,
            "python_IS_start_p50": _python_floor(["-I", "-S"]),
        }
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=10)
        for ns in reversed(created):
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    print(json.dumps(bench_cni_exec(n), indent=2))
