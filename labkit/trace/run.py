"""Running one trace: trace tables and `nft monitor` in every namespace the probe may cross, the
probe from the source (labkit's agent), then the tables removed and the events read back.

Every namespace is entered with `nsenter --net=<path>` (a /run/netns file or a container's
/proc/<pid>/ns/net), so the netns and docker runtimes are traced alike. What is started here
is ended here, whatever happens: the monitors are this process's children, killed by their
Popen; the tables are deleted in a `finally`.
"""

from __future__ import annotations

import itertools
import json
import os
import select
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from labkit.errors import LabkitError
from labkit.files import write_atomic
from labkit.lean import module_argv
from labkit.trace.nftrace import Marker, Monitored, delete_text, end_text, parse_line, table_text

STEP_TIMEOUT = 10.0  # seconds for any one nft / ip command, and for a monitor to show a marker line
T = TypeVar("T")


def _in(netns_path: str, *argv: str) -> list[str]:
    return ["nsenter", f"--net={netns_path}", "--", *argv]


def _run(netns_path: str, argv: Sequence[str], stdin: str | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(_in(netns_path, *argv), input=stdin, capture_output=True, text=True,
                              timeout=STEP_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LabkitError(f"{' '.join(argv)} in {netns_path}: {exc}") from None


def _dies_with_us() -> Callable[[], None]:
    """A preexec_fn: the child (nsenter, then the nft or python it becomes) is killed when the thread
    that started it goes, so a trace killed half way leaves no monitor or agent running."""
    parent = os.getpid()

    def preexec() -> None:
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
        if os.getppid() != parent:  # gone already, before prctl took effect
            os._exit(1)

    return preexec


def parallel(fn: Callable[[str], T], keys: Sequence[str]) -> dict[str, T]:
    if not keys:
        return {}
    with ThreadPoolExecutor(max_workers=min(16, len(keys))) as pool:
        futures = {k: pool.submit(fn, k) for k in keys}
        return {k: f.result() for k, f in futures.items()}


class Monitor:
    """`nft monitor` in one namespace. It prints every ruleset change and trace event it sees
    once it listens; changes to our own table are how we know that it does, and when to stop."""

    POLL = 0.05  # seconds to wait for the monitor to print our table's change before making another

    def __init__(self, name: str, netns_path: str):
        self.name, self.netns_path = name, netns_path
        self.proc = subprocess.Popen(_in(netns_path, "nft", "monitor"), stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, bufsize=0,
                                     preexec_fn=_dies_with_us())
        self.result = Monitored(name)
        self._pending = b""
        self._lines: list[str] = []

    def _read(self, timeout: float) -> bool:
        """Read what the monitor printed within `timeout`; False once it has ended."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            return True
        chunk = os.read(fd, 65536)
        if not chunk:
            return False
        self._pending += chunk
        *lines, self._pending = self._pending.split(b"\n")
        self._lines += [line.decode("utf-8", "replace") for line in lines]
        return True

    def wait_listening(self, table: str, poke: Callable[[int], None], family: str = "ip") -> None:
        """Until the monitor prints a change of `table` (of nft `family`): `poke(n)` makes the n-th change
        (0: the table itself), and another one each time the monitor has printed nothing of it for POLL seconds."""
        deadline = time.monotonic() + STEP_TIMEOUT
        for n in itertools.count():
            poke(n)
            while True:
                alive = self._read(self.POLL)
                if any(f" {family} {table}" in line for line in self._lines):
                    self._lines.clear()
                    return
                if not alive:
                    raise LabkitError(f"nft monitor ended in {self.name} before the trace began")
                if time.monotonic() > deadline:
                    raise LabkitError(f"nft monitor did not start listening in {self.name} in {STEP_TIMEOUT:g}s")
                if not self._pending and not select.select([self.proc.stdout], [], [], 0)[0]:
                    break

    def read_until(self, marker_line: str) -> bool:
        """Keep the trace events printed until `marker_line`; False if the monitor ended or took too long."""
        deadline = time.monotonic() + STEP_TIMEOUT
        while time.monotonic() < deadline:
            while self._lines:
                line = self._lines.pop(0)
                if line.strip() == marker_line:
                    return True
                self.result.lines.append(line)
                event = parse_line(line)
                if event is not None:
                    self.result.events.append(event)
            if not self._read(deadline - time.monotonic()):
                return False
        return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def probe_argv(netns_path: str) -> list[str]:
    return _in(netns_path, *module_argv("labkit.agent", "probe-many"))


class Agent:
    """labkit's agent started in the source's namespace ahead of time (its interpreter starts while
    the trace tables go in); it reads the request, sends the probe and answers when given it."""

    def __init__(self, netns_path: str):
        self.netns_path = netns_path
        try:
            self.proc = subprocess.Popen(probe_argv(netns_path), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, text=True, preexec_fn=_dies_with_us())
        except OSError as exc:
            raise LabkitError(f"cannot start the probe agent in {netns_path}: {exc}") from None

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        budget = STEP_TIMEOUT + float(request.get("timeout", 1.0))
        try:
            out, err = self.proc.communicate(json.dumps(request) + "\n", timeout=budget)
        except subprocess.TimeoutExpired:
            raise LabkitError(f"the probe agent did not answer in {budget:g}s in {self.netns_path}") from None
        for line in out.splitlines():
            try:
                return json.loads(line)
            except ValueError:
                continue
        why = (err.strip().splitlines() or [f"exit code {self.proc.returncode}"])[-1]
        raise LabkitError(f"the probe agent failed in {self.netns_path}: {why}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()


def run_probe(netns_path: str, request: dict[str, Any]) -> dict[str, Any]:
    """The agent's answer to one request, sent from the namespace at `netns_path`."""
    agent = Agent(netns_path)
    try:
        return agent.ask(request)
    finally:
        agent.stop()


def _clean_after_a_killed_trace(journal: str) -> None:
    """A trace that was killed half way left its table where the journal says: remove it there."""
    try:
        with open(journal, encoding="utf-8") as fh:
            recorded = json.load(fh)
    except (OSError, ValueError):
        return
    stale = [p for p in recorded.get("namespaces", []) if isinstance(p, str) and p.startswith(("/run/netns/", "/proc/"))
             and os.path.exists(p)] if isinstance(recorded, dict) else []
    parallel(lambda p: _delete(p, None, quiet=True), stale)  # whichever family's table it left
    os.unlink(journal)


def collect(namespaces: Mapping[str, str], source: str, request: dict[str, Any], protocol: str,
            marker: Marker | None = None,
            journal: str | None = None) -> tuple[Marker, dict[str, Any], dict[str, Monitored]]:
    """Trace one probe: `namespaces` maps a name (node or NS/POD) to its netns path; `source` is
    one of them. Returns the marker, the agent's answer and each namespace's trace events. The probe's
    address family (the request's host) picks the marker's table: `ip` for IPv4, `inet` for IPv6.

    `journal`, a file in the lab's state folder, lists the namespaces given a trace table while the
    trace runs; one left by a trace killed half way has its tables removed first."""
    marker = marker or Marker.new(6 if ":" in str(request.get("host", "")) else 4)
    if journal is not None:
        if os.path.exists(journal):
            _clean_after_a_killed_trace(journal)
        write_atomic(journal, json.dumps({"pid": os.getpid(), "namespaces": sorted(set(namespaces.values()))}))
    text = table_text(marker, protocol)
    monitors: dict[str, Monitor] = {}
    names = list(namespaces)
    removed = False
    agent: Agent | None = None
    try:
        for name in names:
            monitors[name] = Monitor(name, namespaces[name])
        agent = Agent(namespaces[source])

        def install(name: str) -> None:
            def poke(n: int) -> None:
                argv = ["nft", "-f", "-"] if n == 0 else ["nft", "add", "chain", marker.nft_family, marker.table,
                                                           f"listening-{n}"]
                done = _run(namespaces[name], argv, stdin=text if n == 0 else None)
                if done.returncode != 0:
                    raise LabkitError(f"cannot add the trace table in {name}: {done.stderr.strip()}")

            monitors[name].wait_listening(marker.table, poke, marker.nft_family)

        parallel(install, names)
        answer = agent.ask({"id": 1, "op": "trace", "protocol": protocol, "sport": marker.sport, "tos": marker.tos,
                            **request})
        parallel(lambda name: _delete(namespaces[name], marker, text=end_text(marker)), names)
        removed = True
        parallel(lambda name: monitors[name].read_until(marker.end_marker), names)
    finally:
        if agent is not None:
            agent.stop()
        for monitor in monitors.values():
            monitor.stop()
        if not removed:  # whatever failed: no table of this trace stays behind
            parallel(lambda name: _delete(namespaces[name], marker, quiet=True), names)
        if journal is not None and os.path.exists(journal):
            os.unlink(journal)
    return marker, answer, {name: monitors[name].result for name in names}


def _delete(netns_path: str, marker: Marker | None, quiet: bool = False, text: str | None = None) -> None:
    try:
        done = _run(netns_path, ["nft", "-f", "-"], stdin=text or delete_text(marker))
    except LabkitError:
        if quiet:
            return
        raise
    if done.returncode != 0 and not quiet:
        raise LabkitError(f"cannot remove the trace table in {netns_path}: {done.stderr.strip()}")


def route_get(netns_path: str, daddr: str, saddr: str | None = None, iif: str | None = None) -> dict[str, Any] | None:
    """The route that matched (`ip route get fibmatch`; `ip -6` for an IPv6 packet) for a packet as it was
    in that namespace."""
    argv = ["ip", "-j", *(["-6"] if ":" in daddr else []), "route", "get", "fibmatch", daddr]
    if saddr and iif:
        argv += ["from", saddr, "iif", iif]
    done = _run(netns_path, argv)
    if done.returncode != 0:
        return {"error": done.stderr.strip()}
    try:
        found = json.loads(done.stdout)
    except ValueError:
        return None
    return found[0] if found else None
