"""Names as containerlab writes them, mapped to names the kernel takes.

containerlab allows node names like `PC1`, `leaf_1` or `spine-router-01` and lab
names like `2-linux-nodes` or `My.Lab`; labkit's namespaces, mgmt bridge ports and
state folders need short lowercase names. The mapping is a pure function of the
name, so every verb maps the same name the same way:

    node_key("pc1") == "pc1"            # already a kernel-safe node name: kept as it is
    node_key("PC1") == "pc1_1b4f0e"      # lowercase, '_', and 6 hex digits of the name's sha256
    lab_key("2-linux-nodes") == "2-lin-5d8c0a"

A node's key holds a '_' exactly when it was mapped, and a node name labkit keeps as it
is never holds one, so a mapped key never equals a kept one; two mapped keys are equal
only if their 24-bit hashes and prefixes agree, which the plan reports as an error rather
than building two nodes on one namespace. Lab names have no spare character (a lab name
is 1-12 of [a-z0-9-], the rule paths and `--name` check), so a mapped lab key ends in
'-' and 6 hex digits; a lab named so by hand and a mapped one meet as "lab already up".
"""

from __future__ import annotations

import hashlib
import re

# labkit's own rules: what is used as it is
LAB_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?$")
NODE_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$")
# containerlab's rules (schemas/clab.schema.json): what is accepted and mapped
CLAB_LAB_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9._-]{0,63}$")
CLAB_NODE_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9._-]{0,63}$")
HASH_DIGITS = 6
NODE_KEY_MAX = 15  # the mgmt bridge port of a node is named by its key: IFNAMSIZ - 1
LAB_KEY_MAX = 12


def _digest(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:HASH_DIGITS]


def _stem(name: str, length: int) -> str:
    """Lowercase letters, digits and single '-' of `name`, at most `length` of them."""
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9]", "-", name.lower())).strip("-")[:length].rstrip("-")


def node_key(name: str) -> str:
    """The kernel-safe name of a node: its namespace suffix and its mgmt bridge port (<= 15 chars)."""
    if NODE_NAME.match(name):
        return name
    stem = _stem(name, NODE_KEY_MAX - HASH_DIGITS - 1) or "n"
    return f"{stem}_{_digest(name)}"


def lab_key(name: str) -> str:
    """The name labkit runs a lab under (state folder, namespace prefix, labels; <= 12 chars)."""
    if LAB_NAME.match(name):
        return name
    stem = _stem(name, LAB_KEY_MAX - HASH_DIGITS - 1) or "lab"
    return f"{stem}-{_digest(name)}"


def is_node_name(name: object) -> bool:
    """A node name labkit runs: its own rule or containerlab's."""
    return isinstance(name, str) and (NODE_NAME.match(name) is not None or CLAB_NODE_NAME.match(name) is not None)


def is_clab_lab_name(name: object) -> bool:
    return isinstance(name, str) and CLAB_LAB_NAME.match(name) is not None
