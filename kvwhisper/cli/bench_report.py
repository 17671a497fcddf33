"""`kvwhisper bench` output: the Markdown tables, the final JSON line and the latency plot."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path


def format_table(rows: list[dict], columns: Sequence[tuple[str, str, str]]) -> str:
    """A Markdown table: columns are (key, header, format spec); None and missing values print as '-'."""

    def cell(row, key, spec):
        v = row.get(key)
        if v is None:
            return "-"
        return format(v, spec) if spec else str(v)

    lines = ["| " + " | ".join(h for _, h, _ in columns) + " |"]
    lines.append("|" + "|".join("---" if not spec else "---:" for _, _, spec in columns) + "|")
    for row in rows:
        lines.append("| " + " | ".join(cell(row, k, s) for k, _, s in columns) + " |")
    return "\n".join(lines)


def _config_label(entry: dict) -> str:
    return f"{entry['dtype']} beam {entry['beam_size']} w{entry['window']}"


def _results_table(report: dict) -> str:
    """One row per (dtype, beam size, window, mode): the encoder, the set-up, steps and cumulative times."""
    ms = report["milestones"]
    rows = []
    for e in report["results"]:
        row = {
            "config": _config_label(e),
            "mode": e["mode"],
            "enc": 1000 * e["encoder_s"],
            "start": 1000 * e["start_s"],
            "first": e["step_ms"][0],
            "step": e["step_ms_median"],
            "last": e["step_ms"][-1],
            "total": e["total_s"],
            "natural": e.get("natural_s"),
            "ntok": e.get("natural_tokens"),
        }
        for k in ms:
            row[f"t{k}"] = e["cumulative_s"].get(str(k))
        rows.append(row)
    cols = [
        ("config", "config", ""),
        ("mode", "cache", ""),
        ("enc", "encoder ms", ".0f"),
        ("start", "setup ms", ".1f"),
        ("first", "step 0 ms", ".1f"),
        ("step", "median step ms", ".1f"),
        ("last", "last step ms", ".1f"),
        *[(f"t{k}", f"to {k} tok s", ".3f") for k in ms],
        ("total", f"{report['sample_len']} steps s", ".3f"),
        ("natural", "natural decode s", ".3f"),
        ("ntok", "natural tokens", ""),
    ]
    return format_table(rows, cols)


def _speedups_table(report: dict) -> str:
    """One row per comparison of "full" with another mode: the ratios at each milestone and overall."""
    ms = report["milestones"]
    rows = []
    for s in report["speedups"]:
        row = {"config": _config_label(s), "vs": s["vs"]}
        for k in ms:
            row[f"x{k}"] = s["at"].get(str(k))
        row["xall"] = s["at"].get(str(report["sample_len"]))
        row["xnat"] = s.get("natural")
        rows.append(row)
    cols = [
        ("config", "config", ""),
        ("vs", "full is faster than", ""),
        *[(f"x{k}", f"x at {k} tok", ".2f") for k in ms],
        ("xall", f"x at {report['sample_len']} tok", ".2f"),
        ("xnat", "x natural decode", ".2f"),
    ]
    return format_table(rows, cols)


def _breakdown_columns(report: dict, names: list[str]) -> list[dict]:
    """Per breakdown (dtype, beam size): its label, the whole step, the encoder, each part and its share."""
    columns = []
    for bd in report["breakdown"]:
        column = {
            "config": f"{bd['dtype']} beam {bd['beam_size']}",
            "step": bd["step_ms"],
            "enc": bd["encoder_ms"],
        }
        for n in names:
            v = bd["parts_ms"].get(n)
            column[n] = v
            column[n + "%"] = 100 * v / bd["step_ms"] if v is not None and bd["step_ms"] else None
        columns.append(column)
    return columns


def _breakdown_table(report: dict) -> str:
    """The parts of a cached step down the side, one column per (dtype, beam size), the encoder last."""
    names = list(report["breakdown"][0]["parts_ms"])
    columns = _breakdown_columns(report, names)
    cols = [("config", "part of a cached step (ms, % of step)", "")] + [
        (c["config"], c["config"], "") for c in columns
    ]
    rows = []
    for n in [*names, "step"]:
        line = {"config": n if n != "step" else "whole step"}
        for c in columns:
            v = c[n]
            pct = c.get(n + "%")
            line[c["config"]] = f"{v:.2f}" + (f" ({pct:.0f}%)" if pct is not None else "")
        rows.append(line)
    enc = {"config": "encoder, once per window"}
    for c in columns:
        enc[c["config"]] = f"{c['enc']:.0f}"
    rows.append(enc)
    return format_table(rows, cols)


def format_report(report: dict) -> str:
    """The stdout report: a heading line, the timings table, then the speed-ups and the breakdown if any."""
    machine = report["machine"]
    parts = [
        f"kvwhisper bench: {report['model']} on {report['device']} ({machine['cpu']}, "
        f"{machine['torch_threads']} threads), {report['runs']} runs, median; {report['file']}",
        "",
        _results_table(report),
    ]
    if report["speedups"]:
        parts += [
            "",
            "Speed-up of the full cache (time of the other mode / time of full):",
            "",
            _speedups_table(report),
        ]
    if report["breakdown"]:
        parts += ["", "Where a cached (full) step's time goes:", "", _breakdown_table(report)]
    return "\n".join(parts)


def summary_line(report: dict, json_path: Path | None = None, png_path: Path | None = None) -> dict:
    """The last line: speed-ups of full over none / self_only at each milestone, per dtype and beam size."""
    out = {"benchmark": "kv_cache", "model": report["model"], "device": report["device"]}
    for s in report["speedups"]:
        key = f"{s['dtype']}_beam{s['beam_size']}_w{s['window']}_full_vs_{s['vs']}"
        out[key] = {k: (round(v, 2) if v else None) for k, v in s["at"].items()}
    for e in report["results"]:
        if e["mode"] == "full":
            out[f"{e['dtype']}_beam{e['beam_size']}_w{e['window']}_full_step_ms"] = round(
                e["step_ms_median"], 2
            )
    if json_path:
        out["json"] = str(json_path)
    if png_path:
        out["png"] = str(png_path)
    return out


def plot_latency(report: dict, path: Path) -> Path:
    """Per-step latency against tokens generated, one line per cache mode; one panel per dtype x beam size."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    panels = list(dict.fromkeys((e["dtype"], e["beam_size"]) for e in report["results"]))
    dtypes = list(dict.fromkeys(p[0] for p in panels))
    beams = list(dict.fromkeys(p[1] for p in panels))
    fig = Figure(figsize=(5.5 * len(beams), 3.8 * len(dtypes)), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(dtypes), len(beams), squeeze=False, sharex=True)
    colors = {"full": "tab:green", "self_only": "tab:orange", "none": "tab:red"}
    for i, dt in enumerate(dtypes):
        for j, b in enumerate(beams):
            ax = axes[i][j]
            for mode in dict.fromkeys(e["mode"] for e in report["results"]):
                curves = [
                    e["step_ms"]
                    for e in report["results"]
                    if (e["dtype"], e["beam_size"], e["mode"]) == (dt, b, mode)
                ]
                if not curves:
                    continue
                n = min(len(c) for c in curves)
                y = [statistics.median(c[k] for c in curves) for k in range(n)]
                ax.plot(range(n), y, label=mode, color=colors.get(mode), linewidth=1.2)
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if str(v)[0] in "25" else ""))
            ax.set_title(f"{report['model']} {dt}, " + ("greedy" if b == 1 else f"beam {b}"), fontsize=10)
            ax.set_xlabel("tokens generated before the step")
            ax.set_ylabel("ms per step (median)")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
    fig.suptitle(
        f"decode step latency by KV-cache mode ({report['device']}, {report['machine']['torch_threads']} threads)",
        fontsize=11,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
