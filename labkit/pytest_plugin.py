"""pytest plugin: a labkit lab as a fixture, always torn down and checked for leftovers.

Loaded through the `pytest11` entry point `labkit` (or `-p labkit.pytest_plugin`). It gives:

- the marker `@pytest.mark.labkit_topology(PATH, runtime=None, check_leftovers=True)`, on a test,
  its class or its module, naming the topology of the function-scoped `labkit_lab` fixture;
- the fixture `labkit_lab`: the lab of the marker, brought up for one test;
- the fixture `labkit_lab_factory`: `make(path, runtime=None, name=None)` for tests that want
  several labs, all torn down after the test;
- `labkit_fixture(path, scope="module", runtime=None)`: declares a module- or session-scoped lab;
  assign its result to a name in a conftest or test module and that name is the fixture. Given a
  mapping of ids to paths and/or a list of runtimes, the fixture is parametrized over each pair;
- the fixture `labkit_docker`: a Docker SDK client of the engine the docker runtime uses.

Every lab gets a unique name (the topology's name cut to 5 characters, '-', 6 random hex digits)
so that parallel runs never collide; `down` is registered as a finalizer before `up` starts, so
it runs whatever happens; afterwards nothing of the lab may be left (`labkit.lab.leftovers`:
namespaces, /etc/netns files, state, host link, containers, processes naming its state; and every
process that lived in its namespaces, or had a pid file in its state, before `down`), unless that
check is turned off. A lab on the docker runtime first needs an engine: labkit's images are built
if missing or stale, and without an engine the test fails (it is never skipped); so does a test
run without root.

Relative topology paths resolve against the directory of the test file (for `labkit_fixture`:
of the file that calls it), then against pytest's rootdir.
"""

from __future__ import annotations

import inspect
import os
import re
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from labkit.errors import LabkitError
from labkit.families import is_ip
from labkit.runtime import runtime_names  # the registry alone: no runtime module is loaded

if TYPE_CHECKING:
    from labkit.processes import ProcessId

# labkit.lab (pyroute2, pydantic, the topology loader) is imported where it is used: with the
# entry point installed this module loads in every pytest run, most of which build no lab.

MARKER = "labkit_topology"
LIVE_LABS = pytest.StashKey[set[str]]()
DOCKER_READY = pytest.StashKey[bool]()
# a DNS name or an IPv4/IPv6 address: nothing a probe's address string could be confused by
UDP_PROBE = ('echo labkit-probe | socat -T"$0" - "UDP:$1:$2" 2>/dev/null | od -An -tx1 -N32 | grep . '
             '|| { echo "no answer within $0s" >&2; exit 1; }')
_HOST = re.compile(r"^(?:[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62})(?:\.[A-Za-z0-9_-]{1,63})*\.?|[0-9a-fA-F:.]+)$")


# ---------------------------------------------------------------- pytest hooks


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("labkit", "labkit labs as fixtures")
    group.addoption("--labkit-runtime", default=None, choices=runtime_names(),
                    help="bring every lab up with this runtime, whatever its topology says")
    group.addoption("--labkit-no-leftover-check", action="store_true", default=False,
                    help="do not fail a test whose lab left something behind after down")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(path, runtime=None, check_leftovers=True): the topology the labkit_lab fixture "
        "brings up (relative to the test file, then rootdir)",
    )
    config.stash[LIVE_LABS] = set()


def pytest_unconfigure(config: pytest.Config) -> None:
    """A safety net for interrupted runs (Ctrl-C): labs whose finalizers never ran go down here."""
    for name in sorted(config.stash.get(LIVE_LABS, set())):
        from labkit import lab

        lab.down(name)
    from labkit import rootless

    rootless.stop_holder_if_idle()  # without root: the user's namespaces go with its last lab


# ---------------------------------------------------------------- names, paths, leftovers


def unique_lab_name(topology_name: str) -> str:
    """`<first 5 chars of the topology's name>-<6 hex digits>`: a valid lab name of <= 12 chars."""
    stem = re.sub(r"[^a-z0-9-]", "", topology_name.lower())[:5].strip("-") or "lab"
    return f"{stem}-{secrets.token_hex(3)}"


def resolve_topology(path: str | os.PathLike[str], bases: Sequence[Path], what: str) -> Path:
    """An absolute topology path: `path` itself if absolute, else the first base it exists under."""
    given = Path(path)
    candidates = [given] if given.is_absolute() else list(dict.fromkeys(Path(b) / given for b in bases))
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    tried = ", ".join(str(c) for c in candidates)
    pytest.fail(f"{what}: topology file {str(path)!r} not found (tried: {tried})", pytrace=False)


def leftovers(name: str, runtime: str | None = None) -> list[str]:
    """Everything of lab `name` that still exists (labkit.lab.leftovers; `runtime` is not needed:
    it looks at every place a lab can leave something)."""
    from labkit import lab

    return lab.leftovers(name)


def lab_processes(running: RunningLab) -> dict[int, ProcessId]:
    """Every process living in one of the lab's network namespaces (pods' and nodes' processes, the
    DNS servers), and those labkit recorded pid files for in the lab's state (the CNI server), each
    with its start time: what must be gone once the lab is down."""
    from labkit import paths, processes
    from labkit.net import netns
    from labkit.topology.plan import netns_prefix

    where = [n.get("netns_path") for n in running.summary.get("nodes", [])]
    where += [p.get("netns_path") for p in running.summary.get("pods", [])]
    where += [netns.netns_path(n) for n in netns.list_namespaces(netns_prefix(running.name))]
    pids = set(netns.pids_in_namespaces(filter(None, where)))
    recorded = (processes.read_pid_file(f) for f in processes.pid_files(paths.lab(running.name).dir))
    pids |= {proc.pid for proc in recorded if proc is not None}
    return {proc.pid: proc for proc in map(processes.identify, pids) if proc is not None}


def surviving(procs: dict[int, ProcessId]) -> list[str]:
    """Those of `procs` (from lab_processes) still alive: same pid, same start time, not a zombie."""
    from labkit import processes

    return [f"process {pid} ({' '.join(processes.cmdline(pid))[:80]})"
            for pid, proc in sorted(procs.items()) if processes.is_running(proc)]


# ---------------------------------------------------------------- the lab handed to tests


class ExecFailed(AssertionError):
    """`RunningLab.exec(..., check=True)` of a command that exited non-zero."""


class RunningLab:
    """A lab that is up: its summary, and ways to run things in and check reachability between its
    nodes (`NODE`) and pods (`NS/POD`)."""

    def __init__(self, name: str, summary: dict[str, Any], topology: Path | None = None):
        self.name = name
        self.summary = summary
        self.topology = topology

    def __repr__(self) -> str:
        return f"<RunningLab {self.name} from {self.topology}>"

    # ---- facts from the summary

    @property
    def runtime(self) -> str:
        """The runtime the lab runs on (netns, docker)."""
        return self.summary["runtime"]

    def nodes(self) -> dict[str, dict[str, Any]]:
        """Node name -> its status entry."""
        return {n["name"]: n for n in self.summary["nodes"]}

    def pods(self) -> dict[str, dict[str, Any]]:
        """"ns/name" -> the pod's status entry (node, ip, pid, netns_path, labels)."""
        return {f"{p['namespace']}/{p['name']}": p for p in self.summary["pods"]}

    def pod_ip(self, pod: str) -> str:
        return self._lookup(self.pods(), pod, "pod")["ip"]

    def services(self) -> dict[str, dict[str, Any]]:
        """"ns/name" -> the Service's status entry (type, cluster_ip, ports, endpoints)."""
        return {f"{s['namespace']}/{s['name']}": s for s in self.summary["services"]}

    def service(self, service: str) -> dict[str, Any]:
        return self._lookup(self.services(), service, "service")

    def _lookup(self, table: dict[str, dict[str, Any]], key: str, what: str) -> dict[str, Any]:
        if key not in table:
            known = ", ".join(table) or "none"
            raise KeyError(f"lab {self.name} has no {what} {key!r} ({what}s: {known})")
        return table[key]

    def netns_path(self, target: str) -> str:
        """The network namespace of a node or pod as a path `nsenter --net=` and setns() accept, for
        running a program of the host (a server, a packet capture) inside the lab."""
        from labkit import lab

        return lab.sandbox_of(self.name, target)[1].netns_path

    # ---- running things

    def exec(self, target: str, *argv: str, check: bool = False,
             timeout: float | None = None) -> subprocess.CompletedProcess[str]:
        """Run argv in a node or pod (its network, and for pods mount and UTS, namespaces).

        `stdout` holds the command's stdout followed by its stderr. With `timeout`, the command
        runs under coreutils `timeout`, which exits 124 when it expires.
        """
        __tracebackhide__ = True  # a failure points at the test's line, not at the plugin
        if not argv:
            raise ValueError("exec needs a command: lab.exec(target, 'ping', '-c1', '10.0.0.2')")
        command = [str(a) for a in argv]
        run = ["timeout", f"{timeout:g}", *command] if timeout else command
        from labkit import lab

        rt, sandbox = lab.sandbox_of(self.name, target)
        code, output = rt.exec(sandbox, run, capture=True)
        result = subprocess.CompletedProcess(command, code, output, "")
        if check and code != 0:
            raise ExecFailed(f"in {target} of lab {self.name}: {_quote(command)} exited {code}:\n"
                             f"{output.rstrip()}")
        return result

    def resolve(self, source: str, name: str, timeout: float = 10) -> list[str]:
        """The addresses `name` resolves to in `source`, as its programs would see them.

        This is getaddrinfo() (`getent ahosts`) in the node or pod, so the search path and
        ndots of its resolv.conf and its hosts file apply. Empty when the name does not resolve.
        """
        _check_host(name)
        result = self.exec(source, "getent", "ahosts", name, timeout=timeout)
        if result.returncode != 0:
            return []
        addresses: list[str] = []
        for line in result.stdout.splitlines():
            field = line.split(maxsplit=1)[0] if line.strip() else ""
            if is_ip(field) and field not in addresses:
                addresses.append(field)
        return addresses

    # ---- reachability

    def probe(self, source: str, destination: str, port: int | None = None, proto: str = "tcp",
              timeout: float = 2) -> tuple[bool, list[str], subprocess.CompletedProcess[str]]:
        """One attempt to reach `destination` from `source`: (reached, command tried, its result).

        Without a port: one ping. TCP: a connect with socat. UDP: a datagram sent with socat;
        it counts as reached only if something answers within the timeout (a silent server
        and a dropped datagram look the same).
        """
        _check_host(destination)
        wait = f"{timeout:g}"
        if port is None:
            command = ["ping", "-c1", f"-W{wait}", destination]
        else:
            if not 0 < int(port) < 65536:
                raise ValueError(f"port {port!r} is not in 1-65535")
            host = f"[{destination}]" if ":" in destination else destination
            if proto == "tcp":
                command = ["socat", f"-T{wait}", "-u", "OPEN:/dev/null",
                           f"TCP:{host}:{int(port)},connect-timeout={wait}"]
            elif proto == "udp":
                # A constant script; the address comes in as positional parameters, never as text.
                # The answer may be binary: it is shown as hex; no answer at all exits 1.
                command = ["sh", "-c", UDP_PROBE, wait, host, str(int(port))]
            else:
                raise ValueError(f"proto {proto!r}: use 'tcp' or 'udp'")
        result = self.exec(source, *command, timeout=timeout + 3)
        return result.returncode == 0, command, result

    def assert_reachable(self, source: str, destination: str, port: int | None = None,
                         proto: str = "tcp", timeout: float = 2, within: float = 5) -> None:
        """Fail unless `source` reaches `destination` (retried for up to `within` seconds)."""
        __tracebackhide__ = True  # a failure points at the test's line, not at the plugin
        deadline = time.monotonic() + within
        while True:
            reached, command, result = self.probe(source, destination, port, proto, timeout)
            if reached or time.monotonic() >= deadline:
                break
            time.sleep(0.2)
        if not reached:
            raise AssertionError(self._explain(source, destination, port, proto, command, result,
                                               expected="reach", within=within))

    def assert_unreachable(self, source: str, destination: str, port: int | None = None,
                           proto: str = "tcp", timeout: float = 2) -> None:
        """Fail if `source` reaches `destination`, or if the name `destination` does not resolve
        in `source` (that would pass without testing the network: give an address instead)."""
        __tracebackhide__ = True  # a failure points at the test's line, not at the plugin
        if not is_ip(destination) and not self.resolve(source, destination):
            raise AssertionError(
                f"{source} -> {destination}: the name does not resolve in {source}, so "
                "unreachability proves nothing; check the name, or pass an IP address")
        reached, command, result = self.probe(source, destination, port, proto, timeout)
        if reached:
            raise AssertionError(self._explain(source, destination, port, proto, command, result,
                                               expected="not reach"))

    def _explain(self, source: str, destination: str, port: int | None, proto: str,
                 command: list[str], result: subprocess.CompletedProcess[str], expected: str,
                 within: float | None = None) -> str:
        what = f"{destination}:{port}/{proto}" if port else f"{destination} (ping)"
        lines = [f"expected {source} to {expected} {what} in lab {self.name}",
                 f"  tried in {source}: {_quote(command)}"
                 + (f" (retried for {within:g}s)" if within else ""),
                 f"  exit code {result.returncode}" + (": " if result.stdout.strip() else "")
                 + result.stdout.strip().replace("\n", "\n    ")]
        if not is_ip(destination):
            lines.append(f"  {destination} resolves in {source} to: "
                         f"{', '.join(self.resolve(source, destination)) or 'nothing'}")
        cluster_ips = {s["cluster_ip"] for s in self.summary.get("services", [])}
        if port is None and destination in cluster_ips:
            lines.append("  note: a ClusterIP answers only on its service ports; pass port=")
        return "\n".join(lines)


def _check_host(host: str) -> None:
    if not _HOST.match(host):
        raise ValueError(f"{host!r} is neither an IP address nor a DNS name")


def _quote(argv: Sequence[str]) -> str:
    import shlex

    return " ".join(shlex.quote(a) for a in argv)


# ---------------------------------------------------------------- bringing labs up and down


def _require_root(what: str) -> None:
    """Root, or an ordinary user's own namespaces (labkit.rootless: joined once, first time a lab is needed)."""
    from labkit import rootless

    if os.geteuid() != 0:
        try:
            rootless.enter()
        except LabkitError as exc:
            pytest.fail(f"{what}: labkit builds network namespaces and needs root, or without root your own "
                        f"namespaces, which failed: {exc}", pytrace=False)


def _require_docker(config: pytest.Config, what: str) -> None:
    """The docker runtime's precondition, checked once per run: a Docker engine answers, and labkit's
    images are there and current (built now if not, as `labkit image build` does). Without an
    engine the test fails, naming what to start; it is never skipped."""
    if config.stash.get(DOCKER_READY, False):
        return
    from labkit.runtime.engine import connect
    from labkit.runtime.image import build_images

    try:
        client = connect()
        try:
            build_images(client=client)
        finally:
            client.close()
    except LabkitError as exc:
        pytest.fail(f"{what} needs the docker runtime: {exc}", pytrace=False)
    config.stash[DOCKER_READY] = True


def _option(config: pytest.Config, name: str, default: Any) -> Any:
    """A plugin option; the defaults when the plugin's hooks are not registered (labkit_fixture alone)."""
    try:
        return config.getoption(name)
    except ValueError:
        return default


def start_lab(request: pytest.FixtureRequest, path: Path, runtime: str | None = None,
              name: str | None = None, check_leftovers: bool = True) -> RunningLab:
    """Bring the lab in `path` up with a unique name; down (and the leftover check) is already a
    finalizer of `request` when `up` starts, so a failing test or a half-built lab is removed."""
    from labkit import lab
    from labkit.progress import Progress

    what = f"lab from {path}"
    _require_root(what)
    try:
        plan = lab.validate(str(path))
    except LabkitError as exc:
        pytest.fail(f"{what}: invalid topology:\n{exc}", pytrace=False)
    if name and name in lab.known_labs():
        pytest.fail(f"{what}: a lab named {name!r} is already up; it is not this test's to take down",
                    pytrace=False)
    name = name or unique_lab_name(plan.lab)
    runtime = runtime or _option(request.config, "labkit_runtime", None)
    check = check_leftovers and not _option(request.config, "labkit_no_leftover_check", False)
    live = request.config.stash.get(LIVE_LABS, set())
    running = RunningLab(name, {"name": name, "runtime": runtime or plan.runtime, "nodes": [], "pods": []}, path)
    if running.runtime == "docker":
        _require_docker(request.config, what)

    def teardown() -> None:
        processes = lab_processes(running) if check else {}
        lab.down(name)
        live.discard(name)
        left = lab.leftovers(name) + surviving(processes) if check else []
        if left:
            pytest.fail(f"lab {name} ({path}) left things behind after down: {', '.join(left)}",
                        pytrace=False)

    request.addfinalizer(teardown)
    live.add(name)
    try:
        running.summary = lab.up(str(path), runtime=runtime, progress=Progress(quiet=True), name=name)
    except LabkitError as exc:
        pytest.fail(f"lab {name} from {path} did not come up: {exc}", pytrace=False)
    return running


def _test_dirs(request: pytest.FixtureRequest) -> list[Path]:
    return [Path(request.path).parent, Path(request.config.rootpath)]


@pytest.fixture
def labkit_lab(request: pytest.FixtureRequest) -> RunningLab:
    """The lab named by the test's `@pytest.mark.labkit_topology(path)`, up for this test only."""
    marker = request.node.get_closest_marker(MARKER)
    if marker is None or not marker.args:
        pytest.fail(
            f"{request.node.nodeid} uses the labkit_lab fixture but names no topology: add "
            f"@pytest.mark.{MARKER}('topologies/two-hosts.yaml') to the test, its class or its module "
            "(pytestmark), or declare a lab with labkit.pytest_plugin.labkit_fixture(path)",
            pytrace=False)
    unknown = sorted(set(marker.kwargs) - {"runtime", "check_leftovers"})
    if unknown or len(marker.args) > 1:
        pytest.fail(
            f"@pytest.mark.{MARKER} takes one path and runtime=, check_leftovers= "
            f"(got {', '.join(unknown) or 'more than one path'}); for a lab shared by a module or a "
            "session, use labkit.pytest_plugin.labkit_fixture(path, scope=...)", pytrace=False)
    path = resolve_topology(marker.args[0], _test_dirs(request), f"@pytest.mark.{MARKER}")
    return start_lab(request, path, runtime=marker.kwargs.get("runtime"),
                     check_leftovers=marker.kwargs.get("check_leftovers", True))


@pytest.fixture
def labkit_lab_factory(request: pytest.FixtureRequest) -> Iterator[Callable[..., RunningLab]]:
    """`make(path, runtime=None, name=None)` -> a RunningLab, torn down after the test."""

    def make(path: str | os.PathLike[str], runtime: str | None = None,
             name: str | None = None) -> RunningLab:
        found = resolve_topology(path, _test_dirs(request), "labkit_lab_factory")
        return start_lab(request, found, runtime=runtime, name=name)

    yield make


@pytest.fixture(scope="session")
def labkit_docker(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A Docker SDK client of the engine the docker runtime uses (DOCKER_HOST or the local socket),
    with labkit's images built; the test fails (it is not skipped) when no engine answers."""
    _require_docker(request.config, "the labkit_docker fixture")
    from labkit.runtime.engine import connect

    client = connect()
    yield client
    client.close()


def labkit_fixture(path: str | os.PathLike[str] | Mapping[str, str | os.PathLike[str]],
                   scope: str = "module", name: str | None = None,
                   runtime: str | Sequence[str] | None = None, check_leftovers: bool = True,
                   autouse: bool = False) -> Any:
    """Declare a lab fixture of any scope; the variable it is assigned to names the fixture:

        kube = labkit_fixture("topologies/kube-3node.yaml", scope="session")

    A relative `path` resolves against the directory of the calling file, then rootdir.
    `name` fixes the lab's name (runs sharing it cannot run in parallel); by default it is unique.

    Given a mapping of ids to paths, or several runtimes, the fixture is parametrized: every test
    using it runs once per (runtime, topology), each lab brought up once for the scope, with test
    ids like `netns-vxlan`:

        kube = labkit_fixture({"host-gw": "kube-3node.yaml", "vxlan": "kube-vxlan.yaml"},
                              runtime=("netns", "docker"), scope="session")
    """
    caller = inspect.currentframe()
    base = Path(caller.f_back.f_code.co_filename if caller and caller.f_back else ".").resolve().parent
    paths = dict(path) if isinstance(path, Mapping) else {"": path}
    runtimes = [runtime] if runtime is None or isinstance(runtime, str) else list(runtime)
    unknown = [r for r in runtimes if r is not None and r not in runtime_names()]
    if unknown or not runtimes or not paths:
        raise ValueError(f"labkit_fixture: runtime must be one of {', '.join(runtime_names())} or a list of them "
                         f"(got {runtime!r}), and path a path or a mapping of ids to paths (got {path!r})")
    params = [(rt, key, p) for rt in runtimes for key, p in paths.items()]
    if name and len(params) > 1:
        raise ValueError(f"labkit_fixture: name={name!r} fixes the name of one lab, and this fixture "
                         f"brings up {len(params)}")
    ids = ["-".join(part for part in (rt if len(runtimes) > 1 else "", key) if part) for rt, key, _ in params]

    def lab_fixture(request: pytest.FixtureRequest) -> RunningLab:
        rt, _, given = request.param if len(params) > 1 else params[0]
        found = resolve_topology(given, [base, Path(request.config.rootpath)], "labkit_fixture")
        return start_lab(request, found, runtime=rt, name=name, check_leftovers=check_leftovers)

    lab_fixture.__doc__ = f"the lab of {path}, up for the {scope}" + (f" under {runtime}" if runtime else "")
    if len(params) > 1:
        return pytest.fixture(scope=scope, autouse=autouse, params=params, ids=ids)(lab_fixture)  # type: ignore[call-overload]
    return pytest.fixture(scope=scope, autouse=autouse)(lab_fixture)  # type: ignore[call-overload]
