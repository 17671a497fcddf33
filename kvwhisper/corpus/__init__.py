"""Corpus transcription: a resumable job over many files, in this process or on a Ray cluster.

    summary = kvwhisper.corpus.run(["archive/", "more.csv"], "out", model="tiny.en", batch_size=8)
    summary = kvwhisper.corpus.run("archive/", "out", engine="ray", workers=4, address="10.0.0.1:6379")

Every file's transcripts go to ``out/<name>.<ext>`` (its path under the folder it was found in), written
whole; its row goes to ``out/results.jsonl`` (table.py). Run it again and it does only what is not done:
files whose source or settings changed, whose outputs are missing, or that a killed run did not finish.
"""

from .engines import EngineUnavailableError
from .inputs import AUDIO_EXTENSIONS, Entry, InputError, find_inputs
from .job import ENGINES, Summary, run
from .table import TABLE_NAME, CorpusLockedError, read_rows
from .work import JobSpec

__all__ = [
    "AUDIO_EXTENSIONS",
    "ENGINES",
    "TABLE_NAME",
    "CorpusLockedError",
    "EngineUnavailableError",
    "Entry",
    "InputError",
    "JobSpec",
    "Summary",
    "find_inputs",
    "read_rows",
    "run",
]
