"""containerlab's `ports` ("8080:80"): a host port forwarded into a node, whatever the runtime.

Nodes have no Docker network (`network_mode: none`) and netns nodes none at all, so nothing of
the engine's can publish a port. One forwarder process per lab does: `up` binds every host port
itself (a port in use is a clear error at once, and the ports listen when `up` returns), then
hands the listening sockets to the forwarder, which accepts on them and, per connection, opens
the upstream connection from inside the node's network namespace (to the node's mgmt address,
else 127.0.0.1) and copies bytes both ways. TCP only. `down` stops it by its pid file, and its
command line names the lab's folder, so the leftover check finds it.

    python -m labkit.runtime.portfwd SPEC.json     # the spec: [{fd, netns_path, ip, port, what}]
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from labkit import paths, processes
from labkit.errors import LabkitError
from labkit.files import makedirs, write_file

BUFFER = 64 * 1024
CONNECT_TIMEOUT = 5.0


@dataclass(frozen=True)
class Forward:
    host_ip: str
    host_port: int
    netns_path: str
    ip: str  # where the forwarder connects, inside the node's namespace
    port: int
    what: str  # "node PC1 port 80", for messages


def spec_path(lab: str) -> str:
    return paths.lab_path(lab, "ports", "forwards.json")


def pid_path(lab: str) -> str:
    return paths.lab_path(lab, "ports", "forwarder.pid")


def start(lab: str, forwards: Sequence[Forward]) -> None:
    """Bind every host port, then start the lab's forwarder holding them; LabkitError if one is taken."""
    listeners: list[socket.socket] = []
    try:
        for f in forwards:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((f.host_ip, f.host_port))
            except OSError as exc:
                s.close()
                raise LabkitError(f"ports of {f.what}: cannot listen on {f.host_ip}:{f.host_port}: "
                                  f"{exc.strerror or exc}") from None
            s.listen(128)
            s.set_inheritable(True)
            listeners.append(s)
        spec = [{"fd": s.fileno(), "netns_path": f.netns_path, "ip": f.ip, "port": f.port, "what": f.what}
                for s, f in zip(listeners, forwards, strict=True)]
        makedirs(os.path.dirname(spec_path(lab)))
        write_file(spec_path(lab), json.dumps(spec))
        with open(paths.lab_path(lab, "ports", "forwarder.log"), "ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", "labkit.runtime.portfwd", spec_path(lab)],
                                    pass_fds=[s.fileno() for s in listeners], stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        processes.write_pid_file(pid_path(lab), proc.pid)
    finally:
        for s in listeners:
            s.close()


# ---------------------------------------------------------------- the forwarder process


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(BUFFER):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def _serve_one(conn: socket.socket, entry: dict) -> None:
    from labkit.net import netns

    try:
        upstream = netns.run_in_netns(entry["netns_path"], lambda: socket.create_connection(
            (entry["ip"], entry["port"]), timeout=CONNECT_TIMEOUT))
    except OSError as exc:
        print(f"{entry['what']}: cannot connect to {entry['ip']}:{entry['port']}: {exc}", flush=True)
        conn.close()
        return
    upstream.settimeout(None)
    back = threading.Thread(target=_pump, args=(upstream, conn), daemon=True)
    back.start()
    _pump(conn, upstream)
    back.join()
    conn.close()
    upstream.close()


def _accept_loop(listener: socket.socket, entry: dict) -> None:
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=_serve_one, args=(conn, entry), daemon=True).start()


def main(argv: Sequence[str]) -> int:
    with open(argv[0], encoding="utf-8") as fh:
        spec = json.load(fh)
    threads = [threading.Thread(target=_accept_loop, args=(socket.socket(fileno=e["fd"]), e), daemon=True)
               for e in spec]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
