"""Option checks that run before any model is loaded or file read: each problem is a UsageError
``--option-name: what is wrong`` (exit status 2), from the library's own checks (OptionError) where there
are some, so the command line and the API say the same thing."""

from __future__ import annotations

import os
from pathlib import Path

from . import UsageError

WORD_OPTIONS = ("highlight_words", "max_line_count", "max_line_width", "max_words_per_line")


def flag(option: str) -> str:
    """The command-line spelling of an option name: beam_size -> --beam-size."""
    return "--" + option.replace("_", "-")


def usage_error(e) -> UsageError:
    """An OptionError as the command line reports it."""
    return UsageError(f"{flag(e.option)}: {e.reason}")


def check_model(name: str) -> None:
    from ..model.registry import ALIASES, MODELS, available_models

    if name in MODELS or name in ALIASES or Path(name).expanduser().exists():
        return
    raise UsageError(
        f"--model: {name!r} is neither a model name ({', '.join(available_models())}) nor an existing "
        "file or folder"
    )


def check_device(device: str | None) -> None:
    import torch

    if device is None:
        return
    try:
        torch.device(device)
    except (RuntimeError, ValueError):
        raise UsageError(f"--device: {device!r} is not a device (cpu, cuda, cuda:1, ...)") from None


def check_language(language: str | None) -> None:
    from ..tokenizer import normalize_language

    if language is None:
        return
    try:
        normalize_language(language)
    except ValueError:
        raise UsageError(
            f"--language: {language!r} is not a language code or English name (en, fr, English, French, ...)"
        ) from None


def check_output_file(option: str, path: str | None) -> None:
    """A file to write (--json, --plot): its folder must exist, and it must not be a folder."""
    if path is None:
        return
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UsageError(f"{option}: the folder {folder} of {path} does not exist")
    if os.path.isdir(path):
        raise UsageError(f"{option}: {path} is a folder, not a file")


def check_count(option: str, value: int | None, low: int = 1) -> None:
    if value is not None and value < low:
        raise UsageError(f"{option}: must be >= {low}, not {value}")


def check_word_options(args) -> None:
    """The subtitle options need word timestamps (as the reference's CLI); lines and words are counts."""
    if not args.word_timestamps:
        for option in WORD_OPTIONS:
            if getattr(args, option):
                raise UsageError(f"{flag(option)}: requires --word-timestamps True")
        if args.hallucination_silence_threshold is not None:
            raise UsageError("--hallucination-silence-threshold: requires --word-timestamps True")
    for option in ("max_line_width", "max_line_count", "max_words_per_line"):
        check_count(flag(option), getattr(args, option))


def dtype(args) -> str | None:
    """--dtype, or fp32 with --fp16 False (the reference's way of asking for fp32 on a GPU)."""
    if args.fp16 is False:
        if args.dtype in ("fp16", "bf16", "int8"):
            raise UsageError(f"--fp16: False contradicts --dtype {args.dtype}")
        return "fp32"
    return args.dtype


def check_transcribe_args(args, temperatures, decode_options: dict, transcribe_options: dict) -> None:
    """Every transcribe option, before anything is loaded."""
    from ..decoding import OptionError
    from ..transcribe.checks import check_transcribe_options

    check_model(args.model)
    check_device(args.device)
    dtype(args)
    check_count("--threads", args.threads, 0)
    check_count("--batch-size", args.batch_size, 1)
    if args.split and not args.batch_size:
        raise UsageError("--split: requires --batch-size")
    check_language(args.language)
    check_word_options(args)
    check_vad(args)
    try:
        check_transcribe_options(decode_options, temperatures, **transcribe_options)
    except OptionError as e:
        raise usage_error(e) from None


def verify_for_model(model, temperatures, decode_options: dict) -> None:
    """The checks that need the model (its vocabulary, its languages), right after it is loaded."""
    from ..decoding import DecodingOptions, OptionError, verify_options
    from ..transcribe.checks import options_at

    options = DecodingOptions(**decode_options)
    try:
        for t in temperatures:
            verify_options(options_at(options, float(t)), model)
    except OptionError as e:
        raise usage_error(e) from None


# -- voice activity detection --------------------------------------------------------------------------------
VAD_FLAGS = {  # VadOptions field -> (flag, type)
    "threshold": ("--vad-threshold", float),
    "neg_threshold": ("--vad-neg-threshold", float),
    "min_speech_duration_ms": ("--vad-min-speech-duration-ms", int),
    "max_speech_duration_s": ("--vad-max-speech-duration-s", float),
    "min_silence_duration_ms": ("--vad-min-silence-duration-ms", int),
    "speech_pad_ms": ("--vad-speech-pad-ms", int),
}


def add_vad_arguments(p) -> None:
    """The VadOptions fields as --vad-* options (default: VadOptions' own defaults)."""
    from ..audio.vad import VadOptions

    defaults = VadOptions()
    for field, (flag, kind) in VAD_FLAGS.items():
        p.add_argument(
            flag, type=kind, default=None, help=f"VAD {field} (default {getattr(defaults, field)})"
        )


def vad_parameters(args) -> dict:
    """The --vad-* options given, as transcribe()'s vad_parameters."""
    return {
        field: getattr(args, flag[2:].replace("-", "_"))
        for field, (flag, _) in VAD_FLAGS.items()
        if getattr(args, flag[2:].replace("-", "_"), None) is not None
    }


def check_vad(args) -> None:
    """The --vad-* values (UsageError naming the flag); they are checked whether or not --vad-filter is on."""
    from ..audio.vad import VadOptions

    try:
        VadOptions.from_parameters(vad_parameters(args))
    except ValueError as e:
        field = next((f for f in VAD_FLAGS if f"vad {f} " in str(e)), None)
        flag = VAD_FLAGS[field][0] if field else "--vad-*"
        raise UsageError(f"{flag}: {e}") from None
