"""Progress reporting: rich progress bars on a terminal, plain lines otherwise."""

from __future__ import annotations

import contextlib
import sys

__all__ = ["Progress"]


class Progress:
    """``log(text)`` for lines and ``task(description, total)`` for a bar (a context manager
    yielding an ``advance()`` callable). Bars appear only on an interactive terminal."""

    def __init__(self, *, enabled: bool = True, stream=None) -> None:
        self.enabled = enabled
        self.stream = stream or sys.stdout
        self._rich = None
        if enabled and getattr(self.stream, "isatty", lambda: False)():
            try:
                from rich.console import Console

                self._rich = Console(file=self.stream)
            except ImportError:
                self._rich = None

    def log(self, text: str) -> None:
        if not self.enabled:
            return
        if self._rich is not None:
            self._rich.print(text, highlight=False, markup=False)
        else:
            print(text, file=self.stream, flush=True)

    @contextlib.contextmanager
    def task(self, description: str, total: int):
        if self._rich is None:
            yield lambda: None
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TimeElapsedColumn

        with RichProgress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                          TimeElapsedColumn(), console=self._rich, transient=True) as bar:
            task = bar.add_task(description, total=total)
            yield lambda: bar.advance(task)
