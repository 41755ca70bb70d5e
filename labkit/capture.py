"""Packet capture in a node's or pod's network namespace: the host's tcpdump, entered with `nsenter --net`.

Both runtimes give every node and pod a network namespace path (/run/netns/<name> or /proc/<pid>/ns/net),
so the same tcpdump from the host works for either, and nothing needs installing in an image.

- Every interface by default: `tcpdump -i any`, so the pcap is Linux cooked capture v2 (LINUX_SLL2),
  which records each packet's interface; one interface (`TARGET:IFACE`) gives that interface's own link
  type (Ethernet for a veth).
- The pcap goes to stdout (`-w -`, packet-buffered with `-U`), which labkit points at the user's file or
  leaves on its own stdout, so `labkit capture kube3 w1:eth0 | wireshark -k -i -` streams.
  `--immediate-mode`: each packet is handed over as it comes (not when the kernel's ring block times out,
  up to a second later), so a stream is live and a capture stopped right after a probe holds it.
- The filter expression never becomes an argument: labkit writes it to a file in the lab's state folder
  (`-F FILE`) after checking it, and tcpdump compiles it (`-d`) before the capture starts, so a bad filter
  is one error message and no capture.
- A capture is a lab process: its pid file sits in the lab's folder, tcpdump's command line names that
  folder (the `-F` file), so `down` stops it and `leftovers` would find it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass

from labkit import files, paths, processes
from labkit.errors import InputError, LabkitError
from labkit.topology.schema import IFNAME

MAX_FILTER = 4096  # characters of filter expression: far more than any real one
CAPTURE_DIR = "capture"


@dataclass(frozen=True)
class Capture:
    """A running tcpdump and the files it was given."""

    process: subprocess.Popen
    proc: processes.ProcessId
    pid_file: str
    filter_file: str

    def stop(self) -> None:
        """TERM (tcpdump flushes and exits), KILL after the grace period; returns once it is gone."""
        processes.stop([self.proc])
        self.wait()

    def wait(self) -> int:
        code = self.process.wait()
        for path in (self.pid_file, self.filter_file):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        return code


def check_filter(words: Sequence[str]) -> str:
    """The filter expression, its words joined as tcpdump joins its arguments; InputError if it cannot be one."""
    for word in words:
        if "\0" in word:
            raise InputError("the capture filter has a NUL character")
    text = " ".join(words)
    if len(text) > MAX_FILTER:
        raise InputError(f"the capture filter is {len(text)} characters long; at most {MAX_FILTER}")
    return text


def check_interface(ifname: str | None) -> str:
    """`any` for every interface; otherwise an interface name."""
    if ifname is None or ifname == "any":
        return "any"
    if not IFNAME.match(ifname):
        raise InputError(f"{ifname!r} is not an interface name: 1-15 letters, digits, '_', '.' or '-'")
    return ifname


def _argv(netns_path: str, ifname: str, filter_file: str, *extra: str) -> list[str]:
    return ["nsenter", f"--net={netns_path}", "tcpdump", "-i", ifname, "-n", *extra, "-F", filter_file]


def start(lab: str, netns_path: str, ifname: str | None, filter_words: Sequence[str], out: int,
          *, where: str, quiet: bool = False) -> Capture:
    """Start tcpdump in the namespace at `netns_path`, writing pcap to the file descriptor `out`;
    `where` names the target in errors (`w1:eth0`). Checks the interface and filter first."""
    ifname = check_interface(ifname)
    expression = check_filter(filter_words)
    folder = paths.lab_path(lab, CAPTURE_DIR)
    files.makedirs(folder, 0o700)
    name = f"{os.getpid()}-{time.monotonic_ns()}"
    filter_file = paths.inside(folder, f"{name}.filter")
    pid_file = paths.inside(folder, f"{name}.pid")
    files.write_file(filter_file, expression + "\n", mode=0o600)
    try:
        compiled = subprocess.run(_argv(netns_path, ifname, filter_file, "-d"), capture_output=True, text=True,
                                  timeout=30, check=False)
        if compiled.returncode != 0:
            raise LabkitError(f"capture {where}: {_tcpdump_reason(compiled.stderr)}")
        argv = _argv(netns_path, ifname, filter_file, "--immediate-mode", "-U", "-w", "-", *(["-q"] if quiet else []))
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                   stderr=subprocess.DEVNULL if quiet else None)
    except BaseException:
        os.unlink(filter_file)
        raise
    proc = processes.write_pid_file(pid_file, process.pid)
    return Capture(process, proc, pid_file, filter_file)


def _tcpdump_reason(stderr: str) -> str:
    lines = [line.removeprefix("tcpdump: ") for line in stderr.splitlines()
             if line.strip() and not line.startswith("tcpdump: data link type") and not line.startswith("(")]
    reason = "; ".join(lines) or "tcpdump failed"
    if "No such device" in reason:
        reason += " (no such interface in that namespace)"
    return reason


def run(lab: str, netns_path: str, ifname: str | None, filter_words: Sequence[str], output: str | None,
        *, where: str) -> int:
    """`labkit capture`: capture until Ctrl-C, SIGTERM, the reader going away, or the lab going down.
    `output`: a pcap file to write (0644), or None for stdout. Returns tcpdump's exit code (0 when stopped)."""
    created = bool(output) and not os.path.exists(output)
    fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644) if output else 1
    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        processes.signal_process(capture.proc, signal.SIGTERM)

    try:
        try:
            capture = start(lab, netns_path, ifname, filter_words, fd, where=where)
        except BaseException:
            if created and output:  # a capture that never started leaves no empty file behind
                os.unlink(output)
            raise
        previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        try:
            code = capture.wait()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    finally:
        if output:
            os.close(fd)
    if not os.path.isdir(paths.lab_dir(lab)):
        return 0  # the lab went down: its capture ends with it
    return 0 if stopping or code in (0, -signal.SIGTERM, -signal.SIGINT) else code
