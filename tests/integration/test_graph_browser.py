"""`labkit graph --format html` in a real browser: the page of every shipped topology (and of
running labs, with their pods and services) is loaded in headless Chromium, which must lay it
out with an element per node and per link, without fetching anything.

Chromium is required (Debian: `apt-get install -y chromium`); without it these tests fail.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from labkit import lab
from labkit.graph import render_graph
from labkit.lab import graph_summary
from tests.unit.test_graph import (
    ROOT,
    TOPOLOGIES,
    chain_topology,
    external_references,
    html_elements,
    link_keys,
    node_names,
    odd_summary,
    status_sample,
    topology_summary,
)

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("Chromium is not installed, and the graph page must be checked in a real browser: "
                "install it with `apt-get install -y chromium` (Debian/Ubuntu)", pytrace=False)


def run_chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / "chromium-profile"
    profile.mkdir(exist_ok=True)
    argv = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--no-default-browser-check", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--disable-extensions", "--hide-scrollbars", "--mute-audio",
            # nothing may leave the machine even if the page asked (it must not: checked statically)
            "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9",
            f"--user-data-dir={profile}", "--virtual-time-budget=5000", *args]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"chromium exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    return proc


def rendered_dom(page: str, tmp_path: Path, name: str = "graph") -> str:
    path = tmp_path / f"{name}.html"
    path.write_text(page, encoding="utf-8")
    return run_chromium(tmp_path, "--dump-dom", path.as_uri()).stdout


def assert_drawn(summary: dict, tmp_path: Path) -> list[tuple[str, dict]]:
    """Render, check the file statically, load it in Chromium, check what the browser built."""
    page = render_graph(summary, "html")
    assert external_references(page) == [], "the page references something outside itself"
    dom = rendered_dom(page, tmp_path)
    elements = html_elements(dom)
    body = next(attrs for tag, attrs in elements if tag == "body")
    # the page's script measured the drawing after layout: the browser really rendered the SVG
    size = re.fullmatch(r"(\d+)x(\d+)", body.get("data-rendered") or "")
    assert size, f"the page did not finish rendering (body: {body})"
    assert int(size.group(1)) > 50 and int(size.group(2)) > 20
    svgs = [attrs for tag, attrs in elements if tag == "svg"]
    assert svgs and svgs[0].get("id") == "graph"
    nodes = [attrs["data-node"] for tag, attrs in elements if "data-node" in attrs and tag == "g"]
    links = [attrs["data-link"] for tag, attrs in elements if "data-link" in attrs and tag == "g"]
    assert sorted(nodes) == sorted(node_names(summary))
    assert sorted(links) == sorted(link_keys(summary))
    return elements


@pytest.mark.parametrize("topology", [p.name for p in TOPOLOGIES])
def test_shipped_topology_page_renders(topology, tmp_path):
    assert_drawn(topology_summary(ROOT / "topologies" / topology), tmp_path)


def test_chain_of_50_renders(tmp_path):
    summary = topology_summary(chain_topology(50, tmp_path))
    assert_drawn(summary, tmp_path)


def test_status_with_pods_and_services_renders(tmp_path):
    summary = status_sample()
    elements = assert_drawn(summary, tmp_path)
    pods = [a["data-pod"] for tag, a in elements if tag == "g" and "data-pod" in a]
    assert sorted(pods) == sorted(f"{p['namespace']}/{p['name']}" for p in summary["pods"])
    services = [a["data-service"] for _, a in elements if "data-service" in a]
    assert sorted(services) == sorted(f"{s['namespace']}/{s['name']}" for s in summary["services"])


def test_odd_names_render(tmp_path):
    summary = odd_summary()
    elements = assert_drawn(summary, tmp_path)
    # the name that looks like markup stayed text: no element came of it
    assert [tag for tag, _ in elements].count("script") == 1


# ---------------------------------------------------------------- screenshots


def png_pixels(path: Path) -> tuple[int, int, bytes]:
    """Width, height and raw (still filtered) scanlines of a PNG, stdlib only."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", chunk[:8])
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    return width, height, zlib.decompress(idat)


@pytest.mark.parametrize("which", ["routed-triangle.yaml", "status"])
def test_screenshot_is_not_blank(which, tmp_path):
    summary = status_sample() if which == "status" else topology_summary(ROOT / "topologies" / which)
    page = tmp_path / "graph.html"
    page.write_text(render_graph(summary, "html"), encoding="utf-8")
    shot = tmp_path / "graph.png"
    run_chromium(tmp_path, "--window-size=1400,900", f"--screenshot={shot}", page.as_uri())
    width, height, raw = png_pixels(shot)
    assert (width, height) == (1400, 900)
    # a blank page compresses to almost nothing but filter bytes and zeros; a drawing does not
    assert sum(1 for b in raw if b) > len(raw) * 0.01, "the screenshot is (almost) blank"


# ---------------------------------------------------------------- running labs


def test_running_lab_status_renders(labkit_lab_factory, tmp_path):
    topology = ROOT / "topologies" / "routed-triangle.yaml"
    running = labkit_lab_factory(topology)
    # what `labkit graph TOPO --name LAB` draws while the lab is up: its status
    summary = graph_summary(topology, name=running.name)
    assert summary["phase"] and summary["name"] == running.name
    assert all(node["running"] for node in summary["nodes"])
    assert_drawn(summary, tmp_path)


def test_running_cluster_status_renders(kube_lab, tmp_path):
    summary = lab.status(kube_lab.name)[0]
    elements = assert_drawn(summary, tmp_path)
    pods = [a["data-pod"] for tag, a in elements if tag == "g" and "data-pod" in a]
    assert sorted(pods) == sorted(f"{p['namespace']}/{p['name']}" for p in summary["pods"])
    assert summary["pods"], "a running cluster has pods"
    services = [a["data-service"] for _, a in elements if "data-service" in a]
    assert sorted(services) == sorted(f"{s['namespace']}/{s['name']}" for s in summary["services"])
