"""Damaged audio decoded anyway: what was skipped, and the warning that reports it."""

from __future__ import annotations

import warnings
from typing import Any


class AudioDamageWarning(UserWarning):
    """Damaged or truncated audio was decoded anyway: the message says where and how much was skipped."""


class Damage:
    """What was skipped while decoding one source, and the warning that reports it."""

    def __init__(self, name: str, sr: int) -> None:
        self.name, self.sr = name, sr
        self.packet_bytes = 0  # bytes of the packets read
        self.errors = 0  # packets the decoder rejected
        self.skipped_bytes = 0
        self.skipped_seconds = 0.0  # of the rejected packets, where the container says
        self.first_at: float | None = None  # seconds of audio decoded before the first damage
        self.first_cause = ""
        self.end_cause: str | None = None  # why the demuxer stopped early, when it did

    def skipped(self, packet: Any, cause: str, at_sample: int) -> None:
        self.errors += 1
        if packet is not None:
            self.skipped_bytes += packet.size
            if packet.duration and packet.time_base is not None:
                self.skipped_seconds += float(packet.duration * packet.time_base)
        self._first(cause, at_sample)

    def ended(self, cause: str, at_sample: int) -> None:
        self.end_cause = cause
        self._first(cause, at_sample)

    def _first(self, cause: str, at_sample: int) -> None:
        if self.first_at is None:
            self.first_at, self.first_cause = at_sample / self.sr, cause

    def warn(self, kept: float, claimed: float) -> None:
        """Warn (AudioDamageWarning) when anything was skipped or the audio ends well short of its header."""
        parts = []
        if self.errors:
            lost = f", {self.skipped_seconds:.2f} s of audio" if self.skipped_seconds else ""
            parts.append(f"skipped {self.errors} undecodable packet(s) ({self.skipped_bytes} bytes{lost})")
        if self.end_cause is not None:
            parts.append(f"the data ends early ({self.end_cause})")
        short = claimed - kept > max(1.0, 0.05 * claimed)
        if short:
            parts.append(f"the header announces {claimed:.2f} s")
        if not parts:
            return
        where = f" from {self.first_at:.2f} s on" if self.first_at is not None else ""
        warnings.warn(
            f"{self.name}: damaged or truncated audio{where}: {'; '.join(parts)}; kept {kept:.2f} s",
            AudioDamageWarning,
            stacklevel=4,
        )
