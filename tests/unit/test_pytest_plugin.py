"""The pytest plugin without root: names, paths, the marker's errors, and probe commands."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from labkit import pytest_plugin
from labkit.pytest_plugin import RunningLab, resolve_topology, unique_lab_name
from labkit.topology.schema import LAB_NAME

pytest_plugins = ["pytester"]

TWO_HOSTS = Path(__file__).resolve().parents[2] / "topologies" / "two-hosts.yaml"


@pytest.fixture
def inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A pytester whose runs load the plugin by -p alone, with or without the entry point installed."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    return pytester


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("-p", "labkit.pytest_plugin", *args)


# ---------------------------------------------------------------- names and paths


@pytest.mark.parametrize("topology", ["two-hosts", "kube3", "a", "x" * 12, "Weird_Name.9", "-", "abcd-efgh"])
def test_unique_lab_name_is_a_valid_lab_name(topology: str) -> None:
    name = unique_lab_name(topology)
    assert LAB_NAME.match(name), name
    assert len(name) <= 12


def test_unique_lab_names_differ_and_keep_the_topology_name() -> None:
    names = {unique_lab_name("two-hosts") for _ in range(50)}
    assert len(names) == 50
    assert all(n.startswith("two-h-") for n in names)


def test_relative_topology_resolves_against_the_test_dir_then_rootdir(tmp_path: Path) -> None:
    here, root = tmp_path / "tests", tmp_path
    here.mkdir()
    (root / "t.yaml").write_text("name: t\n")
    assert resolve_topology("t.yaml", [here, root], "x") == root / "t.yaml"
    (here / "t.yaml").write_text("name: t\n")
    assert resolve_topology("t.yaml", [here, root], "x") == here / "t.yaml"
    assert resolve_topology(str(root / "t.yaml"), [here], "x") == root / "t.yaml"


def test_missing_topology_fails_naming_every_place_tried(tmp_path: Path) -> None:
    with pytest.raises(pytest.fail.Exception, match=r"'nope.yaml' not found \(tried: .*a/nope.yaml, .*b/nope.yaml\)"):
        resolve_topology("nope.yaml", [tmp_path / "a", tmp_path / "b"], "x")


# ---------------------------------------------------------------- the marker and the fixture's errors


def test_marker_is_registered(inner: pytest.Pytester) -> None:
    result = run(inner, "--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.labkit_topology(path, runtime=None, check_leftovers=True):*"])


def test_missing_marker_is_a_clear_error(inner: pytest.Pytester) -> None:
    inner.makepyfile("""
        def test_uses_lab(labkit_lab):
            pass
    """)
    result = run(inner, "--strict-markers")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*test_uses_lab uses the labkit_lab fixture but names no topology: "
                                 "add @pytest.mark.labkit_topology(*"])
    result.stdout.no_fnmatch_line("*Traceback*")


def test_missing_topology_file_is_a_clear_error(inner: pytest.Pytester) -> None:
    inner.makepyfile("""
        import pytest

        @pytest.mark.labkit_topology("topologies/nope.yaml")
        def test_uses_lab(labkit_lab):
            pass
    """)
    result = run(inner)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*labkit_topology: topology file 'topologies/nope.yaml' not found (tried: *)"])


def test_marker_arguments_are_checked(inner: pytest.Pytester) -> None:
    inner.makepyfile(f"""
        import pytest

        @pytest.mark.labkit_topology({str(TWO_HOSTS)!r}, scope="module")
        def test_uses_lab(labkit_lab):
            pass
    """)
    result = run(inner)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*labkit_topology takes one path and runtime=, check_leftovers= (got scope)*"
                                 "use labkit.pytest_plugin.labkit_fixture(path, scope=...)"])


def test_entry_point_loads_the_plugin(pytester: pytest.Pytester) -> None:
    from importlib.metadata import entry_points

    assert entry_points(group="pytest11", name="labkit"), \
        "the pytest11 entry point is not installed: pip install -e ."
    pytester.makepyfile("""
        def test_uses_lab(labkit_lab):
            pass
    """)
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*names no topology*"])


def test_invalid_topology_is_a_clear_error(inner: pytest.Pytester) -> None:
    inner.makefile(".yaml", bad="name: Not/Valid\ntopology: {nodes: {h1: {kind: linux}}}\n")
    inner.makepyfile("""
        import pytest

        @pytest.mark.labkit_topology("bad.yaml")
        def test_uses_lab(labkit_lab):
            pass
    """)
    result = run(inner)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*invalid topology:*", "*bad.yaml*name*"])


def test_not_root_fails_rather_than_skips(inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    inner.makepyfile(f"""
        import pytest
        from labkit.pytest_plugin import labkit_fixture

        shared = labkit_fixture({str(TWO_HOSTS)!r})

        @pytest.mark.labkit_topology({str(TWO_HOSTS)!r})
        def test_function_lab(labkit_lab):
            pass

        def test_module_lab(shared):
            pass
    """)
    result = run(inner, "-rs")
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(["*labkit builds network namespaces and needs root*"])


def test_a_fixture_over_runtimes_and_topologies_is_parametrized(inner: pytest.Pytester) -> None:
    inner.makepyfile(f"""
        from labkit.pytest_plugin import labkit_fixture

        each = labkit_fixture({{"a": {str(TWO_HOSTS)!r}, "b": {str(TWO_HOSTS)!r}}}, runtime=["netns", "docker"],
                              scope="session")
        one = labkit_fixture({str(TWO_HOSTS)!r}, runtime="docker")

        def test_each(each):
            pass

        def test_one(one):
            pass
    """)
    result = run(inner, "--collect-only", "-q")
    result.stdout.fnmatch_lines(["*::test_each[[]netns-a[]]", "*::test_each[[]netns-b[]]",
                                 "*::test_each[[]docker-a[]]", "*::test_each[[]docker-b[]]", "*::test_one"])


@pytest.mark.parametrize("kwargs", [{"runtime": "podman"}, {"runtime": ["netns", "lxc"]},
                                    {"name": "fixed", "runtime": ["netns", "docker"]}])
def test_a_fixture_declared_wrong_is_refused_at_once(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="labkit_fixture: .*(runtime must be one of netns, docker|fixes the name)"):
        pytest_plugin.labkit_fixture(TWO_HOSTS, **kwargs)


def test_docker_runtime_without_an_engine_fails_rather_than_skips(
        inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)  # as root, the engine is the one thing missing
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    inner.makepyfile(f"""
        import pytest

        @pytest.mark.labkit_topology({str(TWO_HOSTS)!r}, runtime="docker")
        def test_docker_lab(labkit_lab):
            pass

        def test_engine(labkit_docker):
            pass
    """)
    result = run(inner, "-rs")
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines([f"*lab from {TWO_HOSTS} needs the docker runtime: Docker engine not reachable*",
                                 "*the labkit_docker fixture needs the docker runtime: Docker engine not reachable*"])


# ---------------------------------------------------------------- probes, without a lab


class FakeLab(RunningLab):
    """Records the commands it would run; answers from `replies` (argv[0] -> (code, output))."""

    def __init__(self, replies: dict[str, tuple[int, str]]):
        super().__init__("t-000000", {"nodes": [], "pods": [], "dns": None,
                                      "services": [{"namespace": "default", "name": "web",
                                                    "cluster_ip": "10.96.0.7"}]})
        self.replies = replies
        self.ran: list[tuple[str, ...]] = []

    def exec(self, target, *argv, check=False, timeout=None):
        self.ran.append(argv)
        code, output = self.replies.get(argv[0], (1, ""))
        return subprocess.CompletedProcess(list(argv), code, output, "")


def test_ping_when_no_port() -> None:
    fake = FakeLab({"ping": (0, "")})
    fake.assert_reachable("h1", "10.0.0.2")
    assert fake.ran == [("ping", "-c1", "-W2", "10.0.0.2")]


def test_tcp_connect_with_socat_and_ipv6_in_brackets() -> None:
    fake = FakeLab({"socat": (0, "")})
    fake.assert_reachable("default/client", "fd00::1", port=80)
    assert fake.ran == [("socat", "-T2", "-u", "OPEN:/dev/null", "TCP:[fd00::1]:80,connect-timeout=2")]


def test_udp_counts_only_an_answer() -> None:
    silent = FakeLab({"sh": (1, "no answer within 2s\n")})
    assert silent.probe("h1", "10.0.0.2", 53, "udp")[0] is False
    answered = FakeLab({"sh": (0, " 6c 61 e0\n")})
    assert answered.probe("h1", "10.0.0.2", 53, "udp")[0] is True
    script, *params = answered.ran[0][2:]
    assert "10.0.0.2" not in script and params == ["2", "10.0.0.2", "53"]


def test_udp_probe_script_shows_answers_as_hex_and_fails_on_silence(tmp_path: Path) -> None:
    """The script itself, run here against a local UDP echo server and a closed port."""
    import socket
    import threading

    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def echo() -> None:
        data, peer = server.recvfrom(100)
        server.sendto(b"\xe0" + data, peer)

    threading.Thread(target=echo, daemon=True).start()
    answered = subprocess.run(["sh", "-c", pytest_plugin.UDP_PROBE, "2", "127.0.0.1", str(port)],
                              capture_output=True, text=True, timeout=10)
    server.close()
    assert answered.returncode == 0 and answered.stdout.split()[:2] == ["e0", "6c"]
    closed = subprocess.run(["sh", "-c", pytest_plugin.UDP_PROBE, "1", "127.0.0.1", str(port)],
                            capture_output=True, text=True, timeout=10)
    assert closed.returncode == 1 and "no answer within 1s" in closed.stderr


def test_reachable_failure_says_what_was_tried() -> None:
    fake = FakeLab({"socat": (1, "E connect(): Connection refused\n"), "getent": (0, "10.96.0.7 STREAM web\n")})
    with pytest.raises(AssertionError) as failure:
        fake.assert_reachable("default/client", "web", port=80, within=0)
    message = str(failure.value)
    assert "expected default/client to reach web:80/tcp in lab t-000000" in message
    assert "tried in default/client: socat -T2 -u OPEN:/dev/null TCP:web:80,connect-timeout=2" in message
    assert "exit code 1: E connect(): Connection refused" in message
    assert "web resolves in default/client to: 10.96.0.7" in message


def test_ping_of_a_cluster_ip_hints_at_ports() -> None:
    with pytest.raises(AssertionError, match="a ClusterIP answers only on its service ports"):
        FakeLab({}).assert_reachable("default/client", "10.96.0.7", within=0)


def test_unreachable_failure_and_unresolvable_names() -> None:
    with pytest.raises(AssertionError, match=r"expected h1 to not reach 10.0.0.2 \(ping\)"):
        FakeLab({"ping": (0, "1 packets transmitted, 1 received")}).assert_unreachable("h1", "10.0.0.2")
    with pytest.raises(AssertionError, match="the name does not resolve in h1"):
        FakeLab({}).assert_unreachable("h1", "nosuchhost", port=80)
    FakeLab({}).assert_unreachable("h1", "10.0.0.9")


def test_resolve_dedupes_getent_lines() -> None:
    fake = FakeLab({"getent": (0, "10.96.0.7 STREAM web.default.svc.cluster.local\n10.96.0.7 DGRAM\n"
                                  "10.96.0.7 RAW\nfd00::7 STREAM\n")})
    assert fake.resolve("default/client", "web") == ["10.96.0.7", "fd00::7"]
    assert fake.ran == [("getent", "ahosts", "web")]


@pytest.mark.parametrize("bad", ["10.0.0.1,fork", "web:80", "a b", "$(reboot)", "-x", ""])
def test_probe_refuses_addresses_that_are_not_hosts(bad: str) -> None:
    with pytest.raises(ValueError, match="neither an IP address nor a DNS name"):
        FakeLab({}).probe("h1", bad, 80)


def test_lookups_name_what_exists() -> None:
    fake = FakeLab({})
    assert fake.service("default/web")["cluster_ip"] == "10.96.0.7"
    with pytest.raises(KeyError, match=r"no service 'default/nope' \(services: default/web\)"):
        fake.service("default/nope")
    with pytest.raises(KeyError, match=r"no pod 'a/b' \(pods: none\)"):
        fake.pod_ip("a/b")


def test_module_documents_itself() -> None:
    assert pytest_plugin.__doc__ and "labkit_fixture" in pytest_plugin.__doc__
