"""What a sweep prints: one line per finished epoch and trial, then the results and the MLflow UI command."""

from __future__ import annotations

import shlex
import time

from ray import tune

from analysis.claims import claim_checks, format_claims
from analysis.drops import accuracy_summary, drop_summary, spread_note, wide
from analysis.frame import UNTRAINED, config_arm
from sweeps.options import searched_keys
from sweeps.tracking import experiment_id, log_summary
from trainables.metrics import KNN_ACC, PROBE_ACC, UNIFORMITY
from trainables.tune_adapter import REPLAYED, crash_report, trial_config


class Progress(tune.Callback):
    """Compact progress on stdout (Tune's own tables are turned off with verbose=0)."""

    def __init__(self, total: int, keys: tuple[str, ...] = ()) -> None:
        self.total, self.done, self.started, self._counted = total, 0, time.time(), False
        self.keys = keys  # config keys that tell trials apart besides method, corruption and seed
        self._shown: set[tuple] = set()  # (memory format, reason) pairs already printed

    def setup(self, **info) -> None:
        # `Tuner.restore` brings back the callback pickled at the first launch, with that launch's
        # clock and count: restart the clock here and take the count from Tune's restored trials.
        self.started, self.done, self._counted = time.time(), 0, False
        self._shown = set()

    def on_step_begin(self, iteration, trials, **info) -> None:
        if self._counted:
            return
        self._counted = True
        self.done = sum(t.status in ("TERMINATED", "ERROR") for t in trials)
        if self.done:
            print(f"{self.done} of {self.total} trials already ended; {self.total - self.done} to run", flush=True)

    def _prefix(self, trial) -> str:
        c = trial_config(trial.config)
        extra = "".join(f" {k.rpartition('.')[2]} {_short(c.get(k))}" for k in self.keys)
        return (
            f"[{self.done}/{self.total} done, {time.time() - self.started:5.0f}s] {config_arm(c):<12} "
            f"{c['data.corruption']:<10} seed {c['system.seed']}{extra}"
        )

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        # A replayed epoch was trained before a resume; only MLflow needs it (the trial's final line follows).
        if result.get("done") or result.get(REPLAYED):
            return
        knn = f"  knn {result[KNN_ACC]:.1f}" if KNN_ACC in result else ""
        knn += f" ({result['knn_gain']:+.1f} over untrained)" if "knn_gain" in result else ""
        print(
            f"{self._prefix(trial)}  epoch {result['epoch']}  loss {result['loss']:.3f}{knn}  {result['samples_per_s']:.0f} img/s"
            f"{self._memory_format(trial, result)}",
            flush=True,
        )

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.done += 1
        r = trial.last_result or {}
        untrained = config_arm(trial_config(trial.config)) == UNTRAINED  # its gain over itself is 0 by definition
        probe = f" ({r['knn_gain']:+.1f} over untrained)" if "knn_gain" in r and not untrained else ""
        probe += f"  probe {r[PROBE_ACC]:.1f}" if PROBE_ACC in r else ""
        if r.get(REPLAYED):  # ended before the last launch's driver was killed; not trained again
            probe += "  (recorded before the interruption; not re-run)"
        epochs = trial_config(trial.config).get("optim.epochs")
        outcome = f"stopped early at epoch {r['epoch']} of {epochs}" if r.get("epoch", epochs) != epochs else "finished"
        print(
            f"{self._prefix(trial)}  {outcome}: knn {r.get(KNN_ACC, float('nan')):.1f}{probe}  uniformity {r.get(UNIFORMITY, float('nan')):.2f}"
            f"{self._memory_format(trial, r)}",
            flush=True,
        )

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self.done += 1
        crash = crash_report(trial)  # Ray's own error only says that the actor died
        if crash:
            print(f"{self._prefix(trial)}  FAILED: trial {trial} crashed: {crash}", flush=True)
        else:
            print(f"{self._prefix(trial)}  FAILED (see MLflow run tag 'error' or {trial.path})", flush=True)

    def _memory_format(self, trial, result: dict) -> str:
        """`` [contiguous: <why>]`` the first time a trial reports a memory format and reason not yet
        printed in this launch (one line per kind of machine, not per trial), else ``""``."""
        seen = (result.get("memory_format"), result.get("memory_format_reason"))
        if "memory_format" not in result or seen in self._shown:
            return ""
        self._shown.add(seen)
        return f"  [{result['memory_format']}: {result.get('memory_format_reason', '')}]"


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def ended(result) -> bool:
    """Ended normally or stopped by the scheduler (Tune sets ``done``); not failed, never started or
    interrupted (an interrupted trial's last report is an epoch's, not its final metrics)."""
    return result.error is None and bool(result.config) and bool((result.metrics or {}).get("done"))


def results_frame(results):
    """One row per finished trial: its flat config (method, corruption, seed, ...) and final metrics."""
    import pandas as pd

    rows = []
    for r in results:
        if not ended(r):
            continue
        c = trial_config(r.config)
        rows.append(
            {
                **c,
                "corruption": c["data.corruption"],
                "seed": c["system.seed"],
                **{k: v for k, v in r.metrics.items() if k != "config"},
            }
        )
    return pd.DataFrame(rows)


def summary_keys(opts: dict) -> list[str]:
    """The columns of the best-configurations table: what the search varies, and the seed when it runs several."""
    keys = searched_keys(opts)
    return ["system.seed", *keys] if keys and len(set(opts.get("seeds") or [])) > 1 else keys


def best_configs(results, metric: str, keys: list[str], top: int = 5):
    """The searched ``keys`` and the metric of the best trials; None when nothing was searched."""
    import pandas as pd

    rows = [
        {**{k: trial_config(r.config).get(k) for k in keys}, metric: r.metrics.get(metric)} for r in results if ended(r)
    ]
    if not rows or not keys:
        return None
    return pd.DataFrame(rows).sort_values(metric, ascending=False).head(top)


# MLflow's job runner (GenAI scoring jobs, unused here) starts 8 more processes; without it and with
# one worker the UI is 2 processes and 0.5 GiB instead of 10 and 2.4 GiB (measured, issue 25).
UI_ENV = "MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false"


def print_summary(plan, results, parent_run_id: str, seconds: float, total: int) -> None:
    """Accuracy and drop tables (or the best searched configs), and how to open the MLflow UI."""
    df = results_frame(results)
    print(f"\n{len(df)} of {total} trials finished in {seconds:.0f} s ({len(results.errors)} failed).")
    searched = best_configs(results, plan.opts.get("metric", KNN_ACC), summary_keys(plan.opts))
    if searched is not None:
        print(
            f"\nBest configurations by final {plan.opts.get('metric', KNN_ACC)}:\n{searched.to_string(index=False, float_format='%.4g')}"
        )
    if len(df) and KNN_ACC in df:
        metric = KNN_ACC
        # Cells inside the untrained floor's error read "[floor]" (analysis.drops.floor_gaps): not findings.
        acc = accuracy_summary(df, metric)
        print(
            f"\nkNN accuracy (%), mean over seeds (untrained = the same network at initialisation):\n"
            f"{wide(acc).to_string()}\n{spread_note(acc)}"
        )
        drops = drop_summary(df, metric)
        drops = drops[drops["arm"] != UNTRAINED]  # untrained: epochs 0 from no pretrained network
        if len(drops):
            print(
                f"\nRelative accuracy drop vs ori (%), 100 * (A_ori - A_c) / A_ori:\n{wide(drops).to_string()}\n"
                f"{spread_note(drops, reference=False)}"
            )
            claims = claim_checks(df, metric)
            print(
                f"\nClaim checks ({metric}) that passed or failed; all of them: python -m analysis.claims "
                f"--experiment {shlex.quote(plan.experiment)} --storage-path {shlex.quote(str(plan.storage))}\n"
                f"{format_claims(claims, verdicts=('PASS', 'FAIL'))}"
            )
            log_summary(plan.mlflow_uri, parent_run_id, drops, claims, acc)
    if len(df) and plan.opts.get("report", True):
        write_report(plan, parent_run_id)
    elif len(df):
        print(
            f"\nHTML report not written (--no-report); write it with: {REPORT} {shlex.join(report_args(plan, parent_run_id))}"
        )
    uri = plan.mlflow_uri
    print(
        f"\nMLflow: experiment {plan.experiment!r}, parent run {parent_run_id}. Open the UI with:\n"
        f"  {UI_ENV} mlflow ui --backend-store-uri {shlex.quote(uri)} --host 127.0.0.1 --port 5000 --workers 1\n"
        f"  then browse http://127.0.0.1:5000/#/experiments/{experiment_id(uri, parent_run_id)}"
    )


REPORT = "python -m analysis.report"


def report_args(plan, parent_run_id: str) -> list[str]:
    """The arguments of ``analysis.report`` for this sweep's parent run."""
    return ["--experiment", plan.experiment, "--storage-path", str(plan.storage), "--mlflow-uri", plan.mlflow_uri,
            "--sweep", parent_run_id]  # fmt: skip


def write_report(plan, parent_run_id: str) -> None:
    """The sweep's HTML report (``analysis.report``), attached to its parent run; a failure to write
    it is one line, never a failed sweep (the trials are recorded either way)."""
    from analysis import report

    argv = report_args(plan, parent_run_id)
    print("\nHTML report:", flush=True)
    try:
        code = report.main(argv)
    except Exception as err:
        code = f"{type(err).__name__}: {err}"
    if code:
        print(f"  not written ({code}); retry with: {REPORT} {shlex.join(argv)}", flush=True)
