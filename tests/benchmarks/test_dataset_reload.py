"""dataset_reload.py: both loads of a real (tiny) ImageFolder through load_dataset, and the JSON line."""

from __future__ import annotations

import json

from benchmarks.dataset_reload import main
from tests.trainables.data.test_datasets import _write_folder


def test_dataset_reload__counts_every_image_and_reports_both_loads(tmp_path, capsys):
    _write_folder(tmp_path / "folder", per_class=4)
    main(["--dataset", f"imagefolder:{tmp_path / 'folder'}", "--image-size", "16"])
    lines = capsys.readouterr().out.strip().splitlines()
    result = json.loads(lines[-1])
    assert result["images"] == 2 * 2 * 4  # two splits, two classes
    assert result["first_s"] > 0 and result["reload_s"] > 0
    assert result["ratio"] == round(result["first_s"] / result["reload_s"], 1)
    assert "16 images" in lines[-2]
