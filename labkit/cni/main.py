"""`labkit-cni` executable: CNI spec environment + stdin in, JSON out.

Exec'd once per pod by a runtime, so this path imports the standard library
only (no pyroute2, pydantic, jinja2, rich): check with
`python -X importtime -m labkit.cni.main`.

Run it in the node's namespace (`ip netns exec NODE labkit-cni`, `nsenter
--net=PATH labkit-cni`) or set LABKIT_CNI_NODE_NETNS=PATH to have it enter
that namespace itself.
"""

from __future__ import annotations

import os
import sys

from .errors import INTERNAL, INVALID_ENV, CNIError

NEEDS = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"),
    "GC": ("CNI_PATH",),
    "STATUS": (),
    "VERSION": (),
}


def _emit(obj: dict) -> None:
    from .lite import dumps

    sys.stdout.write(dumps(obj))
    sys.stdout.write("\n")
    sys.stdout.flush()


def config_version(stdin: bytes) -> str:
    """Best effort cniVersion of the config, for error replies."""
    from .lite import loads

    try:
        v = loads(stdin).get("cniVersion")
        if isinstance(v, str) and v:
            return v
    except (ValueError, AttributeError):
        pass
    return "1.1.0"


def run(env: dict, stdin: bytes) -> tuple[int, dict | None]:
    """The whole executable as a function: (exit code, JSON to print or None)."""
    command = env.get("CNI_COMMAND", "")
    try:
        if not command:
            raise CNIError(INVALID_ENV, "CNI_COMMAND is required",
                           "one of ADD, DEL, CHECK, STATUS, GC, VERSION")
        needs = NEEDS.get(command)
        if needs is None:
            raise CNIError(INVALID_ENV, f"unknown CNI_COMMAND {command!r}",
                           "one of ADD, DEL, CHECK, STATUS, GC, VERSION")
        missing = [k for k in needs if not env.get(k)]
        if missing:
            raise CNIError(INVALID_ENV, f"{command}: missing environment variable "
                           f"{', '.join(missing)}", "required by the CNI spec for this command")
        node_netns = env.get("LABKIT_CNI_NODE_NETNS") or None
        if node_netns:
            from labkit.net.netlink import setns

            try:
                fd = os.open(node_netns, os.O_RDONLY | os.O_CLOEXEC)
                setns(fd)
                os.close(fd)
            except OSError as e:
                raise CNIError(INVALID_ENV, f"cannot enter LABKIT_CNI_NODE_NETNS {node_netns}",
                               str(e)) from e
        from . import plugin

        result = plugin.execute(
            command, stdin,
            container_id=env.get("CNI_CONTAINERID"),
            netns=env.get("CNI_NETNS"),
            ifname=env.get("CNI_IFNAME"),
            args=env.get("CNI_ARGS"),
        )
        return 0, (result if command in ("ADD", "VERSION") else None)
    except CNIError as e:
        return 1, e.to_dict(config_version(stdin))
    except Exception as e:  # noqa: BLE001 - never a traceback: the runtime parses stdout
        err = CNIError(INTERNAL, f"internal error: {type(e).__name__}: {e}", repr(e))
        return 1, err.to_dict(config_version(stdin))


def main() -> int:
    try:  # a terminal is no config (VERSION typed by hand must not wait for ^D)
        stdin = b"" if sys.stdin is None or os.isatty(0) else sys.stdin.buffer.read()
    except (OSError, ValueError):
        stdin = b""
    code, out = run(os.environ, stdin)
    if out is not None:
        _emit(out)
    return code


if __name__ == "__main__":
    sys.exit(main())
