"""Which sysctls a node may set: only those of its own network namespace.

A node is a network namespace (or a container in one); a sysctl outside it
(`kernel.*`, `vm.*`, `fs.*`, most of `net.core.*`) would change the host and
outlive the lab. The rule is the one container runtimes apply to a container in
its own network namespace (runc, the Kubernetes "namespaced sysctls").
"""

from __future__ import annotations

# whole trees that exist once per network namespace
NAMESPACED_PREFIXES = ("net.ipv4.", "net.ipv6.", "net.netfilter.", "net.unix.", "net.mpls.", "net.mptcp.")
# the per-namespace members of net.core (the rest of net.core is the host's)
NAMESPACED_NET_CORE = (
    "net.core.somaxconn",
    "net.core.xfrm_acq_expires",
    "net.core.xfrm_aevent_etime",
    "net.core.xfrm_aevent_rseqth",
    "net.core.xfrm_larval_drop",
)
VALID = f"valid: {', '.join(p + '*' for p in NAMESPACED_PREFIXES)}, net.core.somaxconn, net.core.xfrm_*"


def is_namespaced(key: str) -> bool:
    name = key.replace("/", ".")
    return name.startswith(NAMESPACED_PREFIXES) or name in NAMESPACED_NET_CORE


def namespaced_problem(key: str) -> tuple[str, str] | None:
    """None for a key of the node's own network namespace; else (message, what is valid)."""
    if is_namespaced(key):
        return None
    return (f"{key!r} is not a sysctl of the node's network namespace: setting it would change the host",
            VALID + " (the network-namespace sysctls container runtimes allow)")
