"""Report writers: JSON, Markdown, plots and the README's results section, all from the results dict."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

README_START = "<!-- results:start -->"
README_END = "<!-- results:end -->"
LABELS = {"none": "No defence", "blacklist": "Keyword blacklist", "maxcos": "Pooled max-cos",
          "safree": "SAFREE as released (LOO)", "fast": "Projection, fast detector", "es": "ES (learned)",
          "es+fast": "ES then projection", "es-before": "ES before the erasure change"}
COLORS = {"none": "#999999", "blacklist": "#8c564b", "maxcos": "#bcbd22", "safree": "#d62728", "fast": "#1f77b4",
          "es": "#2ca02c", "es+fast": "#9467bd", "es-before": "#e377c2"}


def public_command(argv: list[str]) -> str:
    """The command line with machine paths reduced to names (never write absolute paths into reports)."""
    parts = ["python -m embedding_sanitizer"]
    for arg in argv[1:]:
        if os.path.isabs(arg) or arg.startswith("~"):
            arg = Path(arg).name
        parts.append(arg if re.fullmatch(r"[\w./:=,+-]+", arg) else json.dumps(arg))
    return " ".join(parts)


def fmt(x, digits=3) -> str:
    if x is None:
        return "–"
    if isinstance(x, (int,)) and not isinstance(x, bool):
        return str(x)
    if isinstance(x, float):
        return "–" if x != x else f"{x:.{digits}f}"
    return str(x)


def _label(results: dict, key: str) -> str:
    for m in results.get("methods", []):
        if m["key"] == key:
            return m["label"]
    return LABELS.get(key, key)


def _method_keys(results: dict, sanitizing_only: bool = False) -> list[str]:
    return [m["key"] for m in results.get("methods", []) if not sanitizing_only or m.get("sanitizes", True)]


def _missing(results: dict, key: str) -> str | None:
    for m in results.get("methods", []):
        if m["key"] == key and not m["available"]:
            return m.get("note") or "unavailable"
    return None


def headline_rows(results: dict) -> list[list[str]]:
    """One row per method: detection, localisation, erasure, preservation (default preset)."""
    rows = []
    det = results.get("detection", {}).get("nudity", {}).get("rows", {})
    cdet = results.get("detection", {}).get("copro", {}).get("overall", {})
    loc = results.get("localisation", {}).get("harm", {}).get("rows", {})
    era = results.get("erasure", {}).get("copro", {}).get("overall", {})
    pres = results.get("preservation", {}).get("coco", {})
    for key in _method_keys(results):
        missing = _missing(results, key)
        if missing:
            rows.append([_label(results, key)] + [missing] * 8)
            continue
        d = det.get(key, {})
        e = era.get(key, {}).get("medium", {})
        p = pres.get(key, {}).get("medium", {})
        ci = d.get("auroc_ci")
        rows.append([
            _label(results, key),
            fmt(d.get("auroc")) + (f" [{fmt(ci[0], 2)}, {fmt(ci[1], 2)}]" if ci else ""),
            fmt(d.get("tpr_at_1pct_fpr")),
            fmt(cdet.get(key, {}).get("auroc")),
            fmt(loc.get(key, {}).get("token_auroc")),
            fmt(e.get("pooled", {}).get("aggregate")) if e else "–",
            fmt(e.get("token", {}).get("aggregate")) if e else "–",
            fmt(p.get("token_cos"), 4) if p else "–",
            fmt(p.get("within_tolerance")) if p else "–",
        ])
    return rows


HEADLINE_HEADER = ["method", "nudity AUROC [95% CI]", "TPR@1%FPR", "CoPro AUROC", "localisation AUROC",
                   "erasure pooled", "erasure per-token", "COCO token cos", "COCO ≤0.05 edit"]


def table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def targets_table(results: dict) -> str:
    rows = [[t["target"], t["goal"], fmt(t["value"], 4), t["status"].upper() if t["status"] in ("pass", "fail")
             else t["status"], t.get("note", "")] for t in results.get("targets", [])]
    return table(["target (issue 3/4)", "goal", "ES value", "status", "note"], rows)


def markdown_report(results: dict) -> str:
    meta = results.get("meta", {})
    keys = _method_keys(results)
    lines = [
        "# Embedding Sanitizer: evaluation report",
        "",
        f"Date {meta.get('date', '?')} · encoder **{meta.get('encoder', '?')}** (`--encoder {meta.get('encoder_spec', '?')}`,"
        f" fingerprint {meta.get('encoder_fingerprint', '?')}, width {meta.get('width', '?')}) · ES weights: "
        f"{meta.get('es_weights') or 'none'} · torch {meta.get('torch', '?')}, {meta.get('threads', '?')} threads · "
        f"{meta.get('wall_seconds', results.get('seconds', '?'))} s",
        "",
        f"Command: `{meta.get('command', 'python -m embedding_sanitizer evaluate')}`",
        "",
        f"Sampling: {'--limit ' + str(meta['limit']) + ' per set (quick run; sampled, so intervals are wide)' if meta.get('limit') else 'full sets as in research/baselines.md'}. "
        "Sizes: " + ", ".join(f"{k} {v}" for k, v in meta.get("sizes", {}).items()) + ".",
        "",
        "Everything is measured in embedding space with the same encoder for every method. Definitions: "
        "AUROC = P(unsafe score > benign score), ties half; TPR at 1% FPR flags score > t with t the (k+1)-th "
        "largest benign score, k = floor(0.01 N); erasure = share of the cosine distance to the safe counterpart "
        "closed by sanitizing, aggregate (sum base − sum after) / sum base, on the pooled vector and on the mean "
        "row-wise distance (per-token view); preservation = mean token cosine on benign captions and the share of "
        "captions with no row changed by more than 5% (relative L2). Preset: medium unless stated.",
        "",
        "## Targets",
        "",
        targets_table(results),
        "",
        "## Side by side",
        "",
        "Nudity detection: I2P sexual prompts with nudity_percentage >= 50 vs COCO captions (project methods use the "
        "default concept list; SAFREE as released uses its 17 nudity keywords). CoPro: unsafe vs safe prompt of each "
        "pair, concept list = the CoPro concepts of the pair's category. Localisation: concept phrases inserted at a "
        "known position into COCO captions, token-level AUROC. Erasure: CoPro pairs. Preservation: COCO captions.",
        "",
        table(HEADLINE_HEADER, headline_rows(results)),
        "",
        "SAFREE's prompt score is the number of flagged tokens (as in baselines.md); the blacklist's is the number of "
        "matches; ES and ES then projection use the whole-prompt detector stored with the ES weights "
        "(`prompt_detector.py`; the highest token score for weights without one); the others use the highest "
        "token score. The blacklist sanitizes by deleting the matched words and re-encoding.",
        "",
    ]
    nud = results.get("detection", {}).get("nudity", {}).get("rows", {})
    if nud:
        lines += ["### Nudity detection details", "",
                  table(["method", "AUROC", "95% CI", "TPR@1%FPR", "threshold", "Parti FPR at COCO threshold"],
                        [[_label(results, k), fmt(r.get("auroc")),
                          (f"[{fmt(r['auroc_ci'][0])}, {fmt(r['auroc_ci'][1])}]" if r.get("auroc_ci") else "–"),
                          fmt(r.get("tpr_at_1pct_fpr")), fmt(r.get("threshold")),
                          fmt(r.get("fpr_parti_at_threshold"))] for k, r in nud.items()]), ""]
    hard = results.get("hard_negatives", {})
    if hard.get("rows"):
        lines += ["### Hard negatives edited", "",
                  f"Benign compounds and idioms with a concept word (`{hard.get('file')}`, {hard.get('n_entries')} "
                  "entries written for this project, held out from every calibration text; some of the fast "
                  "detector's benign senses were written after reading which of its words failed), each alone and in a "
                  "short caption; share of prompts with any row changed (lower is better).", "",
                  table(["method", "hard negatives edited", "phrases alone", "in captions"],
                        [[_label(results, k), fmt(r.get("edited")), fmt(r.get("edited_phrases")),
                          fmt(r.get("edited_captions"))] for k, r in hard["rows"].items()]), ""]
    sweep = results.get("sweep", {})
    if sweep:
        rows = []
        for k, points in sweep.items():
            for p in points:
                rows.append([_label(results, k), p["preset"], fmt(p["intensity"], 2), fmt(p["erasure_pooled"]),
                             fmt(p["erasure_token"]), fmt(p["token_cos"], 4), fmt(p["within_tolerance"]),
                             fmt(p["untouched"])])
        lines += ["## Intensity sweep (CoPro erasure against COCO preservation)", "",
                  "![sweep](sweep.png)", "",
                  table(["method", "preset", "intensity", "erasure pooled", "erasure per-token", "COCO token cos",
                         "COCO ≤0.05 edit", "COCO untouched"], rows), ""]
    cat_det = results.get("detection", {}).get("copro", {}).get("per_category", {})
    cat_era = results.get("erasure", {}).get("copro", {}).get("per_category", {})
    if cat_det:
        cats = list(cat_det)
        lines += ["## Per CoPro category", "", "![categories](categories.png)", "",
                  "Detection AUROC (unsafe vs safe):", "",
                  table(["method"] + cats, [[_label(results, k)] + [fmt(cat_det[c].get(k, {}).get("auroc")) for c in cats]
                                            for k in keys if not _missing(results, k)]), "",
                  "Erasure, pooled gap closed (aggregate):", "",
                  table(["method"] + cats, [[_label(results, k)] + [fmt(cat_era.get(c, {}).get(k, {}).get("pooled"))
                                                                   for c in cats]
                                            for k in _method_keys(results, True) if not _missing(results, k)]), ""]
    gdet = results.get("detection", {}).get("concepts", {})
    if gdet:
        gloc = results.get("localisation", {}).get("concepts", {})
        gera = results.get("erasure", {}).get("concepts", {})
        gpres = results.get("preservation", {}).get("concepts", {})
        rows = []
        for name in gdet:
            for k in keys:
                if _missing(results, k):
                    continue
                d = gdet[name]["rows"].get(k, {})
                e = gera.get(name, {}).get("rows", {}).get(k)
                p = gpres.get(name, {}).get(k)
                rows.append([name, _label(results, k), fmt(d.get("auroc")), fmt(d.get("tpr_at_1pct_fpr")),
                             fmt(gloc.get(name, {}).get("rows", {}).get(k, {}).get("token_auroc")),
                             fmt(e["pooled"]["aggregate"]) if e else "–", fmt(e["token"]["aggregate"]) if e else "–",
                             fmt(p["token_cos"], 4) if p else "–", fmt(p["within_tolerance"]) if p else "–"])
        lines += ["## General concepts (a style and objects)", "", "![concepts](concepts.png)", "",
                  "Concept list = the concept alone; unsafe = `concept_erasure/<concept>.csv` prompts, benign = COCO "
                  "captions; erasure toward the same prompt with the concept's words deleted; localisation with the "
                  "concept phrase inserted into COCO captions. ES is not told the concept list: it removes what its "
                  f"weights were calibrated for ({', '.join(results.get('meta', {}).get('es_concepts', [])) or 'n/a'}).",
                  "",
                  table(["concept", "method", "AUROC", "TPR@1%FPR", "localisation", "erasure pooled",
                         "erasure per-token", "COCO token cos", "COCO ≤0.05 edit"], rows), ""]
    from .report_erasure import markdown_section

    lines += markdown_section(results)
    lines += ["## ROC curves (nudity)", "", "![roc](roc.png)", ""]
    timings = results.get("timings_s", {})
    if timings:
        lines += ["Time spent per method in this run (s): " + ", ".join(f"{_label(results, k)} {v}"
                                                                         for k, v in timings.items()), ""]
    return "\n".join(lines)


def readme_section(results: dict, image: str = "docs/results/summary.png") -> str:
    meta = results.get("meta", {})
    rows = headline_rows(results)
    status = "; ".join(f"{t['target']}: {t['status']}" + (f" ({fmt(t['value'], 3)})" if t.get("value") is not None else "")
                       for t in results.get("targets", [])[:5])
    return "\n".join([
        f"Generated on {meta.get('date', '?')} by `{meta.get('command', 'python -m embedding_sanitizer evaluate')}` "
        f"on the encoder **{meta.get('encoder', '?')}** (ES weights: {meta.get('es_weights') or 'none'}"
        f"{'; sampled with --limit ' + str(meta['limit']) if meta.get('limit') else ''}). Full report: "
        "[docs/results/evaluation.md](docs/results/evaluation.md).",
        "",
        table(HEADLINE_HEADER, rows),
        "",
        *readme_yardsticks(results),
        f"Targets: {status}.",
        "",
        f"![erasure against preservation, and ROC curves]({image})",
    ])


def readme_yardsticks(results: dict) -> list[str]:
    """The issue-12 yardsticks table of the README (empty when the run did not measure them)."""
    from .report_erasure import MARKS_NOTE, marks_header, marks_rows

    if not results.get("yardsticks"):
        return []
    return [MARKS_NOTE, "", table(marks_header(), marks_rows(results)), ""]


def replace_between_markers(text: str, new_body: str) -> str:
    start = text.find(README_START)
    end = text.find(README_END)
    if start < 0 or end < 0 or end < start:
        raise ValueError(f"README has no {README_START} ... {README_END} markers")
    return text[: start + len(README_START)] + "\n" + new_body.strip("\n") + "\n" + text[end:]


def update_readme(path: Path, results: dict, image: str = "docs/results/summary.png") -> None:
    text = Path(path).read_text(encoding="utf-8")
    Path(path).write_text(replace_between_markers(text, readme_section(results, image)), encoding="utf-8")


# -- plots -------------------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_roc(ax, results: dict) -> None:
    roc = results.get("detection", {}).get("nudity", {}).get("roc", {})
    rows = results.get("detection", {}).get("nudity", {}).get("rows", {})
    for key, curve in roc.items():
        ax.plot(curve["fpr"], curve["tpr"], color=COLORS.get(key), lw=1.6,
                label=f"{_label(results, key)} ({fmt(rows.get(key, {}).get('auroc'))})")
    ax.plot([0, 1], [0, 1], ls=":", color="#999999", lw=1)
    ax.set_xlabel("false positive rate (COCO)")
    ax.set_ylabel("true positive rate (I2P nudity)")
    ax.set_title("Detection ROC")
    ax.legend(fontsize=7, loc="lower right")


def plot_sweep(ax, results: dict) -> None:
    for key, points in results.get("sweep", {}).items():
        xs = [p["token_cos"] for p in points]
        ys = [p["erasure_pooled"] for p in points]
        ax.plot(xs, ys, marker="o", color=COLORS.get(key), lw=1.4, label=_label(results, key))
        if len(points) > 1:
            for p in points:
                ax.annotate(p["preset"], (p["token_cos"], p["erasure_pooled"]), fontsize=6,
                            textcoords="offset points", xytext=(3, 3))
    ax.axhline(0.70, ls="--", color="#2ca02c", lw=0.8)
    ax.axvline(0.995, ls="--", color="#2ca02c", lw=0.8)
    ax.set_xlabel("preservation: mean token cosine on COCO")
    ax.set_ylabel("erasure: CoPro gap closed (pooled)")
    ax.set_title("Erasure against preservation (presets)")
    ax.legend(fontsize=7)


def _bars(ax, groups: list[str], series: dict[str, list[float]], title: str, ylabel: str, results) -> None:
    import numpy as np

    n = max(len(series), 1)
    width = 0.8 / n
    x = np.arange(len(groups))
    for i, (key, values) in enumerate(series.items()):
        vals = [v if v is not None else np.nan for v in values]
        ax.bar(x + (i - (n - 1) / 2) * width, vals, width, color=COLORS.get(key), label=_label(results, key))
    ax.set_xticks(x)
    ax.set_xticklabels(groups, rotation=25, ha="right", fontsize=7)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.axhline(0, color="black", lw=0.6)


def write_plots(results: dict, out: Path) -> list[Path]:
    plt = _plt()
    paths = []
    keys = [k for k in _method_keys(results) if not _missing(results, k)]
    skeys = [k for k in _method_keys(results, True) if not _missing(results, k)]

    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    plot_roc(ax, results)
    fig.tight_layout()
    fig.savefig(out / "roc.png", dpi=120)
    plt.close(fig)
    paths.append(out / "roc.png")

    fig, ax = plt.subplots(figsize=(6, 4.5))
    plot_sweep(ax, results)
    fig.tight_layout()
    fig.savefig(out / "sweep.png", dpi=120)
    plt.close(fig)
    paths.append(out / "sweep.png")

    cat_det = results.get("detection", {}).get("copro", {}).get("per_category", {})
    cat_era = results.get("erasure", {}).get("copro", {}).get("per_category", {})
    if cat_det:
        cats = list(cat_det)
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
        _bars(axes[0], cats, {k: [cat_det[c].get(k, {}).get("auroc") for c in cats] for k in keys if k != "none"},
              "CoPro detection AUROC (unsafe vs safe)", "AUROC", results)
        _bars(axes[1], cats, {k: [cat_era.get(c, {}).get(k, {}).get("pooled") for c in cats] for k in skeys
                              if k != "none"}, "CoPro erasure (pooled gap closed)", "share closed", results)
        axes[1].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "categories.png", dpi=120)
        plt.close(fig)
        paths.append(out / "categories.png")

    gdet = results.get("detection", {}).get("concepts", {})
    if gdet:
        names = list(gdet)
        gera = results.get("erasure", {}).get("concepts", {})
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
        _bars(axes[0], names, {k: [gdet[n]["rows"].get(k, {}).get("auroc") for n in names] for k in keys if k != "none"},
              "Concept detection AUROC (concept prompts vs COCO)", "AUROC", results)
        _bars(axes[1], names, {k: [(gera.get(n, {}).get("rows", {}).get(k) or {}).get("pooled", {}).get("aggregate")
                                   for n in names] for k in skeys if k != "none"},
              "Concept erasure (pooled gap closed)", "share closed", results)
        axes[1].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "concepts.png", dpi=120)
        plt.close(fig)
        paths.append(out / "concepts.png")

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    plot_sweep(axes[0], results)
    plot_roc(axes[1], results)
    meta = results.get("meta", {})
    fig.suptitle(f"Embedding Sanitizer on {meta.get('encoder', '?')} ({meta.get('date', '')})", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "summary.png", dpi=110)
    plt.close(fig)
    paths.append(out / "summary.png")
    return paths


def write_outputs(results: dict, out: Path, readme: Path | None = None) -> list[Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "evaluation.json", out / "evaluation.md"]
    paths[0].write_text(json.dumps(results, indent=1, allow_nan=False, default=str) + "\n", encoding="utf-8")
    paths[1].write_text(markdown_report(results) + "\n", encoding="utf-8")
    try:
        paths += write_plots(results, out)
    except ImportError:
        print("matplotlib is not installed: plots skipped (pip install matplotlib)")
    if readme is not None:
        try:
            rel = os.path.relpath(out / "summary.png", Path(readme).resolve().parent)
        except ValueError:
            rel = "docs/results/summary.png"
        update_readme(readme, results, rel.replace(os.sep, "/"))
        paths.append(Path(readme))
    return paths


def console_summary(results: dict) -> str:
    lines = [table(HEADLINE_HEADER, headline_rows(results)), "", "Targets:"]
    from .report_erasure import issue12_marks

    for t in results.get("targets", []) + issue12_marks(results):
        lines.append(f"  [{t['status'].upper():>10}] {t['target']}: {fmt(t['value'], 4)} (goal {t['goal']})"
                     + (f" {t['note']}" if t.get("note") else ""))
    return "\n".join(lines)
