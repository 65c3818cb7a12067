"""The progress sink every long stage reports to; silent by default (the CLI passes a console one)."""

from __future__ import annotations


class Progress:
    """Progress of long work: a labelled count, plus log lines. This base class discards everything."""

    def start(self, label: str, total: int) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass

    def log(self, message: str) -> None:
        pass

    def stop(self) -> None:
        pass
