"""trainables/tune_adapter.py: what a resumed trial reports again (the Ray paths run in tests/sweeps)."""

from __future__ import annotations

from trainables import tune_adapter
from trainables.tune_adapter import REPLAYED


def test_replay__the_epochs_are_reported_again_marked_but_not_the_final_one(monkeypatch):
    reported = []
    monkeypatch.setattr(tune_adapter.tune, "report", reported.append)
    history = [{"epoch": epoch, "loss": 2.5 - epoch} for epoch in (1, 2, 3)]
    tune_adapter.replay(history, epochs=3)  # the resumed run_trial makes epoch 3's (final) report itself
    assert reported == [{"epoch": 1, "loss": 1.5, REPLAYED: True}, {"epoch": 2, "loss": 0.5, REPLAYED: True}]
    reported.clear()
    tune_adapter.replay(history[:2], epochs=4)
    assert [m["epoch"] for m in reported] == [1, 2] and history[0] == {"epoch": 1, "loss": 1.5}  # not mutated
