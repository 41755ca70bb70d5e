"""Starting the bundled DNS server where the cluster needs it: inside pods' network namespaces.

The server runs from the host's Python, entered into each namespace with
`nsenter --net`, so it works for netns pods and for pause containers alike and
no image needs Python. Each writes a pid file once it serves; `labkit down`
stops it through that file (a container's removal would not).

Process model (`cluster.dns.workers`): a replica runs `server.default_workers()`
worker processes (`auto`: one per two CPUs, at least one; the lab's pods share
those cores, see there why not one per CPU as CoreDNS), each with its own
SO_REUSEPORT UDP socket and the same tables; a number fixes the count.
`tests/bench/bench_dns.py` measures exactly this, in a lab, against dnsmasq.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Sequence

from labkit.dns.server import command
from labkit.errors import LabkitError


def start_servers(config: str, replicas: Sequence[tuple[str, str, str | Sequence[str]]], folder: str,
                  timeout: float = 10.0, workers: int | None = None, port: int = 53) -> list[int]:
    """Start one server per (name, netns path, address or addresses to listen on: a dual-stack pod's
    both); wait until all serve.

    `workers`: processes per server (None: the server's default, one per two CPUs). Pid files and logs go to
    `folder` as <name>.pid and <name>.log. Returns the pids.
    """
    started = []
    for name, netns_path, address in replicas:
        pidfile, log = os.path.join(folder, f"{name}.pid"), os.path.join(folder, f"{name}.log")
        with open(log, "ab") as out:
            proc = subprocess.Popen(["nsenter", f"--net={netns_path}", "--",
                                     *command(config, address, port, workers=workers, pidfile=pidfile)],
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        started.append((name, proc, pidfile, log))
    deadline = time.monotonic() + timeout
    for name, proc, pidfile, log in started:
        while not os.path.exists(pidfile):
            if proc.poll() is not None or time.monotonic() > deadline:
                with open(log, encoding="utf-8", errors="replace") as fh:
                    tail = fh.read()[-500:].strip()
                raise LabkitError(f"DNS server {name} did not start: {tail}")
            time.sleep(0.005)
    return [proc.pid for _, proc, _, _ in started]
