"""host-local style IPAM: one lease file per IP, allocation under an flock.

Layout of `dataDir` (default `/var/lib/cni/networks/<network name>`), the same
as the reference `host-local` plugin:

    lock                   flock()ed while allocating or releasing
    last_reserved_ip.<N>   the last IP handed out from range set N (round robin starts after it)
    10.244.1.7             a lease: "<container id>\\r\\n<ifname>"
    fd00:10:244:1::7       an IPv6 lease, named as host-local names it (RFC 5952 text)
    attachments/<cid>:<ifname>   labkit's index: the IPs of that attachment's leases, one a
                           line, so ADD and DEL need not read every lease (a missing or
                           stale index entry falls back to the scan host-local does)

Range sets (host-local's `ranges`): one pool per address family; an attachment gets
one address from each, in order, all or none. An IPv6 pool is a /64 or so: nothing
here walks it address by address. Allocation tries candidates lazily from just after
the set's last reserved address, and each try that fails is a lease that exists, so
an ADD costs at most (leases + 1) tries whatever the pool's size.

Standard library only: imported on the `labkit-cni` exec path.
"""

from __future__ import annotations

import fcntl
import os

from .errors import IO_FAILURE, POOL_EXHAUSTED, TRY_AGAIN_LATER, CNIError
from .lite import Addr, Addr6, Net, ip_address

LINE_BREAK = "\r\n"
LAST_RESERVED = "last_reserved_ip.0"  # range set 0's; range set N's is last_reserved_ip.N
INDEX_DIR = "attachments"
DEFAULT_DATA_ROOT = "/var/lib/cni/networks"


class Pool:
    """The allocatable range: [start, end] inside `subnet`, minus the gateway.

    (A plain class, not a dataclass: `dataclasses` imports `inspect`, ~6 ms.)
    """

    __slots__ = ("end", "gateway", "start", "subnet")

    def __init__(self, subnet: Net, gateway: Addr | Addr6, start: Addr | Addr6,
                 end: Addr | Addr6):
        self.subnet, self.gateway, self.start, self.end = subnet, gateway, start, end

    def __eq__(self, other) -> bool:
        return isinstance(other, Pool) and (self.subnet, self.gateway, self.start, self.end) == (
            other.subnet, other.gateway, other.start, other.end)

    def __repr__(self) -> str:
        return f"Pool({self.subnet}, gw={self.gateway}, {self.start}-{self.end})"

    @property
    def version(self) -> int:
        return self.subnet.version

    @classmethod
    def from_subnet(cls, subnet: Net, gateway: Addr | Addr6 | None = None,
                    start: Addr | Addr6 | None = None, end: Addr | Addr6 | None = None) -> Pool:
        """host-local's defaults: from the subnet's second address to its last (IPv4: but one, the
        broadcast); the gateway is the second address."""
        kind = type(subnet.network)
        last = subnet.broadcast_address
        if subnet.version == 4:
            first = kind(subnet.network + 1 if subnet.prefixlen < 31 else subnet.network)
            last = kind(last - 1 if subnet.prefixlen < 31 else last)
        else:
            first = kind(subnet.network + 1 if subnet.prefixlen < 128 else subnet.network)
        gw = gateway if gateway is not None else first
        return cls(subnet, gw, start if start is not None else first,
                   end if end is not None else last)

    def candidates(self, after: Addr | Addr6 | None):
        """Every allocatable IP once, starting just after `after` (round robin), lazily: a /64 is
        2^64 of them, and a caller stops at the first free one."""
        kind = type(self.start)
        lo, hi = int(self.start), int(self.end)
        size = hi - lo + 1
        first = lo
        if after is not None and getattr(after, "version", 4) == self.version and lo <= int(after) <= hi:
            first = int(after) + 1
        gw = int(self.gateway)
        for i in range(size):
            ip = lo + (first - lo + i) % size
            if ip != gw:
                yield kind(ip)

    def size(self) -> int:
        n = int(self.end) - int(self.start) + 1
        return n - (1 if int(self.start) <= int(self.gateway) <= int(self.end) else 0)


class Store:
    """The lease directory of one network."""

    def __init__(self, data_dir: str, lock_timeout: float = 30.0):
        self.dir = data_dir
        self.lock_timeout = lock_timeout
        self._lock_fd: int | None = None

    def __enter__(self) -> Store:
        try:
            os.makedirs(self.dir, mode=0o755, exist_ok=True)
            fd = os.open(os.path.join(self.dir, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise CNIError(IO_FAILURE, f"cannot open IPAM data dir {self.dir}", str(e)) from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._wait_lock(fd)
        self._lock_fd = fd
        return self

    def _wait_lock(self, fd: int) -> None:
        """Poll for the lock (a thread cannot take SIGALRM); CNIError(11) after the timeout."""
        import time

        deadline = time.monotonic() + self.lock_timeout
        pause = 0.0005
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise CNIError(TRY_AGAIN_LATER,
                                   f"IPAM store {self.dir} is locked by another process",
                                   f"gave up after {self.lock_timeout:g}s; try again later") from None
                time.sleep(pause)
                pause = min(pause * 2, 0.01)

    def __exit__(self, *exc) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- reading ---------------------------------------------------------
    def leases(self) -> dict[str, tuple[str, str]]:
        """{ip: (container id, ifname)} of every lease file."""
        out = {}
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return out
        for name in names:
            if not _is_ip(name):
                continue
            try:
                with open(os.path.join(self.dir, name), newline="") as f:
                    text = f.read()
            except OSError:
                continue
            cid, _, ifname = text.partition(LINE_BREAK)
            out[name] = (cid.strip(), ifname.strip())
        return out

    def _owner(self, ip: str) -> tuple[str, str] | None:
        try:
            with open(os.path.join(self.dir, ip), newline="") as f:
                cid, _, ifname = f.read().partition(LINE_BREAK)
        except OSError:
            return None
        return cid.strip(), ifname.strip()

    def _index(self, container_id: str, ifname: str) -> str | None:
        name = f"{container_id}:{ifname}"
        if "/" in name or len(name) > 250 or name.startswith("."):
            return None
        return os.path.join(self.dir, INDEX_DIR, name)

    def _indexed(self, container_id: str, ifname: str) -> list[str]:
        """The IPs the index names for this attachment whose leases agree."""
        path = self._index(container_id, ifname)
        if path is None:
            return []
        try:
            with open(path) as f:
                names = f.read().split()
        except OSError:
            return []
        return [ip for ip in names if _is_ip(ip) and self._owner(ip) == (container_id, ifname)]

    def find(self, container_id: str, ifname: str) -> list[str]:
        ips = self._indexed(container_id, ifname)
        if ips:
            return ips
        return sorted(ip for ip, owner in self.leases().items() if owner == (container_id, ifname))

    def last_reserved(self, rangeset: int = 0) -> Addr | Addr6 | None:
        try:
            with open(os.path.join(self.dir, f"last_reserved_ip.{rangeset}")) as f:
                return ip_address(f.read().strip())
        except (OSError, ValueError):
            return None

    # -- writing (hold the lock) -----------------------------------------
    def allocate(self, pool: Pool, container_id: str, ifname: str, rangeset: int = 0) -> Addr | Addr6:
        """Reserve the next free IP of `pool` (range set `rangeset`) for (container id, ifname);
        reuse its own lease in that pool."""
        return self.allocate_all([pool], container_id, ifname, first_rangeset=rangeset)[0]

    def allocate_all(self, pools: list[Pool], container_id: str, ifname: str,
                     first_rangeset: int = 0) -> list[Addr | Addr6]:
        """One IP from each pool (range sets `first_rangeset`, +1, ...), in order, for (container id,
        ifname): all or none (a pool that is full releases what the others gave)."""
        mine = self._indexed(container_id, ifname)  # index only: no scan on the ADD path
        got: list[Addr | Addr6] = []
        made: list[str] = []
        try:
            for n, pool in enumerate(pools, first_rangeset):
                own = next((ip for ip in mine if ip in pool.subnet), None)
                if own is not None:
                    got.append(ip_address(own))
                    continue
                ip = self._reserve(pool, container_id, ifname, n)
                made.append(str(ip))
                got.append(ip)
        except BaseException:
            for ip in made:
                self._unlink(ip)
            raise
        if made:  # what the index named in other pools stays, for DEL to find
            names = [str(ip) for ip in got]
            self._write_index(container_id, ifname, [ip for ip in mine if ip not in names] + names)
        return got

    def _reserve(self, pool: Pool, container_id: str, ifname: str, rangeset: int) -> Addr | Addr6:
        for ip in pool.candidates(self.last_reserved(rangeset)):
            path = os.path.join(self.dir, str(ip))
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                continue
            except OSError as e:
                raise CNIError(IO_FAILURE, f"cannot write lease {path}", str(e)) from e
            with os.fdopen(fd, "w", newline="") as f:
                f.write(f"{container_id}{LINE_BREAK}{ifname}")
            self._write_last(ip, rangeset)
            return ip
        raise CNIError(POOL_EXHAUSTED, f"no IP addresses available in range {pool.start}-{pool.end}",
                       f"subnet {pool.subnet}, {pool.size()} addresses, all leased")

    def _unlink(self, ip: str) -> bool:
        try:
            os.unlink(os.path.join(self.dir, ip))
            return True
        except FileNotFoundError:
            return False

    def _write_last(self, ip: Addr | Addr6, rangeset: int = 0) -> None:
        name = f"last_reserved_ip.{rangeset}"
        tmp = os.path.join(self.dir, f".{name}.tmp")
        with open(tmp, "w") as f:
            f.write(str(ip))
        os.replace(tmp, os.path.join(self.dir, name))

    def _write_index(self, container_id: str, ifname: str, ips: list[str]) -> None:
        path = self._index(container_id, ifname)
        if path is None:
            return
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write("\n".join(ips))
        except OSError:
            pass  # the index is an accelerator; the lease file is the truth

    def _drop_index(self, container_id: str, ifname: str) -> None:
        path = self._index(container_id, ifname)
        if path is not None:
            try:
                os.unlink(path)
            except OSError:
                pass

    def release(self, container_id: str, ifname: str) -> list[str]:
        """Drop every lease of (container id, ifname); return the IPs released."""
        gone = [ip for ip in self.find(container_id, ifname) if self._unlink(ip)]
        self._drop_index(container_id, ifname)
        return gone

    def gc(self, valid: set[tuple[str, str]]) -> list[tuple[str, str, str]]:
        """Drop leases whose (container id, ifname) is not in `valid`."""
        gone = []
        for ip, owner in self.leases().items():
            if owner not in valid:
                try:
                    os.unlink(os.path.join(self.dir, ip))
                    gone.append((ip, *owner))
                except FileNotFoundError:
                    pass
        try:
            names = os.listdir(os.path.join(self.dir, INDEX_DIR))
        except OSError:
            names = []
        for name in names:
            cid, _, ifname = name.partition(":")
            if (cid, ifname) not in valid:
                self._drop_index(cid, ifname)
        return gone


def _is_ip(name: str) -> bool:
    """Whether a file name in the data dir is a lease: an IPv4 or IPv6 address."""
    if ":" in name:
        try:
            Addr6(name)
        except ValueError:
            return False
        return True
    parts = name.split(".")
    return len(parts) == 4 and all(p.isdigit() for p in parts)
