"""`labkit validate`: in-process through labkit.cli.main, and once through the console script."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from labkit import cli

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "topologies").glob("*.yaml"))


def _validate(capsys: pytest.CaptureFixture[str], path: str | Path) -> tuple[int, str, str]:
    code = cli.main(["validate", str(path)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_topologies_are_ok(capsys: pytest.CaptureFixture[str], path: Path) -> None:
    code, out, err = _validate(capsys, path)
    assert (code, err) == (0, "")
    assert out.startswith(f"{path}: ok — lab ")
    assert out.splitlines()[0].endswith(" links")  # then one line per container that runs a stand-in


def test_ok_line_counts_nodes_and_links(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(
        "name: counts\ntopology:\n  nodes:\n    h1: {kind: linux}\n    h2: {kind: linux}\n"
        "    h3: {kind: linux}\n  links:\n    - endpoints: [h1:eth1, h2:eth1]\n"
    )
    assert _validate(capsys, path) == (0, f"{path}: ok — lab counts: 3 nodes, 1 links\n", "")


def test_containerlab_file_is_ok(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _validate(capsys, ROOT / "tests/topologies/good/srl-free.clab.yml")
    assert code == 0
    assert "lab srl-free: 5 nodes, 4 links" in out


def test_validate_needs_no_root(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    code, _, err = _validate(capsys, SHIPPED[0])
    assert (code, err) == (0, "")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "absent.yaml", "no such file"),
        (lambda d: d, "is a directory; give the path of a YAML file"),
    ],
    ids=["missing", "directory"],
)
def test_unreadable_path(capsys: pytest.CaptureFixture[str], tmp_path: Path, make, message: str) -> None:
    path = make(tmp_path)
    assert _validate(capsys, path) == (2, "", f"error: {path}: {message}\n")


def test_binary_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "blob.yaml"
    path.write_bytes(b"name: x\n\xff\xfe\x00")
    code, out, err = _validate(capsys, path)
    assert (code, out) == (2, "")
    assert err == f"error: {path}: is not UTF-8 text (byte 0xff at offset 8); expected a YAML file\n"


def test_several_problems_one_per_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(
        "name: many\ntopology:\n  nodes:\n    h1: {kind: router}\n    h2: {kind: linux}\n"
        "  links:\n    - endpoints: [h1:eth1, h9:eth1]\n"
    )
    code, out, err = _validate(capsys, path)
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        f"error: {path}:4: topology.nodes.h1.kind: unknown kind 'router' (node h1); "
        "labkit runs: linux, bridge, k8s-node, docker-host",
        f"{path}:7: topology.links[0].endpoints[1]: link to unknown node 'h9'; nodes: h1, h2",
    ]


def test_the_message_names_the_path_as_given(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "t.yaml").write_text("name: Bad/lab\ntopology:\n  nodes:\n    h1: {kind: linux}\n")
    monkeypatch.chdir(tmp_path)
    code, _, err = _validate(capsys, "sub/t.yaml")
    assert code == 2
    assert err.startswith("error: sub/t.yaml:1: name: 'Bad/lab' is not a lab name")


def test_missing_argument_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["validate"])
    assert info.value.code == 2
    assert "usage: labkit validate" in capsys.readouterr().err


def test_console_script(tmp_path: Path) -> None:
    script = shutil.which("labkit", path=str(Path(sys.executable).parent))
    assert script, "the `labkit` console script is not installed: pip install -e ."
    bad = tmp_path / "t.yaml"
    bad.write_text("name: x\ntopology:\n  nodes: {}\n")
    result = subprocess.run([script, "validate", str(bad)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr == (f"error: {bad}:3: topology.nodes: no nodes defined: "
                             "give at least one, e.g. 'h1: {kind: linux}'\n")
    assert "Traceback" not in result.stderr


def _run_validate(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "labkit.cli", "validate", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def test_a_fifo_is_refused_at_once_not_waited_on(tmp_path: Path) -> None:
    fifo = tmp_path / "topo.yaml"
    os.mkfifo(fifo)
    result = _run_validate(str(fifo))  # before the fix: blocks forever in open(), waiting for a writer
    assert (result.returncode, result.stderr) == (
        2, f"error: {fifo}: is a named pipe (FIFO), not a regular file; give the path of a YAML file\n")


def test_a_device_is_refused_not_read(capsys: pytest.CaptureFixture[str]) -> None:
    assert _validate(capsys, "/dev/zero") == (
        2, "", "error: /dev/zero: is a device, not a regular file; give the path of a YAML file\n")


def test_a_file_over_the_size_cap_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("name: big\n" + "# padding\n" * (5 * 1024 * 1024 // 10))
    code, _, err = _validate(capsys, path)
    assert code == 2
    assert err.startswith(f"error: {path}: is {path.stat().st_size} bytes; files larger than 4194304 bytes")


def test_a_workloads_fifo_is_refused_where_the_topology_names_it(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "apps.yaml")
    topo = tmp_path / "t.yaml"
    topo.write_text("name: fifo\ncluster: {}\ntopology:\n  nodes: {cp: {kind: k8s-node}}\n"
                    "workloads:\n  - apps.yaml\n")
    result = _run_validate(str(topo))
    assert (result.returncode, result.stderr) == (
        2, f"error: {topo}:6: workloads[0]: apps.yaml: is a named pipe (FIFO), not a regular file; "
           "give the path of a YAML file\n")


# Everything `labkit validate` needs lives in the plan layer: it builds nothing, so it imports nothing that builds.
BUILDING_PACKAGES = ("labkit.runtime", "labkit.net", "labkit.cni", "labkit.proxy", "labkit.dns", "labkit.policy")


def test_validate_of_a_cluster_imports_only_the_plan_layer() -> None:
    script = (
        "import sys\n"
        "from labkit import cli\n"
        "code = cli.main(['validate', 'topologies/kube-3node.yaml'])\n"
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('labkit'))))\n"
        "sys.exit(code)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    loaded = result.stdout.splitlines()[-1].split()
    assert "labkit.k8s.allocate" in loaded  # the cluster's workloads were checked
    assert [m for m in loaded if any(m == p or m.startswith(f"{p}.") for p in BUILDING_PACKAGES)] == []
    assert not {"labkit.lab", "labkit.phases", "labkit.verify"} & set(loaded)  # nor what sits above the plan
