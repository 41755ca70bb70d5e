"""Thirty at once: N attendees (throwaway users) bring kube-3node up at the same moment, without root.

Run as root (it makes the users, and removes them after):  invoke bench --only rootless [--attendees N]
Reports the wall time until every lab is up, memory per lab (PSS and RSS summed over every process
the attendee runs: the user's holder, pods' processes, the CNI and DNS servers; one lab per user, so
the user's processes are exactly the lab's), the kernel's own memory growth divided by N (Slab,
PageTables, KernelStack and Shmem from /proc/meminfo: namespaces, sockets, nftables, tmpfs; an
estimate, since other work on the machine moves it too), and that every lab verifies green.
"""

from __future__ import annotations

import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

from tests.attendees import SRC, VENV, Attendee, make_attendee, refresh_venv, remove_attendee

TOPOLOGY = "topologies/kube-3node.yaml"
KERNEL_FIELDS = ("Slab", "PageTables", "KernelStack", "Shmem")


def _meminfo() -> dict[str, int]:
    """/proc/meminfo in KiB."""
    with open("/proc/meminfo", encoding="ascii") as fh:
        return {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in fh)}


def _memory(pids: list[int]) -> dict[str, float]:
    """PSS and RSS (MiB) summed over `pids`, from smaps_rollup."""
    pss = rss = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as fh:
                for line in fh:
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1])
                    elif line.startswith("Rss:"):
                        rss += int(line.split()[1])
        except (FileNotFoundError, ProcessLookupError):
            continue
    return {"pss_mib": pss / 1024, "rss_mib": rss / 1024, "processes": len(pids)}


def _processes(user: Attendee) -> dict[str, int]:
    """What the attendee runs, by program name (the lab's process inventory)."""
    counts: dict[str, int] = {}
    for pid in user.pids():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")
        except FileNotFoundError:
            continue
        name = os.path.basename(argv[0].decode(errors="replace"))
        if name.startswith("python") and b"-c" in argv:
            text = b" ".join(argv).decode(errors="replace")
            name = "python: " + ("cni server" if "cni.server" in text else "dns server" if "dns.server" in text
                                 else "other")
        counts[name] = counts.get(name, 0) + 1
    return counts


def bench_rootless(attendees: int = 30) -> dict:
    refresh_venv()
    users = [make_attendee(f"lkbench{i:02d}", create=True) for i in range(attendees)]
    result: dict = {"attendees": attendees}
    try:
        for user in users:
            user.labkit("down", "--all")
        before = _meminfo()
        started = time.perf_counter()
        procs = [subprocess.Popen(u.argv(f"{VENV}/bin/labkit", "up", TOPOLOGY, "--name", "ws", "-q"), cwd=SRC,
                                  env=u.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for u in users]
        failures = []
        for user, proc in zip(users, procs, strict=True):
            out, _ = proc.communicate(timeout=1800)
            if proc.returncode != 0:
                failures.append(f"{user.name}: {out.strip()[-300:]}")
        result["up_wall_s"] = time.perf_counter() - started
        result["up_failures"] = failures
        time.sleep(2)  # let the servers settle to their idle footprint before measuring
        after = _meminfo()
        per_lab = [_memory(u.pids()) for u in users]
        result["pss_mib_per_lab"] = sum(m["pss_mib"] for m in per_lab) / attendees
        result["rss_mib_per_lab"] = sum(m["rss_mib"] for m in per_lab) / attendees
        result["processes_per_lab"] = sum(m["processes"] for m in per_lab) / attendees
        result["kernel_mib_per_lab"] = sum(after[k] - before[k] for k in KERNEL_FIELDS) / 1024 / attendees
        result["kernel_fields_mib_per_lab"] = {k: (after[k] - before[k]) / 1024 / attendees for k in KERNEL_FIELDS}
        result["inventory"] = _processes(users[0])
        started = time.perf_counter()

        def verify(user: Attendee) -> bool:
            return user.labkit("verify", TOPOLOGY, "--name", "ws", "--timeout", "3", check=False).returncode == 0

        with ThreadPoolExecutor(max_workers=min(10, attendees)) as pool:
            green = list(pool.map(verify, users))
        result["verify_wall_s"] = time.perf_counter() - started
        result["verified_green"] = sum(green)
        started = time.perf_counter()
        downs = [subprocess.Popen(u.argv(f"{VENV}/bin/labkit", "down", "--all"), cwd=SRC, env=u.env(),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for u in users]
        for proc in downs:
            proc.wait(timeout=1800)
        result["down_wall_s"] = time.perf_counter() - started
        result["left_processes"] = sum(len(u.pids()) for u in users)
        result["left_state"] = sum(os.path.exists(u.state_root) for u in users)
    finally:
        for user in users:
            user.labkit("down", "--all", check=False)
            remove_attendee(user)
    return result


def print_rootless_bench(attendees: int = 30) -> None:
    r = bench_rootless(attendees)
    print(f"{r['attendees']} attendees, kube-3node each, without root, all at once:")
    print(f"  up (all):        {r['up_wall_s']:.1f} s wall; failures: {len(r['up_failures'])}")
    for line in r["up_failures"][:5]:
        print(f"    {line}")
    print(f"  memory per lab:  PSS {r['pss_mib_per_lab']:.1f} MiB, RSS {r['rss_mib_per_lab']:.1f} MiB, "
          f"{r['processes_per_lab']:.0f} processes; kernel ~{r['kernel_mib_per_lab']:.1f} MiB "
          f"({', '.join(f'{k} {v:.1f}' for k, v in r['kernel_fields_mib_per_lab'].items())})")
    print(f"  processes of one lab: {', '.join(f'{k} x{v}' for k, v in sorted(r['inventory'].items()))}")
    print(f"  verify (all):    {r['verified_green']}/{r['attendees']} green, {r['verify_wall_s']:.1f} s wall")
    print(f"  down (all):      {r['down_wall_s']:.1f} s wall; left: {r['left_processes']} processes, "
          f"{r['left_state']} state folders")
