"""host-local style IPAM: one lease file per IP, allocation under an flock.

Layout of `dataDir` (default `/var/lib/cni/networks/<network name>`), the same
as the reference `host-local` plugin:

    lock                   flock()ed while allocating or releasing
    last_reserved_ip.0     the last IP handed out (round robin starts after it)
    10.244.1.7             a lease: "<container id>\\r\\n<ifname>"
    attachments/<cid>:<ifname>   labkit's index: the IP of that attachment's lease, so
                           ADD and DEL need not read every lease (a missing or stale
                           index entry falls back to the scan host-local does)

Standard library only: imported on the `labkit-cni` exec path.
"""

from __future__ import annotations

import fcntl
import os

from .errors import IO_FAILURE, POOL_EXHAUSTED, TRY_AGAIN_LATER, CNIError
from .lite import Addr, Net

LINE_BREAK = "\r\n"
LAST_RESERVED = "last_reserved_ip.0"
INDEX_DIR = "attachments"
DEFAULT_DATA_ROOT = "/var/lib/cni/networks"


class Pool:
    """The allocatable range: [start, end] inside `subnet`, minus the gateway.

    (A plain class, not a dataclass: `dataclasses` imports `inspect`, ~6 ms.)
    """

    __slots__ = ("end", "gateway", "start", "subnet")

    def __init__(self, subnet: Net, gateway: Addr, start: Addr,
                 end: Addr):
        self.subnet, self.gateway, self.start, self.end = subnet, gateway, start, end

    def __eq__(self, other) -> bool:
        return isinstance(other, Pool) and (self.subnet, self.gateway, self.start, self.end) == (
            other.subnet, other.gateway, other.start, other.end)

    def __repr__(self) -> str:
        return f"Pool({self.subnet}, gw={self.gateway}, {self.start}-{self.end})"

    @classmethod
    def from_subnet(cls, subnet: Net, gateway: Addr | None = None,
                    start: Addr | None = None, end: Addr | None = None) -> Pool:
        first = Addr(subnet.network + 1 if subnet.prefixlen < 31 else subnet.network)
        last = subnet.broadcast_address
        last = Addr(last - 1 if subnet.prefixlen < 31 else last)
        gw = gateway if gateway is not None else first
        return cls(subnet, gw, start if start is not None else first,
                   end if end is not None else last)

    def candidates(self, after: Addr | None):
        """Every allocatable IP once, starting just after `after` (round robin)."""
        lo, hi = int(self.start), int(self.end)
        size = hi - lo + 1
        first = lo
        if after is not None and lo <= int(after) <= hi:
            first = int(after) + 1
        gw = int(self.gateway)
        for i in range(size):
            ip = lo + (first - lo + i) % size
            if ip != gw:
                yield Addr(ip)

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

    def _indexed(self, container_id: str, ifname: str) -> str | None:
        """The IP the index names for this attachment, if its lease agrees."""
        path = self._index(container_id, ifname)
        if path is None:
            return None
        try:
            with open(path) as f:
                ip = f.read().strip()
        except OSError:
            return None
        if _is_ip(ip) and self._owner(ip) == (container_id, ifname):
            return ip
        return None

    def find(self, container_id: str, ifname: str) -> list[str]:
        ip = self._indexed(container_id, ifname)
        if ip is not None:
            return [ip]
        return sorted(ip for ip, owner in self.leases().items() if owner == (container_id, ifname))

    def last_reserved(self) -> Addr | None:
        try:
            with open(os.path.join(self.dir, LAST_RESERVED)) as f:
                return Addr(f.read().strip())
        except (OSError, ValueError):
            return None

    # -- writing (hold the lock) -----------------------------------------
    def allocate(self, pool: Pool, container_id: str, ifname: str) -> Addr:
        """Reserve the next free IP for (container id, ifname); reuse its own lease."""
        mine = self._indexed(container_id, ifname)  # index only: no scan on the ADD path
        if mine is not None:
            return Addr(mine)
        for ip in pool.candidates(self.last_reserved()):
            path = os.path.join(self.dir, str(ip))
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                continue
            except OSError as e:
                raise CNIError(IO_FAILURE, f"cannot write lease {path}", str(e)) from e
            with os.fdopen(fd, "w", newline="") as f:
                f.write(f"{container_id}{LINE_BREAK}{ifname}")
            self._write_last(ip)
            self._write_index(container_id, ifname, ip)
            return ip
        raise CNIError(POOL_EXHAUSTED, f"no IP addresses available in range {pool.start}-{pool.end}",
                       f"subnet {pool.subnet}, {pool.size()} addresses, all leased")

    def _write_last(self, ip: Addr) -> None:
        tmp = os.path.join(self.dir, f".{LAST_RESERVED}.tmp")
        with open(tmp, "w") as f:
            f.write(str(ip))
        os.replace(tmp, os.path.join(self.dir, LAST_RESERVED))

    def _write_index(self, container_id: str, ifname: str, ip: Addr) -> None:
        path = self._index(container_id, ifname)
        if path is None:
            return
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(str(ip))
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
        gone = []
        for ip in self.find(container_id, ifname):
            try:
                os.unlink(os.path.join(self.dir, ip))
                gone.append(ip)
            except FileNotFoundError:
                pass
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
    parts = name.split(".")
    return len(parts) == 4 and all(p.isdigit() for p in parts)
