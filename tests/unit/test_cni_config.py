"""labkit-cni configuration validation and CNI_* environment checks (no root needed)."""

from __future__ import annotations

import json

import pytest

from labkit.cni import config as cfg
from labkit.cni.errors import CNIError
from labkit.cni.lite import Addr as IPv4Address
from labkit.cni.lite import Net as IPv4Network
from labkit.cni.main import run

BASE = {"cniVersion": "1.1.0", "name": "net1", "type": "labkit-cni",
        "ipam": {"subnet": "10.244.3.0/24"}}


def conf(**over):
    c = json.loads(json.dumps(BASE))
    ipam = over.pop("ipam", None)
    c.update(over)
    if ipam:
        c["ipam"].update(ipam)
    return c


def code_of(raw, **kw) -> int:
    with pytest.raises(CNIError) as ei:
        cfg.parse(raw, **kw)
    assert ei.value.msg
    return ei.value.code


def test_defaults():
    c = cfg.parse(conf())
    assert c.cni_version == "1.1.0" and c.name == "net1" and c.mtu is None
    assert c.pool.subnet == IPv4Network("10.244.3.0/24")
    assert c.pool.gateway == IPv4Address("10.244.3.1")
    assert (c.pool.start, c.pool.end) == (IPv4Address("10.244.3.1"), IPv4Address("10.244.3.254"))
    assert c.data_dir == "/var/lib/cni/networks/net1"
    assert c.routes == [] and c.valid_attachments is None and c.lock_timeout == 30


def test_full_config():
    c = cfg.parse(conf(mtu=1450, dns={"nameservers": ["10.96.0.10"]},
                       ipam={"gateway": "10.244.3.254", "rangeStart": "10.244.3.10",
                             "rangeEnd": "10.244.3.20", "dataDir": "/tmp/x",
                             "routes": [{"dst": "10.96.0.0/12"}, {"dst": "1.2.3.0/24",
                                                                  "gw": "10.244.3.254"}]}))
    assert c.mtu == 1450 and c.data_dir == "/tmp/x"
    assert c.pool.gateway == IPv4Address("10.244.3.254")
    assert [str(r.dst) for r in c.routes] == ["10.96.0.0/12", "1.2.3.0/24"]
    assert c.routes[1].gw == IPv4Address("10.244.3.254") and c.routes[0].gw is None


def test_host_local_ranges_form():
    raw = conf()
    raw["ipam"] = {"type": "host-local", "ranges": [[{"subnet": "10.9.0.0/24",
                                                       "gateway": "10.9.0.254"}]]}
    c = cfg.parse(raw)
    assert c.pool.subnet == IPv4Network("10.9.0.0/24")
    assert c.pool.gateway == IPv4Address("10.9.0.254")


@pytest.mark.parametrize(("raw", "code"), [
    (conf(cniVersion="0.2.0"), 1),
    (conf(cniVersion="2.0.0"), 1),
    ({k: v for k, v in BASE.items() if k != "cniVersion"}, 7),
    (conf(cniVersion=1), 7),
    (conf(name=""), 7),
    (conf(name="-x"), 7),
    (conf(name=None), 7),
    (conf(mode="macvlan"), 2),
    (conf(mode="bridge", bridge=""), 7),
    (conf(mode="bridge", bridge="br/0"), 7),
    (conf(mode="bridge", hairpinMode="yes"), 7),
    (conf(ipam={"type": "dhcp"}), 2),
    (conf(mtu=True), 7),
    (conf(mtu=70000), 7),
    (conf(ipam={"subnet": "banana"}), 7),
    (conf(ipam={"subnet": 10}), 7),
    (conf(ipam={"subnet": "10.0.0.0/31"}), 7),
    (conf(ipam={"gateway": "10.0.0.1"}), 7),
    (conf(ipam={"rangeStart": "10.244.3.50", "rangeEnd": "10.244.3.40"}), 7),
    (conf(ipam={"rangeEnd": "10.244.4.1"}), 7),
    (conf(ipam={"dataDir": "x/y"}), 7),
    (conf(ipam={"routes": {"dst": "0.0.0.0/0"}}), 7),
    (conf(ipam={"routes": [{"dst": "nope"}]}), 7),
    (conf(dns=["1.1.1.1"]), 7),
    (conf(runtimeConfig=[]), 7),
    (conf(**{"cni.dev/valid-attachments": {"containerID": "a"}}), 7),
    (conf(**{"cni.dev/valid-attachments": [{"containerID": "a"}]}), 7),
    ([], 7),
])
def test_invalid(raw, code):
    assert code_of(raw) == code


def test_modes():
    assert (cfg.parse(conf()).mode, cfg.parse(conf(mode="routed")).mode) == ("ptp", "ptp")  # routed: ptp's first name
    c = cfg.parse(conf(mode="bridge"))
    assert (c.mode, c.bridge, c.hairpin) == ("bridge", "cni0", True)
    c = cfg.parse(conf(mode="bridge", bridge="kbr0", hairpinMode=False))
    assert (c.bridge, c.hairpin) == ("kbr0", False)


def test_subnet_only_needed_for_add():
    raw = conf()
    del raw["ipam"]["subnet"]
    assert code_of(raw) == 7
    c = cfg.parse(raw, need_ipam=False)
    assert c.pool is None


def test_valid_attachments():
    c = cfg.parse(conf(**{"cni.dev/valid-attachments": [{"containerID": "a", "ifname": "eth0"},
                                                        {"containerID": "b", "ifname": "net1"}]}))
    assert c.valid_attachments == [("a", "eth0"), ("b", "net1")]


@pytest.mark.parametrize("good", ["a", "0123abc", "k8s_pod.v1-x", "a" * 64])
def test_container_id_ok(good):
    assert cfg.check_container_id(good) == good


@pytest.mark.parametrize("bad", ["", None, "-a", "a b", "a/b", "é"])
def test_container_id_bad(bad):
    with pytest.raises(CNIError) as ei:
        cfg.check_container_id(bad)
    assert ei.value.code == 4


@pytest.mark.parametrize("bad", ["", ".", "..", "a" * 16, "eth 0", "eth/0", "eth:0"])
def test_ifname_bad(bad):
    with pytest.raises(CNIError) as ei:
        cfg.check_ifname(bad)
    assert ei.value.code == 4


def test_cni_args():
    assert cfg.parse_cni_args("IgnoreUnknown=1;K8S_POD_NAME=web;;") == {
        "IgnoreUnknown": "1", "K8S_POD_NAME": "web"}
    assert cfg.parse_cni_args(None) == {}
    for bad in ("novalue", "=x"):
        with pytest.raises(CNIError):
            cfg.parse_cni_args(bad)


# ---------------------------------------------------------------------------
# the executable's front door, as a function


def test_run_version_without_stdin():
    rc, out = run({"CNI_COMMAND": "VERSION"}, b"")
    assert rc == 0 and out == {"cniVersion": "1.1.0", "supportedVersions": cfg.SUPPORTED_VERSIONS}


@pytest.mark.parametrize(("env", "stdin", "code"), [
    ({}, b"{}", 4),
    ({"CNI_COMMAND": "add"}, b"{}", 4),
    ({"CNI_COMMAND": "ADD", "CNI_NETNS": "/x", "CNI_IFNAME": "eth0", "CNI_PATH": "/p"},
     json.dumps(BASE).encode(), 4),
    ({"CNI_COMMAND": "STATUS"}, b"{not json", 6),
    ({"CNI_COMMAND": "STATUS"}, b"", 6),
    ({"CNI_COMMAND": "STATUS"}, json.dumps(conf(cniVersion="0.0.1")).encode(), 1),
])
def test_run_errors(env, stdin, code):
    rc, out = run(env, stdin)
    assert rc == 1
    assert set(out) == {"cniVersion", "code", "msg", "details"} and out["code"] == code


def test_run_error_echoes_config_version():
    rc, out = run({"CNI_COMMAND": "STATUS"}, json.dumps(conf(cniVersion="1.0.0", mtu=-1)).encode())
    assert (rc, out["code"], out["cniVersion"]) == (1, 7, "1.0.0")


def test_run_status_ok(tmp_path):
    rc, out = run({"CNI_COMMAND": "STATUS"},
                  json.dumps(conf(ipam={"dataDir": str(tmp_path / "d")})).encode())
    assert (rc, out) == (0, None)


# ---------------------------------------------------------------------------
# IPv6 and dual-stack: host-local's range sets, one per family

DUAL = [[{"subnet": "10.244.3.0/24"}], [{"subnet": "fd00:10:244:3::/64"}]]


def ranges(*sets, **ipam):
    raw = conf()
    raw["ipam"] = {"ranges": list(sets), **ipam}
    return raw


def test_dual_stack_ranges():
    c = cfg.parse(ranges(*DUAL))
    assert [(str(p.subnet), str(p.gateway), p.version) for p in c.pools] == [
        ("10.244.3.0/24", "10.244.3.1", 4), ("fd00:10:244:3::/64", "fd00:10:244:3::1", 6)]
    assert c.pool is c.pools[0]  # the old single-pool API: the first range set
    assert (str(c.pools[1].start), str(c.pools[1].end)) == (
        "fd00:10:244:3::1", "fd00:10:244:3:ffff:ffff:ffff:ffff")


def test_v6_first_and_v6_only():
    c = cfg.parse(ranges(DUAL[1], DUAL[0]))
    assert [p.version for p in c.pools] == [6, 4]
    c = cfg.parse(conf(ipam={"subnet": "fd00:10:244:3::/64", "gateway": "fd00:10:244:3::fe"}))
    assert [(p.version, str(p.gateway)) for p in c.pools] == [(6, "fd00:10:244:3::fe")]


def test_subnet_and_ranges_together_subnet_first():
    """host-local prepends the single-range form to `ranges`."""
    c = cfg.parse(conf(ipam={"ranges": [DUAL[1]]}))
    assert [str(p.subnet) for p in c.pools] == ["10.244.3.0/24", "fd00:10:244:3::/64"]


def test_routes_per_family():
    c = cfg.parse(ranges(*DUAL, routes=[{"dst": "10.96.0.0/16"}, {"dst": "fd00:10:96::/112"},
                                        {"dst": "fd00:1::/64", "gw": "fd00:10:244:3::fe"}]))
    assert [(str(r.dst), r.version, r.gw and str(r.gw)) for r in c.routes] == [
        ("10.96.0.0/16", 4, None), ("fd00:10:96::/112", 6, None), ("fd00:1::/64", 6, "fd00:10:244:3::fe")]


def v6_error(raw) -> tuple[int, str]:
    with pytest.raises(CNIError) as ei:
        cfg.parse(raw)
    return ei.value.code, ei.value.msg


@pytest.mark.parametrize(("raw", "code", "says"), [
    (ranges([{"subnet": "fd00:10:244:3::zz/64"}]), 7,
     "ipam.ranges[0][0].subnet: 'fd00:10:244:3::zz/64' is not an IPv6 CIDR"),
    (ranges([{"subnet": "fd00::/129"}]), 7, "is not an IPv6 CIDR"),
    (ranges([{"subnet": "fd00::/127"}]), 7, "ipam.ranges[0][0].subnet fd00::/127 is too small"),
    (ranges(DUAL[0], [{"subnet": "fd00::/64", "gateway": "10.244.3.1"}]), 7,
     "ipam.ranges[1][0].gateway 10.244.3.1 is an IPv4 address in IPv6 subnet fd00::/64"),
    (ranges(DUAL[0], [{"subnet": "fd00::/64", "rangeStart": "fd01::2"}]), 7,
     "ipam.ranges[1][0].rangeStart fd01::2 is outside subnet fd00::/64"),
    (ranges(DUAL[0], [{"subnet": "fd00::/64", "rangeStart": "fd00::9", "rangeEnd": "fd00::5"}]), 7,
     "ipam.ranges[1][0].rangeStart fd00::9 is after ipam.ranges[1][0].rangeEnd fd00::5"),
    (ranges(DUAL[0], [{"subnet": "10.9.0.0/24"}]), 7, "is a second IPv4 range set (after 10.244.3.0/24)"),
    (ranges(DUAL[1], [{"subnet": "fd00:9::/64"}]), 7, "is a second IPv6 range set"),
    (ranges(DUAL[0], [{"subnet": "fd00::/64"}, {"subnet": "fd01::/64"}]), 2, "ipam.ranges[1] has 2 ranges"),
    (ranges(DUAL[0], []), 7, "ipam.ranges[1] must be a non-empty list"),
    (ranges(DUAL[0], [{"gateway": "fd00::1"}]), 7, "ipam.ranges[1][0].subnet is required"),
    ({**conf(), "ipam": {"ranges": {"subnet": "fd00::/64"}}}, 7, "ipam.ranges must be a list of range sets"),
    (ranges(DUAL[0], routes=[{"dst": "fd00:10:96::/112"}]), 7,
     "ipam.routes[0].dst fd00:10:96::/112 is IPv6, and the pod gets no IPv6 address"),
    (ranges(*DUAL, routes=[{"dst": "fd00:10:96::/112", "gw": "10.244.3.1"}]), 7,
     "ipam.routes[0].gw 10.244.3.1 is not of dst fd00:10:96::/112's family (IPv6)"),
])
def test_v6_invalid(raw, code, says):
    got_code, msg = v6_error(raw)
    assert got_code == code and says in msg, msg


def test_status_of_a_dual_stack_conf(tmp_path):
    raw = ranges([{"subnet": "10.244.3.0/24"}], [{"subnet": "fd00::/126"}], dataDir=str(tmp_path / "d"))
    assert run({"CNI_COMMAND": "STATUS"}, json.dumps(raw).encode()) == (0, None)
    for name in ("fd00::2", "fd00::3"):  # the /126's two addresses are leased: an ADD would fail
        (tmp_path / "d" / name).write_bytes(b"c\r\neth0")
    rc, out = run({"CNI_COMMAND": "STATUS"}, json.dumps(raw).encode())
    assert (rc, out["code"]) == (1, 50) and "2 of 2 addresses in fd00::/126" in out["details"]
