"""streaming.py: both loaders on a tiny ImageFolder and its ImageNet-sized copy, and the JSON line."""

from __future__ import annotations

import json

from benchmarks.streaming import main
from tests.trainables.data.test_stream import _folder


def test_streaming__both_cases_same_batches_and_the_lowest_ratio(tmp_path, capsys):
    root = _folder(tmp_path / "folder")
    args = "--image-size 16 --large 4 --large-size 24 --workers 1 --batch-size 4 --repeats 1".split()
    main(["--root", str(root), *args])
    lines = capsys.readouterr().out.strip().splitlines()
    result = json.loads(lines[-1])
    cases = {c["case"]: c for c in result["cases"]}
    assert cases["folder"]["images"] == 15 and cases["imagenet-sized"]["images"] == 4
    assert all(c["ours_per_s"] > 0 and c["torchvision_per_s"] > 0 for c in cases.values())
    assert result["ratio"] == min(c["ratio"] for c in cases.values())
    # Each round is printed as it ends (a capped run keeps them), then the table.
    rounds = [line.split(":")[0] for line in lines if " round " in line]
    assert rounds == ["folder round 1/1"] * 2 + ["imagenet-sized round 1/1"] * 2
    assert lines[4].startswith("case") and "imagenet-sized" in lines[6]
