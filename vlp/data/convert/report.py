"""Counting what a converter wrote and skipped, and saying so."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class ConversionReport:
    written: Counter = field(default_factory=Counter)  # split -> samples
    captions: Counter = field(default_factory=Counter)  # split -> captions
    skipped: Counter = field(default_factory=Counter)  # reason -> samples
    examples: dict[str, str] = field(default_factory=dict)  # reason -> first offending item

    def skip(self, reason: str, item: str) -> None:
        self.skipped[reason] += 1
        self.examples.setdefault(reason, item)

    def summary(self) -> str:
        lines = []
        for split in sorted(self.written):
            lines.append(f"  {split}: {self.written[split]} images, {self.captions[split]} captions")
        total_skipped = sum(self.skipped.values())
        lines.append(f"  skipped: {total_skipped}")
        for reason, n in self.skipped.most_common():
            lines.append(f"    {reason}: {n} (e.g. {self.examples[reason]})")
        return "\n".join(lines)
