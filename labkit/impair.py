"""Link impairment in a node's (or pod's) network namespace, on an interface's egress, read back from the kernel.

What does what (one `set` replaces everything on that interface, as containerlab's `tools netem set`):

- rate                     the `tbf` qdisc at the interface's root;
- loss                     nftables, where the link end's packets arrive: an ingress chain on the veth's
                           other end, in table `netdev labkit-impair` of the peer's namespace
                           (`numgen random mod 10000 < N drop`); any kernel with nftables. Dropped
                           there, a lost packet is silent to its sender, as on a real link (and netem);
- delay, jitter, corrupt,  the `netem` qdisc at the root (with the rate as netem's own `rate`). netem is
  duplicate, reorder       tried for real; a kernel without sch_netem gets an error naming the module,
                           never a silent no-op, and nothing on the interface changes.

`read` asks the kernel (`tc -j qdisc show`, `nft -j list table`), so status and `labkit netem show` report
what is in force, not what was asked for. Everything lives in the lab's own namespaces: `down` removes it
with them, and there is nothing else to clean up.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from typing import Any

from labkit.errors import LabkitError
from labkit.net import nft
from labkit.templating import render
from labkit.topology.impairment import Impairment
from labkit.topology.schema import IFNAME

TABLE = "labkit-impair"
CHAIN_PREFIX = "loss-"
NETEM_MODULE = "sch_netem"
TBF_LATENCY_MS = 50  # how long a packet may wait for tokens before tbf drops it


@dataclass(frozen=True)
class InForce:
    """An interface's impairments as the kernel has them."""

    target: str  # node, or NS/POD
    ifname: str
    impairment: Impairment
    via: tuple[str, ...]  # the kernel mechanisms: tbf, netem, nftables
    dropped: int | None = None  # packets the loss rule dropped so far

    def as_dict(self) -> dict[str, Any]:
        return {"node": self.target, "interface": self.ifname, **self.impairment.as_dict(), "via": list(self.via),
                **({"dropped": self.dropped} if self.dropped is not None else {})}


class NetemMissing(LabkitError):
    """The kernel has no netem qdisc, and an impairment needs it."""


def _tc(netns_path: str, *args: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["nsenter", f"--net={netns_path}", "tc", *args], capture_output=True, text=True,
                              timeout=30, check=False)
    except FileNotFoundError as exc:
        raise LabkitError(f"cannot run {exc.filename}: not installed (iproute2 and util-linux)") from None
    except subprocess.TimeoutExpired:
        raise LabkitError(f"tc {' '.join(args)} did not finish in 30 s") from None


def _check_ifname(ifname: str) -> str:
    if not IFNAME.match(ifname):
        raise LabkitError(f"{ifname!r} is not an interface name: 1-15 letters, digits, '_', '.' or '-'")
    return ifname


def tbf_args(rate_kbit: int, mtu: int = 1500) -> list[str]:
    """tbf for `rate_kbit`: a bucket of 10 ms of traffic (at least 16 KiB, and at least two MTUs), and
    TBF_LATENCY_MS of queue before it drops."""
    burst = max(rate_kbit * 125 // 100, 16384, 2 * (mtu + 14))
    return ["tbf", "rate", f"{rate_kbit}kbit", "burst", str(burst), "latency", f"{TBF_LATENCY_MS}ms"]


def netem_args(imp: Impairment) -> list[str]:
    args = ["netem"]
    if imp.delay is not None:
        args += ["delay", f"{imp.delay:g}ms"] + ([f"{imp.jitter:g}ms"] if imp.jitter is not None else [])
    for name in ("corrupt", "duplicate", "reorder"):
        value = getattr(imp, name)
        if value is not None:
            args += [name, f"{value:g}%"]
    if imp.rate is not None:
        args += ["rate", f"{imp.rate}kbit"]
    return args


@dataclass(frozen=True)
class Peer:
    """Where a link end's packets arrive: the namespace and interface of the other end of its veth."""

    netns_path: str
    ifname: str


def set_impairment(netns_path: str, ifname: str, imp: Impairment, *, where: str, peer: Peer | None,
                   mtu: int = 1500) -> None:
    """Make `imp` what `ifname`'s egress suffers (replacing what it had); `where` names it (`w1:eth1`) in
    errors and in the loss rule, which sits at `peer`. Nothing changes when the netem part cannot be applied
    (it is tried first)."""
    _check_ifname(ifname)
    for problem in imp.problems():
        raise LabkitError(f"{where}: {problem}")
    if imp.loss is not None and peer is None:
        raise LabkitError(f"{where}: loss is dropped where the link's packets arrive, and labkit does not know "
                          "this interface's peer: give loss on a topology link's end or a node's eth0 "
                          "(rate works on any interface)")
    needs = imp.netem_needs()
    if needs:
        result = _tc(netns_path, "qdisc", "replace", "dev", ifname, "root", *netem_args(imp))
        if result.returncode != 0:
            raise _tc_error(result, where, needs)
    elif imp.rate is not None:
        result = _tc(netns_path, "qdisc", "replace", "dev", ifname, "root", *tbf_args(imp.rate, mtu))
        if result.returncode != 0:
            raise _tc_error(result, where, ["rate"])
    else:
        _delete_root(netns_path, ifname, where)
    if peer is not None:
        losses = {origin: item for origin, item in _losses(peer.netns_path).items() if origin != where}
        if imp.loss is not None:
            losses[where] = LossRule(peer.ifname, imp.loss, None)
        _write_loss_table(peer.netns_path, losses, where)


def clear(netns_path: str, ifname: str, *, where: str, peer: Peer | None) -> None:
    """Remove every impairment of `ifname` (its root qdisc back to the default, its loss rule gone)."""
    set_impairment(netns_path, ifname, Impairment(), where=where, peer=peer)


def _delete_root(netns_path: str, ifname: str, where: str) -> None:
    """Back to the interface's default qdisc; only a qdisc labkit puts there (tbf, netem) is removed."""
    current = _qdiscs(netns_path).get(ifname)
    if current is None or current.get("kind") not in ("tbf", "netem"):
        return
    result = _tc(netns_path, "qdisc", "del", "dev", ifname, "root")
    if result.returncode != 0:
        raise _tc_error(result, where, [])


def _tc_error(result: subprocess.CompletedProcess, where: str, needs: list[str]) -> LabkitError:
    reason = (result.stderr or result.stdout).strip().removeprefix("Error: ")
    if "Cannot find device" in reason:
        return LabkitError(f"{where}: no such interface")
    if needs and "netem" in result.args and "qdisc kind is unknown" in reason:
        return NetemMissing(
            f"{where}: {', '.join(needs)} need{'s' if len(needs) == 1 else ''} the netem queueing discipline "
            f"(kernel module {NETEM_MODULE}), which this kernel does not have; load it (modprobe {NETEM_MODULE}) "
            "or use what works without it: rate (tbf) and loss (nftables)")
    return LabkitError(f"{where}: tc refused the impairment: {reason}")


@dataclass(frozen=True)
class LossRule:
    """A loss rule as it sits in the peer's namespace: on `ifname`'s ingress, for the link end it names."""

    ifname: str
    percent: float
    dropped: int | None


def _write_loss_table(netns_path: str, losses: dict[str, LossRule], where: str) -> None:
    chains = [{"name": CHAIN_PREFIX + rule.ifname, "ifname": rule.ifname, "percent": f"{rule.percent:g}",
               "basis_points": round(rule.percent * 100), "origin": origin}
              for origin, rule in sorted(losses.items(), key=lambda kv: kv[1].ifname)]
    if not chains and TABLE not in _netdev_tables(netns_path):
        return
    try:
        nft.apply_ruleset(netns_path, render("impair.nft.j2", trim=True, table=TABLE, chains=chains))
    except nft.NftError as exc:
        raise LabkitError(f"{where}: loss: {exc}") from None


def _netdev_tables(netns_path: str) -> set[str]:
    result = subprocess.run(["nsenter", f"--net={netns_path}", "nft", "list", "tables", "netdev"],
                            capture_output=True, text=True, timeout=30, check=False)
    return {line.split()[-1] for line in result.stdout.splitlines() if line.startswith("table netdev ")}


# ---------------------------------------------------------------- reading back


def _qdiscs(netns_path: str) -> dict[str, dict]:
    """The root qdisc of each interface, as `tc -j qdisc show` says."""
    result = _tc(netns_path, "-j", "qdisc", "show")
    if result.returncode != 0:
        raise LabkitError(f"tc qdisc show failed in {netns_path}: {result.stderr.strip()}")
    try:
        entries = json.loads(result.stdout or "[]")
    except json.JSONDecodeError:
        return {}
    return {e["dev"]: e for e in entries if isinstance(e, dict) and e.get("root") and "dev" in e}


_ORIGIN = re.compile(r"^labkit loss [0-9.]+% of (\S+)$")


def _losses(netns_path: str) -> dict[str, LossRule]:
    """The loss rules this namespace holds (for the link ends whose packets arrive here), by the link end
    they belong to, as the kernel has them (table labkit-impair)."""
    result = subprocess.run(["nsenter", f"--net={netns_path}", "nft", "-j", "list", "table", "netdev", TABLE],
                            capture_output=True, text=True, timeout=30, check=False)
    if result.returncode != 0:  # no such table: no loss rule here
        return {}
    found: dict[str, LossRule] = {}
    for item in json.loads(result.stdout).get("nftables", []):
        rule = item.get("rule") if isinstance(item, dict) else None
        origin = _ORIGIN.match(str(rule.get("comment", ""))) if rule else None
        if not rule or not origin or not str(rule.get("chain", "")).startswith(CHAIN_PREFIX):
            continue
        basis, dropped = None, None
        for expr in rule.get("expr", []):
            if not isinstance(expr, dict):
                continue
            match = expr.get("match")
            if match and isinstance(match.get("left"), dict) and "numgen" in match["left"]:
                modulus = match["left"]["numgen"].get("mod") or 10000
                basis = float(match["right"]) * 10000 / modulus
            if "counter" in expr:
                dropped = expr["counter"].get("packets")
            if "drop" in expr and basis is None:  # no numgen match before it: every packet
                basis = 10000.0
        if basis is not None:
            found[origin.group(1)] = LossRule(rule["chain"][len(CHAIN_PREFIX):], round(basis / 100, 2), dropped)
    return found


def _from_qdisc(q: dict) -> tuple[dict[str, Any], str | None]:
    """The impairment values a root qdisc carries (tbf: rate; netem: delay, jitter, ... as tc -j prints them)."""
    options = q.get("options") or {}
    if q.get("kind") == "tbf" and options.get("rate"):
        return {"rate": round(options["rate"] * 8 / 1000)}, "tbf"
    if q.get("kind") != "netem":
        return {}, None
    values: dict[str, Any] = {}
    delay = options.get("delay") or {}
    if delay.get("delay"):
        values["delay"] = round(delay["delay"] * 1000, 3)
    if delay.get("jitter"):
        values["jitter"] = round(delay["jitter"] * 1000, 3)
    for name in ("corrupt", "duplicate", "reorder"):
        value = (options.get(name) or {}).get(name)
        if value:
            values[name] = round(value * 100, 2)
    if (options.get("rate") or {}).get("rate"):
        values["rate"] = round(options["rate"]["rate"] * 8 / 1000)
    return values, "netem"


def read(targets: dict[str, str], holders: dict[str, str] | None = None) -> list[InForce]:
    """Every impaired interface of the targets (name -> netns path), from the kernel: root qdiscs in the
    target's own namespace, loss rules wherever they sit (the targets' and `holders`' namespaces, e.g. the
    mgmt network's), matched to their link end by the rule's comment."""
    losses: dict[str, LossRule] = {}
    for path in {**(holders or {}), **targets}.values():
        losses.update(_losses(path))
    found = []
    for name, path in targets.items():
        qdiscs = _qdiscs(path)
        ifnames = set(qdiscs) | {w.rpartition(":")[2] for w in losses if w.rpartition(":")[0] == name}
        for ifname in sorted(ifnames):
            values, by = _from_qdisc(qdiscs.get(ifname, {}))
            via = [by] if by else []
            rule = losses.get(f"{name}:{ifname}")
            if rule is not None:
                values["loss"] = rule.percent
                via.append("nftables")
            if values:
                found.append(InForce(name, ifname, Impairment(**values), tuple(via),
                                     rule.dropped if rule else None))
    return found
