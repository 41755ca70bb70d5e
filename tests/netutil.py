"""Small helpers shared by tests and benchmarks."""

from __future__ import annotations

import random
import socket


def free_endpoint() -> tuple[str, int]:
    """A loopback address and a port free for both UDP and TCP there (for servers under test)."""
    for _ in range(50):
        addr = f"127.0.{random.randrange(60, 250)}.{random.randrange(2, 250)}"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind((addr, 0))
            port = u.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind((addr, port))
                except OSError:
                    continue
        return addr, port
    raise RuntimeError("no free loopback port")
