"""Progress of a long command: a rich spinner on a terminal, plain timed lines otherwise."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console


class Progress:
    def __init__(self, quiet: bool = False, stream=None):
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.console = Console(file=self.stream, emoji=False) if self.stream.isatty() else None
        self.started = time.monotonic()

    def note(self, text: str) -> None:
        if self.quiet:
            return
        elapsed = time.monotonic() - self.started
        if self.console:
            self.console.print(f"[dim]{elapsed:6.2f}s[/dim] {text}")
        else:
            print(f"{elapsed:6.2f}s {text}", file=self.stream, flush=True)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if self.quiet:
            yield
            return
        started = time.monotonic()
        if self.console:
            with self.console.status(f"{name} ..."):
                yield
        else:
            yield
        self.note(f"{name} [dim]({(time.monotonic() - started) * 1000:.0f} ms)[/dim]"
                  if self.console else f"{name} ({(time.monotonic() - started) * 1000:.0f} ms)")
