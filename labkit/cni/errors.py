"""CNI error type and the spec's well-known error codes (CNI spec 1.1.0).

Standard library only: imported on the `labkit-cni` exec path.
"""

from __future__ import annotations

# Well-known codes from the spec.
INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
UNKNOWN_CONTAINER = 3
INVALID_ENV = 4
IO_FAILURE = 5
DECODE_FAILURE = 6
INVALID_CONFIG = 7
TRY_AGAIN_LATER = 11
NOT_AVAILABLE = 50
NOT_AVAILABLE_LIMITED = 51

# labkit-cni's own codes (the spec reserves 100+ for plugins).
INTERNAL = 100
INTERFACE_EXISTS = 101
POOL_EXHAUSTED = 102
NETLINK_FAILURE = 103
CHECK_FAILED = 104


class CNIError(Exception):
    """A failure reported to the runtime as `{cniVersion, code, msg, details}`."""

    def __init__(self, code: int, msg: str, details: str = ""):
        super().__init__(msg)
        self.code = int(code)
        self.msg = msg
        self.details = details

    def to_dict(self, cni_version: str = "1.1.0") -> dict:
        return {
            "cniVersion": cni_version,
            "code": self.code,
            "msg": self.msg,
            "details": self.details,
        }

    def __str__(self) -> str:
        s = f"CNI error {self.code}: {self.msg}"
        return f"{s} ({self.details})" if self.details else s
