"""host-local style IPAM: allocation order, round robin, release, GC, locking (no root)."""

from __future__ import annotations

import fcntl
import multiprocessing
import os

import pytest

from labkit.cni.errors import CNIError
from labkit.cni.ipam import Pool, Store
from labkit.cni.lite import Addr as IPv4Address
from labkit.cni.lite import Addr6, Net
from labkit.cni.lite import Net as IPv4Network


def pool(cidr="10.1.0.0/29", **kw) -> Pool:
    return Pool.from_subnet(IPv4Network(cidr), **{k: IPv4Address(v) for k, v in kw.items()})


def test_pool_bounds_and_gateway_excluded():
    p = pool()
    assert (str(p.start), str(p.end), str(p.gateway)) == ("10.1.0.1", "10.1.0.6", "10.1.0.1")
    assert [str(ip) for ip in p.candidates(None)] == [f"10.1.0.{i}" for i in range(2, 7)]
    assert p.size() == 5


def test_round_robin_starts_after_last_reserved():
    p = pool()
    assert [str(ip) for ip in p.candidates(IPv4Address("10.1.0.4"))] == \
        ["10.1.0.5", "10.1.0.6", "10.1.0.2", "10.1.0.3", "10.1.0.4"]
    # a last-reserved outside the range starts from the beginning
    assert str(next(p.candidates(IPv4Address("192.0.2.1")))) == "10.1.0.2"


def test_range_start_end():
    p = Pool.from_subnet(IPv4Network("10.1.0.0/24"), None, IPv4Address("10.1.0.100"),
                         IPv4Address("10.1.0.102"))
    assert [str(i) for i in p.candidates(None)] == ["10.1.0.100", "10.1.0.101", "10.1.0.102"]
    assert p.size() == 3


def test_allocate_in_order_release_and_round_robin(tmp_path):
    st = Store(str(tmp_path / "net"))
    p = pool()
    with st:
        got = [str(st.allocate(p, f"c{i}", "eth0")) for i in range(3)]
    assert got == ["10.1.0.2", "10.1.0.3", "10.1.0.4"]
    assert open(tmp_path / "net" / "10.1.0.3", newline="").read() == "c1\r\neth0"
    assert (tmp_path / "net" / "last_reserved_ip.0").read_text() == "10.1.0.4"
    with st:
        assert st.release("c0", "eth0") == ["10.1.0.2"]
        assert st.release("c0", "eth0") == []
        # round robin: the freed .2 is not handed out next
        assert str(st.allocate(p, "c3", "eth0")) == "10.1.0.5"
        # the same attachment gets its own lease back
        assert str(st.allocate(p, "c3", "eth0")) == "10.1.0.5"
        assert str(st.allocate(p, "c3", "net1")) == "10.1.0.6"
        assert str(st.allocate(p, "c4", "eth0")) == "10.1.0.2"
        with pytest.raises(CNIError) as ei:
            st.allocate(p, "c5", "eth0")
    assert ei.value.code == 102 and "10.1.0.1-10.1.0.6" in ei.value.msg
    assert st.find("c3", "net1") == ["10.1.0.6"]


def test_gc(tmp_path):
    st = Store(str(tmp_path))
    p = pool("10.2.0.0/24")
    with st:
        for c in ("a", "b", "c"):
            st.allocate(p, c, "eth0")
        gone = st.gc({("b", "eth0")})
    assert sorted(g[1] for g in gone) == ["a", "c"]
    assert list(st.leases().values()) == [("b", "eth0")]


def test_store_ignores_foreign_files(tmp_path):
    (tmp_path / "README").write_text("x")
    (tmp_path / "10.0.0.bad").write_text("x")
    assert Store(str(tmp_path)).leases() == {}


def test_lock_timeout_is_try_again_later(tmp_path):
    st = Store(str(tmp_path), lock_timeout=0.05)
    with open(tmp_path / "lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        with pytest.raises(CNIError) as ei, st:
            pass
    assert ei.value.code == 11


def test_io_failure(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(CNIError) as ei, Store(str(tmp_path / "f" / "sub")):
        pass
    assert ei.value.code == 5


def _worker(args):
    d, i = args
    with Store(d) as st:
        return str(st.allocate(Pool.from_subnet(IPv4Network("10.3.0.0/24")), f"p{i}", "eth0"))


def test_parallel_processes_get_distinct_ips(tmp_path):
    with multiprocessing.get_context("fork").Pool(8) as mp:
        ips = mp.map(_worker, [(str(tmp_path), i) for i in range(40)])
    assert len(set(ips)) == 40
    assert len([n for n in os.listdir(tmp_path) if n[0].isdigit()]) == 40


def test_attachment_index(tmp_path):
    st = Store(str(tmp_path))
    p = pool("10.4.0.0/24")
    with st:
        ip = st.allocate(p, "a", "eth0")
    assert (tmp_path / "attachments" / "a:eth0").read_text() == str(ip)
    assert st.find("a", "eth0") == [str(ip)]
    # a stale index entry is ignored: the lease file is the truth
    (tmp_path / "attachments" / "a:eth0").write_text("10.4.0.99")
    assert st.find("a", "eth0") == [str(ip)]
    with st:
        ip2 = st.allocate(p, "a", "eth0")  # ADD does not scan: a fresh lease
        assert ip2 != ip
        assert st.release("a", "eth0") == [str(ip2)]  # DEL goes by the index
        assert st.release("a", "eth0") == [str(ip)]  # no index: DEL scans, like host-local
    assert not (tmp_path / "attachments" / "a:eth0").exists()
    # a lease written without an index (host-local, or a crash) is still released
    (tmp_path / "10.4.0.50").write_bytes(b"b\r\neth0")
    with st:
        assert st.release("b", "eth0") == ["10.4.0.50"]
        st.allocate(p, "c", "eth0")
        st.allocate(p, "d", "eth0")
        st.gc({("d", "eth0")})
    assert os.listdir(tmp_path / "attachments") == ["d:eth0"]


# ---------------------------------------------------------------------------
# IPv6 and dual-stack (host-local's range sets: one pool per family)

V4, V6 = "10.5.0.0/24", "fd00:5::/64"


def pool6(cidr="fd00:5::/126", **kw) -> Pool:
    return Pool.from_subnet(Net(cidr), **{k: Addr6(v) for k, v in kw.items()})


def test_v6_pool_bounds_as_host_local():
    p = pool6()  # fd00:5::0 is the subnet-router anycast address; ::1 the gateway; no broadcast in IPv6
    assert (str(p.start), str(p.end), str(p.gateway), p.version) == ("fd00:5::1", "fd00:5::3", "fd00:5::1", 6)
    assert [str(ip) for ip in p.candidates(None)] == ["fd00:5::2", "fd00:5::3"]
    assert p.size() == 2


def test_v6_64_is_never_walked():
    p = pool6(V6)
    assert p.size() == 2**64 - 2  # arithmetic, not a count
    assert str(next(p.candidates(None))) == "fd00:5::2"
    # after the last address of the /64 the round robin wraps to the start, without walking the range
    assert str(next(p.candidates(p.end))) == "fd00:5::2"
    assert str(next(p.candidates(Addr6("fd00:5::7")))) == "fd00:5::8"
    # an IPv4 last-reserved (a range set that changed family) starts from the beginning
    assert str(next(p.candidates(IPv4Address("10.5.0.7")))) == "fd00:5::2"


def test_v6_exhaustion_of_a_126(tmp_path):
    st = Store(str(tmp_path))
    p = pool6()
    with st:
        got = [str(st.allocate(p, f"c{i}", "eth0")) for i in range(2)]
        assert got == ["fd00:5::2", "fd00:5::3"]
        with pytest.raises(CNIError) as ei:
            st.allocate(p, "c2", "eth0")
    assert ei.value.code == 102 and "fd00:5::1-fd00:5::3" in ei.value.msg
    assert open(tmp_path / "fd00:5::3", newline="").read() == "c1\r\neth0"  # named as host-local names it
    assert st.leases() == {"fd00:5::2": ("c0", "eth0"), "fd00:5::3": ("c1", "eth0")}


def test_dual_stack_leases(tmp_path):
    st = Store(str(tmp_path))
    pools = [pool(V4), pool6(V6)]
    with st:
        a = st.allocate_all(pools, "a", "eth0")
        b = st.allocate_all(pools, "b", "eth0")
        assert st.allocate_all(pools, "a", "eth0") == a  # the same attachment keeps its leases
    assert [str(ip) for ip in a] == ["10.5.0.2", "fd00:5::2"]
    assert [str(ip) for ip in b] == ["10.5.0.3", "fd00:5::3"]
    # one last-reserved per range set, as host-local keeps them
    assert (tmp_path / "last_reserved_ip.0").read_text() == "10.5.0.3"
    assert (tmp_path / "last_reserved_ip.1").read_text() == "fd00:5::3"
    assert (tmp_path / "attachments" / "a:eth0").read_text().split() == ["10.5.0.2", "fd00:5::2"]
    assert st.find("a", "eth0") == ["10.5.0.2", "fd00:5::2"]
    with st:
        assert st.release("a", "eth0") == ["10.5.0.2", "fd00:5::2"]  # DEL releases both families
        assert st.release("a", "eth0") == []
        # without the index (a crash, host-local's own leases) DEL finds both by the scan
        os.unlink(tmp_path / "attachments" / "b:eth0")
        assert st.release("b", "eth0") == ["10.5.0.3", "fd00:5::3"]
    assert st.leases() == {}


def test_dual_stack_is_all_or_none(tmp_path):
    st = Store(str(tmp_path))
    full6 = pool6(start="fd00:5::2", end="fd00:5::2")
    with st:
        st.allocate(full6, "x", "eth0", rangeset=1)
        with pytest.raises(CNIError) as ei:
            st.allocate_all([pool(V4), full6], "y", "eth0")
    assert ei.value.code == 102
    # the IPv4 lease y got first is given back: y holds nothing
    assert st.leases() == {"fd00:5::2": ("x", "eth0")} and st.find("y", "eth0") == []


def test_v6_first_order_and_gc(tmp_path):
    st = Store(str(tmp_path))
    pools = [pool6(V6), pool(V4)]
    with st:
        got = st.allocate_all(pools, "a", "eth0")
        st.allocate_all(pools, "b", "eth0")
        gone = st.gc({("b", "eth0")})
    assert [ip.version for ip in got] == [6, 4]
    assert (tmp_path / "last_reserved_ip.0").read_text() == "fd00:5::3"  # range set 0 is IPv6 here
    assert sorted(g[0] for g in gone) == ["10.5.0.2", "fd00:5::2"]
    assert sorted(st.leases()) == ["10.5.0.3", "fd00:5::3"]


def test_store_ignores_foreign_v6_like_files(tmp_path):
    for name in ("fd00::zz", "a:b", "::1%eth0"):
        (tmp_path / name).write_text("x")
    (tmp_path / "fd00::9").write_bytes(b"c\r\neth0")
    assert Store(str(tmp_path)).leases() == {"fd00::9": ("c", "eth0")}
