"""sweeps/progress.py: which trials the summary counts and tabulates; progress after a resume."""

from __future__ import annotations

import pickle
import time
from types import SimpleNamespace

from sweeps.progress import Progress, best_configs, results_frame, summary_keys


def _result(done: bool | None, error=None, knn: float = 50.0, lr: float = 0.1):
    config = {"sweep.cell": {"method": "moco_v2", "data.corruption": "ori", "system.seed": 0}, "optim.lr": lr}
    metrics = {"epoch": 3, "knn_acc": knn, "config": config}
    if done is not None:
        metrics["done"] = done
    return SimpleNamespace(error=error, config=config, metrics=metrics)


def test_results_frame__only_trials_that_ended_not_interrupted_failed_or_unstarted():
    results = [
        _result(True, knn=60.0, lr=0.1),  # finished (or stopped by ASHA: Tune sets done)
        _result(False, knn=30.0, lr=0.2),  # interrupted: an epoch's report, not final metrics
        _result(None, knn=31.0, lr=0.3),  # interrupted before Tune filled in done
        _result(True, error=RuntimeError("x"), lr=0.4),  # failed
        SimpleNamespace(error=None, config={}, metrics={}),  # never started
    ]
    df = results_frame(results)
    assert len(df) == 1 and df["knn_acc"].tolist() == [60.0] and df["optim.lr"].tolist() == [0.1]
    assert "config" not in df and df["corruption"].tolist() == ["ori"]
    best = best_configs(results, "knn_acc", ["optim.lr"])
    assert best["optim.lr"].tolist() == [0.1]
    assert best_configs(results[1:3], "knn_acc", ["optim.lr"]) is None


def test_summary_keys__the_seed_is_a_column_only_when_candidates_run_several_seeds():
    candidates = {"candidates": [{"method.temperature": 0.1}, {"method.temperature": 0.2}]}
    assert summary_keys({**candidates, "seeds": [0]}) == ["method.temperature"]
    assert summary_keys({**candidates, "seeds": [1, 2]}) == ["system.seed", "method.temperature"]
    assert summary_keys({"seeds": [1, 2]}) == []  # nothing searched: no table at all


def test_progress__a_resumed_sweep_counts_restored_trials_and_restarts_its_clock(capsys):
    # Tuner.restore hands back the callback pickled at the first launch: an old clock and count 0.
    progress = pickle.loads(pickle.dumps(Progress(total=4)))
    progress.started -= 8000
    before = time.time()
    progress.setup(total_num_samples=4)
    trials = [SimpleNamespace(status=s) for s in ("TERMINATED", "ERROR", "PENDING", "RUNNING")]
    progress.on_step_begin(0, trials)
    progress.on_step_begin(1, [SimpleNamespace(status="TERMINATED")] * 4)  # counted once, then by events
    assert progress.done == 2 and progress.started >= before  # the clock restarts with the resumed run
    assert capsys.readouterr().out == "2 of 4 trials already ended; 2 to run\n"
    fresh = Progress(total=4)
    fresh.setup(total_num_samples=4)
    fresh.on_step_begin(0, [SimpleNamespace(status="PENDING")] * 4)
    assert fresh.done == 0 and capsys.readouterr().out == ""


def test_progress__an_untrained_trial_is_labelled_untrained_without_a_gain_over_itself(capsys):
    def trial(method, epochs):
        cell = {"method": method, "data.corruption": "glo_4", "system.seed": 0, "optim.epochs": epochs}
        return SimpleNamespace(config={"sweep.cell": cell}, last_result={"knn_acc": 40.0, "knn_gain": 12.0})

    progress = Progress(total=2)
    progress.on_trial_complete(0, [], trial("supervised", 0))
    progress.on_trial_complete(1, [], trial("moco_v2", 28))
    untrained, moco = capsys.readouterr().out.splitlines()
    assert "] untrained    glo_4" in untrained and "over untrained" not in untrained
    assert "] moco_v2      glo_4" in moco and "finished: knn 40.0 (+12.0 over untrained)" in moco


def test_progress__a_trial_the_scheduler_stopped_early_says_so(capsys):
    cell = {"method": "moco_v2", "data.corruption": "ori", "system.seed": 0, "optim.epochs": 6}
    for epoch in (2, 6):  # ASHA stopped it at a rung; it ran to its end
        Progress(total=1).on_trial_complete(
            0, [], SimpleNamespace(config={"sweep.cell": cell}, last_result={"epoch": epoch})
        )
    stopped, finished = capsys.readouterr().out.splitlines()
    assert "  stopped early at epoch 2 of 6: knn nan" in stopped and "  finished: knn nan" in finished


def test_print_summary__cells_inside_the_untrained_floors_error_read_floor(capsys, tmp_path):
    from sweeps.progress import print_summary
    from sweeps.tracking import open_parent_run

    class Results(list):
        errors: list = []

    def result(method, epochs, corruption, knn):
        config = {
            "sweep.cell": {"method": method, "data.corruption": corruption, "system.seed": 0, "optim.epochs": epochs}
        }
        return SimpleNamespace(
            error=None, config=config, metrics={"knn_acc": knn, "uniformity": 1.0, "n_test": 1000, "done": True}
        )

    results = Results(
        [
            result("supervised", 3, "ori", 80.0),
            result("supervised", 3, "glo_4", 60.0),
            result("supervised", 3, "glo_8", 21.0),
            *(result("supervised", 0, c, 20.0) for c in ("ori", "glo_4", "glo_8")),
        ]
    )
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    parent = open_parent_run(uri, "e", tmp_path / "art", tmp_path / "parent_id", {})
    plan = SimpleNamespace(opts={}, mlflow_uri=uri, experiment="e", storage=tmp_path)
    print_summary(plan, results, parent, 1.0, 6)
    out = capsys.readouterr().out
    drops = out[out.index("Relative accuracy drop") :]
    row = next(line for line in drops.splitlines() if line.startswith("supervised"))
    assert row.count("[floor]") == 2 and "25.0 ± " in row  # glo_8 and Avg marked, glo_4 a finding
    table = drops.split("Claim checks")[0].splitlines()
    assert "not a finding" in drops and not any(
        line.startswith("untrained") for line in table
    )  # no drop row for the floor
