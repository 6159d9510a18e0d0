"""The HTML report from a synthetic frame: claims, tables and embedded figures in one file."""

from __future__ import annotations

import re

from analysis.report import render
from tests.analysis.conftest import frame


def sweep():
    accs = {
        (arm, c): [a - d, a - d + 1]
        for arm, d in (("supervised", 0), ("moco_v2", 8))
        for c, a in (("ori", 80), ("glo_4", 60), ("loc_4", 65))
    }
    accs[("untrained", "ori")], accs[("untrained", "glo_4")], accs[("untrained", "loc_4")] = (
        [20, 21],
        [18, 19],
        [19, 19],
    )
    unif = {k: [2.0 - i * 0.1, 2.05 - i * 0.1] for i, k in enumerate(accs)}
    df = frame(accs, unif)
    return df.assign(status="FINISHED", run_id=[f"r{i}" for i in range(len(df))])


def test_render__one_self_contained_page_with_claims_tables_and_images():
    df = sweep()
    info = {"parent_run_id": "p1", "wall_s": 42.0, "tags": {"sweep_name": "grid_patch_sizes", "version.torch": "9.9"}}
    page = render(df, df, info, "synthetic", "knn_acc", inspect=False)
    assert page.startswith("<!DOCTYPE html>") and page.endswith("</html>")
    assert "Claim checks" in page and ('class="PASS"' in page or 'class="INCONCLUSIVE"' in page)
    assert "C1.avg" in page and "C2.gap" in page
    assert "relative drop vs ori" in page and "untrained" in page and "Uniformity and ECE vs accuracy" in page
    assert len(re.findall(r'<img src="data:image/png;base64,[A-Za-z0-9+/=]{100,}"', page)) >= 3
    assert "9.9" in page and "42 s" in page and "model.width" in page
    assert 'src="http' not in page and "<link" not in page  # nothing outside the file
