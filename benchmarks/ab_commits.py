"""Two versions of kvwhisper side by side: long-form transcription, alternated round by round.

Speed changes of a few percent are lost in this machine's noise unless the two versions run in the same minutes.
This script checks out two git revisions into temporary worktrees (or takes two source folders) and
transcribes the long real-speech file with each, alternating, each run in a fresh subprocess that imports that
version. It reports the wall times, the per-round ratio a / b (> 1: b is faster) and whether the texts agree.

    python benchmarks/ab_commits.py HEAD~3 HEAD                 # greedy, 3 rounds
    python benchmarks/ab_commits.py HEAD~1 . --beam-size 5 --rounds 2
    python benchmarks/ab_commits.py /path/to/old/tree . --minutes 2

`.` is the working tree as it is (uncommitted changes included). Output: a table, benchmarks/out/ab_commits.json
and a final JSON line.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import common
import numpy as np

WORKER = """
import json, sys, time, torch
sys.path.insert(0, sys.argv[1])
import numpy as np
import kvwhisper
assert kvwhisper.__file__.startswith(sys.argv[1]), kvwhisper.__file__
torch.set_num_threads(int(sys.argv[4]))
audio = np.load(sys.argv[2])
beam = int(sys.argv[3])
options = dict(language="en", beam_size=beam if beam > 1 else None)
model = kvwhisper.load_model("tiny.en", device="cpu", dtype=sys.argv[5])
kvwhisper.transcribe(model, audio[: 16000 * 30], **options)  # warm-up
t0, c0 = time.perf_counter(), time.process_time()
text = kvwhisper.transcribe(model, audio, **options)["text"]
print(json.dumps({"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0, "text": text}))
"""


def source_tree(spec: str, tmp: Path, name: str) -> Path:
    """A folder holding a `kvwhisper` package: `spec` itself, the working tree (.), or a git revision."""
    path = Path(spec)
    if spec == ".":
        return common.REPO
    if (path / "kvwhisper" / "__init__.py").exists():
        return path.resolve()
    target = tmp / name
    subprocess.run(
        ["git", "-C", str(common.REPO), "worktree", "add", "-q", "--detach", str(target), spec], check=True
    )
    return target


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a", help="git revision or source folder (the baseline)")
    p.add_argument("b", help="git revision or source folder ('.' = the working tree)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--beam-size", type=int, default=1)
    p.add_argument("--dtype", default="fp32")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--minutes", type=float, default=10, help="length of the long file (default: 10)")
    args = p.parse_args(argv)

    common.require_speech()
    long = common.build_long_file(args.minutes)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        audio_path = tmp / "audio.npy"
        np.save(audio_path, common.read_wav(long.path))
        trees: dict[str, Path] = {}
        runs: dict[str, list[dict]] = {"a": [], "b": []}
        try:
            trees["a"] = source_tree(args.a, tmp, "a")
            trees["b"] = source_tree(args.b, tmp, "b")
            for r in range(args.rounds):
                for key, tree in trees.items():
                    cmd = [sys.executable, "-c", WORKER, str(tree), str(audio_path), str(args.beam_size)]
                    cmd += [str(args.threads), args.dtype]
                    out = subprocess.run(cmd, capture_output=True, text=True)
                    if out.returncode != 0:
                        common.log(out.stderr[-3000:])
                        raise SystemExit(f"the run of {key} ({tree}) failed")
                    runs[key].append(json.loads(out.stdout.strip().splitlines()[-1]))
                    common.log(f"round {r + 1}/{args.rounds} {key}: {runs[key][-1]['wall']:.2f} s")
        finally:
            for tree in trees.values():
                if tree.parent == tmp:  # a worktree made here
                    subprocess.run(
                        ["git", "-C", str(common.REPO), "worktree", "remove", "--force", str(tree)]
                    )

    ratios = [ra["wall"] / rb["wall"] for ra, rb in zip(runs["a"], runs["b"])]
    rows = [
        {
            "version": f"{key}: {spec}",
            "wall_s": common.median([x["wall"] for x in runs[key]]),
            "cpu_s": common.median([x["cpu"] for x in runs[key]]),
            "rounds": " / ".join(f"{x['wall']:.2f}" for x in runs[key]),
        }
        for key, spec in (("a", args.a), ("b", args.b))
    ]
    rows.append(
        {
            "version": "a / b (median of rounds)",
            "wall_s": common.median(ratios),
            "cpu_s": None,
            "rounds": " / ".join(f"{x:.3f}" for x in ratios),
        }
    )
    same = all(ra["text"] == rb["text"] for ra, rb in zip(runs["a"], runs["b"]))
    columns = [("version", "version", ""), ("wall_s", "wall s", ".3f"), ("cpu_s", "CPU s", ".2f")]
    columns.append(("rounds", "per round", ""))
    title = (
        f"kvwhisper a/b: {long.seconds / 60:.1f} min, {args.dtype}, beam {args.beam_size}, "
        f"{args.threads} threads; same text: {same}"
    )
    return common.report("ab_commits", title, rows, columns, common.OUT / "ab_commits.json")


if __name__ == "__main__":
    sys.exit(main())
