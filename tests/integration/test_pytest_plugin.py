"""The pytest plugin on real labs: fixtures that always tear down, and the helpers tests call."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from labkit import lab, state
from labkit.pytest_plugin import ExecFailed, RunningLab, lab_processes, labkit_fixture, surviving

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[2]
TWO_HOSTS = ROOT / "topologies" / "two-hosts.yaml"


def namespaces_of(prefix: str) -> list[str]:
    """Entries of /run/netns belonging to labs whose names start with `prefix`."""
    return [n for n in os.listdir("/run/netns") if n.startswith(f"lk-{prefix}")] \
        if os.path.isdir("/run/netns") else []


@pytest.fixture
def inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A pytester whose runs load the plugin by -p alone, with or without the entry point installed;
    its tests write the names of their labs to names.txt."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makeconftest(f"""
        from pathlib import Path
        TWO_HOSTS = {str(TWO_HOSTS)!r}

        def record(name):
            with open(Path(__file__).parent / "names.txt", "a") as fh:
                fh.write(name + "\\n")
    """)
    return pytester


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("-p", "labkit.pytest_plugin", *args)


def names(pytester: pytest.Pytester) -> list[str]:
    path = pytester.path / "names.txt"
    return path.read_text().split() if path.exists() else []


def assert_gone(name: str) -> None:
    assert not [n for n in os.listdir("/run/netns") if n.startswith(f"lk-{name}.")]
    assert lab.leftovers(name) == []


# ---------------------------------------------------------------- the fixtures, from outside


def test_passing_and_failing_tests_both_tear_their_labs_down(inner: pytest.Pytester) -> None:
    inner.makepyfile("""
        import os
        import pytest
        from conftest import TWO_HOSTS, record

        pytestmark = pytest.mark.labkit_topology(TWO_HOSTS)

        def test_passes(labkit_lab):
            record(labkit_lab.name)
            assert os.path.exists(f"/run/netns/lk-{labkit_lab.name}.h1")
            labkit_lab.assert_reachable("h1", "10.0.0.2")

        def test_fails(labkit_lab):
            record(labkit_lab.name)
            assert os.path.exists(f"/run/netns/lk-{labkit_lab.name}.h2")
            labkit_lab.assert_reachable("h1", "10.0.0.99", within=0, timeout=1)

        def test_factory_labs(labkit_lab_factory):
            a, b = labkit_lab_factory(TWO_HOSTS), labkit_lab_factory(TWO_HOSTS)
            record(a.name)
            record(b.name)
            b.assert_reachable("h2", "10.0.0.1")
    """)
    result = run(inner)
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*expected h1 to reach 10.0.0.99 (ping) in lab two-h-*",
                                 "*tried in h1: ping -c1 -W1 10.0.0.99*"])
    labs = names(inner)
    assert len(set(labs)) == 4 and all(n.startswith("two-h-") and len(n) <= 12 for n in labs)
    for name in labs:
        assert_gone(name)


def test_interrupted_run_still_takes_its_lab_down(inner: pytest.Pytester) -> None:
    inner.makepyfile("""
        from conftest import TWO_HOSTS, record
        from labkit.pytest_plugin import labkit_fixture

        net = labkit_fixture(TWO_HOSTS, scope="session")

        def test_interrupted(net):
            record(net.name)
            raise KeyboardInterrupt
    """)
    # in a subprocess: in-process, pytester hands the interrupt on to this run
    result = inner.runpytest_subprocess("-p", "labkit.pytest_plugin")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    assert_gone(names(inner)[0])


def test_module_lab_is_brought_up_once_for_its_tests(inner: pytest.Pytester) -> None:
    inner.makepyfile(test_shared="""
        import os
        from conftest import TWO_HOSTS, record
        from labkit.pytest_plugin import labkit_fixture

        two = labkit_fixture(TWO_HOSTS, scope="module")

        def test_one(two):
            record(two.name)
            two.exec("h1", "ip", "link", "set", "eth1", "mtu", "1400", check=True)

        def test_two(two):
            record(two.name)
            assert "mtu 1400" in two.exec("h1", "ip", "link", "show", "eth1").stdout
    """)
    result = run(inner)
    result.assert_outcomes(passed=2)
    first, second = names(inner)
    assert first == second
    assert_gone(first)


def test_a_lab_left_behind_fails_the_test(inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    from labkit import lab

    real_down = lab.down
    monkeypatch.setattr(lab, "down", lambda name, runtimes=None: False)  # a down that forgets everything
    inner.makepyfile("""
        import pytest
        from conftest import TWO_HOSTS, record

        @pytest.mark.labkit_topology(TWO_HOSTS)
        def test_passes(labkit_lab):
            record(labkit_lab.name)
    """)
    try:
        result = run(inner)
    finally:
        for name in names(inner):
            real_down(name)
    result.assert_outcomes(passed=1, errors=1)
    (name,) = names(inner)
    result.stdout.fnmatch_lines([f"*lab {name} (*two-hosts.yaml) left things behind after down: "
                                 f"netns lk-{name}.h1, netns lk-{name}.h2, *"])
    assert_gone(name)


def test_setup_failing_halfway_leaves_nothing(inner: pytest.Pytester) -> None:
    inner.makefile(".yaml", broken="""
        name: pfail
        topology:
          nodes:
            h1: {kind: linux, exec: ["false"]}
            h2: {kind: linux}
          links:
            - endpoints: ["h1:eth1", "h2:eth1"]
    """)
    inner.makepyfile("""
        import pytest

        @pytest.mark.labkit_topology("broken.yaml")
        def test_never_runs(labkit_lab):
            raise AssertionError("unreachable")
    """)
    result = run(inner)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*lab pfail-* from *broken.yaml did not come up: up failed at phase 'exec'*"])
    assert namespaces_of("pfail-") == []
    assert not [n for n in state.labs() if n.startswith("pfail-")]


def test_session_lab_declared_in_conftest_serves_two_modules(inner: pytest.Pytester) -> None:
    (inner.path / "conftest.py").write_text(
        (inner.path / "conftest.py").read_text()
        + "\nfrom labkit.pytest_plugin import labkit_fixture\n"
        + "net = labkit_fixture('" + os.path.relpath(TWO_HOSTS, inner.path) + "', scope='session')\n")
    test = """
        from conftest import record

        def test_it(net):
            record(net.name)
            assert net.resolve("h1", "h2") == ["10.0.0.2"]
    """
    inner.makepyfile(test_a=test, test_b=test)
    result = run(inner)
    result.assert_outcomes(passed=2)
    first, second = names(inner)
    assert first == second
    assert_gone(first)


# ---------------------------------------------------------------- the helpers, on real labs

two_hosts = labkit_fixture(TWO_HOSTS, scope="module")


def test_two_hosts_reachability(two_hosts: RunningLab) -> None:
    two_hosts.assert_reachable("h1", "10.0.0.2")
    two_hosts.assert_reachable("h2", "h1")
    two_hosts.assert_unreachable("h1", "10.0.0.3", timeout=1)
    two_hosts.assert_unreachable("h1", "10.0.0.2", port=80)  # nothing listens: refused at once


def test_two_hosts_exec(two_hosts: RunningLab) -> None:
    result = two_hosts.exec("h1", "ip", "-br", "addr", "show", "eth1")
    assert result.returncode == 0 and "10.0.0.1/24" in result.stdout
    assert two_hosts.exec("h1", "sleep", "5", timeout=0.2).returncode == 124
    with pytest.raises(ExecFailed, match=r"in h2 of lab two-h-\w+: ls /nonexistent exited 2"):
        two_hosts.exec("h2", "ls", "/nonexistent", check=True)


def test_the_processes_of_a_lab_are_known_and_their_survival_is_seen(two_hosts: RunningLab) -> None:
    """What the teardown checks after down: every process living in the lab's namespaces."""
    holder = subprocess.Popen(["nsenter", f"--net={two_hosts.netns_path('h2')}", "sh", "-c", "echo in; exec sleep 600"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "in"
        processes = lab_processes(two_hosts)
        assert holder.pid in processes
        assert [s for s in surviving(processes) if s.startswith(f"process {holder.pid} (")]
    finally:
        holder.kill()
        holder.wait()
    assert not [s for s in surviving(processes) if s.startswith(f"process {holder.pid} ")]


def test_a_cluster_labs_pods_and_servers_are_among_its_processes(kube_lab: RunningLab) -> None:
    processes = set(lab_processes(kube_lab))
    servers = {int(f.read_text().split()[0]) for f in Path(state.lab_dir(kube_lab.name)).glob("*/*.pid")}
    assert servers and servers <= processes  # the DNS and CNI servers labkit started
    holders = {p["pid"] for p in kube_lab.summary["pods"] if p["pid"]}  # the netns runtime's pod holders
    assert holders <= processes and (holders or kube_lab.runtime != "netns")


def test_kube_resolve_gives_the_cluster_ip(kube_lab: RunningLab) -> None:
    web = kube_lab.service("default/web")
    # getaddrinfo's answer: every ClusterIP of the Service (A and AAAA in a dual-stack lab), in RFC 6724's order
    assert sorted(kube_lab.resolve("default/client", "web")) == sorted(web["cluster_ips"])
    assert kube_lab.resolve("default/client", "no-such-service") == []


def test_kube_services_and_pods(kube_lab: RunningLab) -> None:
    kube_lab.assert_reachable("default/client", "web", port=80)
    kube_lab.assert_reachable("default/client", "web.default.svc.cluster.local", port=80)
    kube_lab.assert_unreachable("default/client", "nobody", port=80)  # no endpoints: rejected
    kube_lab.assert_reachable("default/client", kube_lab.pod_ip("team-a/probe"))
    kube_lab.assert_reachable("default/client", kube_lab.summary["dns"]["ip"], port=53, proto="udp")
    assert {p.split("/")[1].split("-")[0] for p in kube_lab.pods()} >= {"client", "web", "echo"}
