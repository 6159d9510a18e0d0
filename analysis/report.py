"""One self-contained HTML report per sweep: claim checks, tables, figures, configs, versions.

Figures are embedded as base64 PNGs, so the file can be mailed or opened from an MLflow
artifact without anything next to it. The report is written to ``<out>/report.html`` and,
for an MLflow source, logged to the sweep's parent run under ``analysis/report.html``.
Grad-CAM and t-SNE need the trials' checkpoints (the Tune storage folder); without them
those sections say why they are empty and the rest of the report is unaffected.

    python -m analysis.report --experiment grid_patch_sizes-shapes [--metric probe_acc] [--no-log]
"""

from __future__ import annotations

import datetime
import html
import math
import sys
import time

import pandas as pd

from analysis import cli
from analysis.claims import claim_checks, verdict_counts
from analysis.correlate import correlation_table, formatted, scatter_figure
from analysis.drops import (
    FLOOR_NOTE,
    MEASURES,
    NO_FLOOR,
    accuracy_summary,
    drop_figure,
    drop_summary,
    spread_note,
    wide,
)
from analysis.dynamics import HISTORY_KEYS, dynamics_figure, dynamics_frame
from analysis.frame import UNTRAINED, AnalysisError, annotate, constant_config
from trainables.metrics import ECE, KNN_ACC, PROBE_ACC, UNIFORMITY

STYLE = """body{font:14px/1.45 system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.6em 0;font-size:12.5px}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%;display:block;margin:.5em 0}
.PASS{background:#d8f5d0}.FAIL{background:#f8d0d0}.INCONCLUSIVE{background:#f4f0d8}.note{color:#555;font-size:12.5px}
h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}code{background:#f4f4f4;padding:0 3px}"""
TRIAL_COLUMNS = [
    "arm",
    "method",
    "corruption",
    "seed",
    "optim.epochs",
    KNN_ACC,
    PROBE_ACC,
    UNIFORMITY,
    ECE,
    "alignment",
    "n_test",
    "train_time_s",
    "status",
    "run_id",
]


def table_html(df: pd.DataFrame, index: bool = False, digits: int = 3) -> str:
    """A DataFrame as an HTML table (values escaped, floats rounded)."""
    return df.to_html(index=index, escape=True, na_rep="–", border=0, float_format=lambda v: f"{v:.{digits}g}")


def figure_html(png: bytes | None, caption: str) -> str:
    """An embedded PNG with a caption, or the caption alone when there is no figure."""
    from analysis.figures import data_uri

    img = f'<img src="{data_uri(png)}" alt="{html.escape(caption)}">' if png else ""
    return f'{img}<p class="note">{html.escape(caption)}</p>'


def claims_html(table: pd.DataFrame) -> str:
    """The claim checks, one coloured row per check."""
    head = "".join(
        f"<th>{h}</th>" for h in ("verdict", "id", "claim", "effect [95% interval]", "interval", "missing", "paper")
    )
    rows = []
    for _, r in table.iterrows():
        effect = "" if math.isnan(r["effect"]) else f"{r['effect']:+.3g} {r['unit']}"
        if not math.isnan(r["low"]):
            effect += f" [{r['low']:+.3g}, {r['high']:+.3g}]"
        cells = [r["verdict"], r["id"], r["claim"], effect, r["interval"], r["missing"], r["paper"]]
        rows.append(
            f'<tr class="{r["verdict"]}">' + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>"
        )
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def section(title: str, *parts: str) -> str:
    return f"<h2>{html.escape(title)}</h2>\n" + "\n".join(parts)


def note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def accuracy_sections(df: pd.DataFrame, metrics: list[str]) -> list[str]:
    """Per metric: the accuracy table, the study's drop table and its grouped bar chart, then the
    floor-corrected drop table (the secondary measure)."""
    from analysis.figures import png_bytes

    out = []
    for metric in metrics:
        acc, drops = accuracy_summary(df, metric), drop_summary(df, metric)
        parts = [f"<h3>{metric}: accuracy (%)</h3>", table_html(wide(acc), index=True), note(spread_note(acc))]
        if not drops.empty:
            floors = drop_summary(df, metric, "floor_drop")
            parts += [
                f"<h3>{metric}: relative drop vs ori (%), 100 (A_ori − A_c) / A_ori</h3>",
                table_html(wide(drops), index=True),
                note(spread_note(drops)),
                figure_html(
                    png_bytes(drop_figure(drops, metric)), f"Relative drop of {metric}; error bars: the table's spread."
                ),
                f"<h3>{metric}: {MEASURES['floor_drop'][0].lower()}{MEASURES['floor_drop'][1:]}</h3>",
            ]
            parts += (
                [table_html(wide(floors), index=True), note(f"{spread_note(floors, reference=False)} {FLOOR_NOTE}")]
                if not floors.empty
                else [note(NO_FLOOR)]
            )
        out.append(section(f"Accuracy and drop ({metric})", *parts))
    return out


def geometry_sections(df: pd.DataFrame, history: pd.DataFrame | None, metric: str) -> list[str]:
    """Uniformity/ECE vs accuracy (table + scatter) and feature geometry over training."""
    from analysis.figures import png_bytes

    corr = correlation_table(df, metric)
    dyn = dynamics_frame(df, history)
    corruptions = [c for c in dict.fromkeys(["ori", *sorted(set(dyn["corruption"]))]) if c in set(dyn["corruption"])]
    dyn_figs = [
        figure_html(
            png_bytes(dynamics_figure(dyn, c)),
            f"Feature geometry over training on {c} "
            "(epoch 0 = the untrained reference; between it and the end, the evaluations every eval.eval_every epochs).",
        )
        for c in corruptions[:2]
    ]
    return [
        section(
            "Uniformity and ECE vs accuracy",
            table_html(formatted(corr)),
            note(
                "Spearman/Pearson r [95% bootstrap interval]; one point per trained trial; "
                "ori counts in every family; 'all (within method)' centres each method."
            ),
            figure_html(png_bytes(scatter_figure(df, metric)), f"{metric} vs uniformity / ECE, per family."),
        ),
        section("Training dynamics (Figure A.1)", *dyn_figs or [note("no trained trial with geometry metrics")]),
    ]


def inspection_sections(df: pd.DataFrame) -> list[str]:
    """Grad-CAM (per trained method, its global-shuffle trial if any) and t-SNE of showcase
    trials; they need checkpoints, and a missing one becomes a note."""
    from analysis import gradcam, tsne
    from analysis.figures import png_bytes
    from analysis.trial_model import showcase

    picks = showcase(df)
    corrupted = picks[(picks["corruption"] != "ori") & (picks["arm"] != UNTRAINED)]
    first = corrupted.assign(_g=corrupted["family"] != "global").sort_values("_g", kind="stable").groupby("arm").head(1)
    cams = []
    for _, row in first.loc[[i for i in corrupted.index if i in first.index]].iterrows():
        try:
            cams.append(
                figure_html(
                    png_bytes(gradcam.figure_for(row)),
                    f"Grad-CAM: {row['arm']} trained on {row['corruption']}, "
                    "clean and corrupted test images (prototype-cosine score of the predicted class).",
                )
            )
        except AnalysisError as err:
            cams.append(note(f"Grad-CAM of {row['arm']} {row['corruption']}: {err}"))
    try:
        panels = [tsne.trial_panel(row) for _, row in picks.head(12).iterrows()]
        tsne_part = figure_html(
            png_bytes(tsne.tsne_figure(panels)), "t-SNE of test features (eval corruption), coloured by class."
        )
    except AnalysisError as err:
        tsne_part = note(f"t-SNE: {err}")
    return [
        section("Grad-CAM (Figures B.1-B.2)", *cams or [note("no corrupted trial to show")]),
        section("t-SNE of evaluation features", tsne_part),
    ]


def header(info: dict, all_trials: pd.DataFrame, experiment: str, seconds: float) -> str:
    tags = info.get("tags", {})
    statuses = all_trials["status"].value_counts().to_dict() if "status" in all_trials else {}
    wall = f"{info['wall_s']:.0f} s" if info.get("wall_s") else "unknown"
    facts = {
        "experiment": experiment,
        "sweep": tags.get("sweep_name", "?"),
        "dataset": tags.get("dataset", "?"),
        "parent run": info.get("parent_run_id") or "–",
        "trials": ", ".join(f"{v} {k}" for k, v in statuses.items()),
        "sweep wall time": wall,
        "code": f"{tags.get('git_sha', '?')[:12]} (dirty: {tags.get('git_dirty', '?')})",
        "report": f"{datetime.datetime.now().isoformat(timespec='seconds')}, built in {seconds:.0f} s",
    }
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in facts.items())
    return f"<h1>Sweep report: {html.escape(experiment)}</h1><table>{rows}</table>"


def config_section(df: pd.DataFrame, info: dict) -> str:
    shared = constant_config(df)
    varying = sorted(
        c
        for c in df.columns
        if c.startswith(("data.", "model.", "optim.", "eval.", "system.", "method")) and c not in shared
    )
    versions = {k: v for k, v in info.get("tags", {}).items() if k.startswith(("version.", "git_"))}
    trials = annotate(df)
    trials = trials[[c for c in TRIAL_COLUMNS if c in trials]]
    return section(
        "Configuration and versions",
        "<h3>Shared by every trial</h3>",
        table_html(pd.DataFrame(shared.items(), columns=["key", "value"])),
        note("varying: " + (", ".join(varying) or "nothing")),
        "<h3>Versions</h3>",
        table_html(pd.DataFrame(versions.items(), columns=["library", "version"])),
        "<h3>Trials</h3>",
        table_html(trials.sort_values(["arm", "corruption", "seed"])),
    )


def render(
    df: pd.DataFrame,
    all_trials: pd.DataFrame,
    info: dict,
    experiment: str,
    metric: str,
    history: pd.DataFrame | None = None,
    inspect: bool = True,
    started: float | None = None,
) -> str:
    """The whole report as one HTML string (see the module docstring)."""
    started = started or time.time()
    metrics = [metric] + [m for m in (KNN_ACC, PROBE_ACC) if m != metric and m in df and df[m].notna().any()]
    claims = claim_checks(df, metric, history)
    body = [
        section(
            "Claim checks",
            note(f"{verdict_counts(claims)} (on {metric}; PASS/FAIL: the 95% interval of the effect excludes 0)."),
            claims_html(claims),
        )
    ]
    body += accuracy_sections(df, metrics) + geometry_sections(df, history, metric)
    body += inspection_sections(df) if inspect else []
    body.append(config_section(df, info))
    head = header(info, all_trials, experiment, time.time() - started)
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(experiment)}</title>"
        f"<style>{STYLE}</style></head><body>{head}{''.join(body)}</body></html>"
    )


def main(argv: list[str] | None = None) -> int:
    """CLI: write ``<out>/report.html`` and attach it to the sweep's parent MLflow run."""
    p = cli.parser(__doc__, metric=True)
    p.add_argument("--no-log", action="store_true", help="do not attach the report to the parent MLflow run")
    p.add_argument("--no-inspect", action="store_true", help="skip Grad-CAM and t-SNE (no checkpoints needed)")
    return cli.run(_main, p.parse_args(argv))


def _main(args) -> None:
    from analysis import collect

    started = time.time()
    df, source = cli.load(args, need_clean=True)
    if source.uri:
        all_trials = collect.load_runs(
            args.experiment, source.uri, source.storage, finished_only=False, sweep=args.sweep
        )
        info = collect.sweep_info(args.experiment, source.uri, sweep=args.sweep)
    else:
        all_trials, info = collect.load_tune(source.storage / args.experiment, finished_only=False), {}
    history = collect.histories(df, HISTORY_KEYS, source.uri)
    page = render(df, all_trials, info, args.experiment, args.metric, history, not args.no_inspect, started)
    path = source.out / "report.html"
    path.write_text(page)
    print(f"written: {path} ({len(page) / 1e6:.1f} MB)")
    if source.uri and info.get("parent_run_id") and not args.no_log:
        collect.log_report(path, info["parent_run_id"], source.uri)
        print(f"logged to MLflow run {info['parent_run_id']} as {collect.REPORT_FOLDER}/report.html")


if __name__ == "__main__":
    sys.exit(main())
