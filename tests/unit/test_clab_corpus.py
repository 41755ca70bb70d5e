"""The containerlab corpus (tests/topologies/clab/): every file's exact `labkit validate` outcome.

Each `<case>.clab.yml` has a `<case>.txt` beside it holding what validate prints, run from the repo
root with the relative path: `... ok — ...` and its notes for a file that loads, `error: ...` (exit
2) for one that does not. Files whose first line says `# runs: netns docker` are also brought up
under those runtimes by tests/integration/test_clab_corpus.py. Regenerate deliberately with
LABKIT_REGOLD=1, then read `git diff tests/topologies/clab/` line by line.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from labkit.cli import main

ROOT = Path(__file__).resolve().parents[2]
CORPUS = Path("tests/topologies/clab")
CASES = sorted(p.name.removesuffix(".clab.yml") for p in (ROOT / CORPUS).glob("*.clab.yml"))
REGOLD = os.environ.get("LABKIT_REGOLD") == "1"
# the variables the corpus reads: unset, so their defaults (${VAR:=default}) are what is checked
CORPUS_VARS = ("ROUTER_IMAGE", "HOST_IMAGE", "USER_NAME", "CLAB_HOST_PREFIX", "CLAB_MACVLAN_PARENT")


def runtimes_of(path: Path) -> list[str]:
    """The runtimes a corpus file runs under in CI, from its first line (`# runs: netns docker`)."""
    first = path.read_text(encoding="utf-8").splitlines()[0]
    return first.removeprefix("# runs:").split() if first.startswith("# runs:") else []


def test_corpus_covers_what_it_promises() -> None:
    assert {"all-linux", "every-key", "links", "names", "unsupported"} <= set(CASES)
    assert all((ROOT / CORPUS / f"{case}.txt").exists() or REGOLD for case in CASES)


@pytest.mark.parametrize("case", CASES)
def test_validate_outcome(case: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    for var in CORPUS_VARS:
        monkeypatch.delenv(var, raising=False)
    code = main(["validate", str(CORPUS / f"{case}.clab.yml")])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    golden = ROOT / CORPUS / f"{case}.txt"
    if REGOLD:
        golden.write_text(out + err, encoding="utf-8")
    assert out + err == golden.read_text(encoding="utf-8")
    assert code == (2 if err else 0)
    if runtimes_of(ROOT / CORPUS / f"{case}.clab.yml"):
        assert code == 0, "a file the CI runs must load"


def test_every_node_key_of_the_schema_is_in_the_every_key_file() -> None:
    """every-key.clab.yml sets every key of containerlab's node schema that labkit accepts."""
    import yaml

    from labkit.topology.schema import NodeSettings

    data = yaml.safe_load((ROOT / CORPUS / "every-key.clab.yml").read_text())
    topo = data["topology"]
    given = set()
    for level in [topo["defaults"], *topo["kinds"].values(), *topo["groups"].values(), *topo["nodes"].values()]:
        given |= set(level)
    labkit_own = {"routes", "sysctls", "exec"}  # labkit's keys beside containerlab's, covered elsewhere
    wanted = {f.alias or n for n, f in NodeSettings.model_fields.items()} - labkit_own
    assert wanted - given == set()
