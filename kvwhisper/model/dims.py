"""The sizes of a Whisper model: one frozen dataclass, read from the checkpoint."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ModelDims:
    """Sizes of a Whisper model, read from the checkpoint."""

    n_mels: int  # mel bins of the input (80, or 128 for large-v3)
    n_audio_ctx: int  # encoder positions per window (1500 = 3000 mel frames / 2 from the strided conv)
    n_audio_state: int  # encoder width
    n_audio_head: int
    n_audio_layer: int
    n_vocab: int  # 51864 English-only, 51865 multilingual, 51866 large-v3
    n_text_ctx: int  # decoder positions (448)
    n_text_state: int  # decoder width
    n_text_head: int
    n_text_layer: int

    def to_dict(self) -> dict[str, int]:
        return asdict(self)
