"""The study's numbers (docs/study.md §3.2, §3.7) and the texts the checks show beside their effects."""

from __future__ import annotations

import pytest

from analysis import paper


def test_paper_drop__every_table1_cell_and_each_printed_avg_is_the_mean_of_its_four():
    methods = ("supervised", "supcon", "moco_v2", "byol", "barlow_twins", "dino")
    assert set(paper.PAPER_DROP) == {(m, c) for m in methods for c in paper.TABLE1_LEVELS}
    for m in methods:
        assert paper.paper_mean(m, paper.TABLE1_LEVELS) == pytest.approx(paper.PAPER_AVG[m], abs=0.051)


def test_compare_text__the_study_mean_over_exactly_the_corruptions_run():
    assert paper.compare_text("moco_v2", "supervised", ["glo_4", "loc_8"]) == "18.8 > 14.2"  # issue 22's example
    assert paper.compare_text("moco_v2", "supervised", list(paper.TABLE1_LEVELS)) == "24.5 > 20.3"
    assert paper.compare_text("moco_v2", "supervised", ["glo_2", "glo_4"]) == "n/a: Table 1 has no glo_2"
    assert paper.compare_text("simclr", "supervised", ["glo_4"]) == "n/a: Table 1 has no simclr"


def test_gap_and_contrast_text__the_study_gaps_of_the_same_corruptions():
    assert paper.gap_text("moco_v2", "supervised", ["glo_4"], ["loc_8"]).startswith("global gap +9.3, local gap -0.1")
    assert paper.contrast_text("moco_v2", "supervised", ["glo_4"], ["loc_8"]) == "(24.3 - 13.3) - (15.0 - 13.4) = +9.4"


def test_quotes__the_seed_check_quotes_the_supplement_exactly():
    assert "82.44 ± 0.18" in paper.QUOTES["C7.seeds"] and "59.24 ± 0.40" in paper.QUOTES["C7.seeds"]
    assert "The randomness has a smaller order than the gap between MoCo and Sup results." in paper.QUOTES["C7.seeds"]
    assert (
        "For MoCo, both rise" in paper.QUOTES["C5.train"]
        and "| moco_v2 | 31.8 | 24.3 | 28.6 | 13.3 | 24.5 |" in (paper.QUOTES["C1.avg"])
    )
