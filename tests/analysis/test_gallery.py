"""analysis/gallery.py: the command that draws a dataset's test images under every corruption."""

from __future__ import annotations

from analysis.gallery import main


def test_gallery__draws_the_embedded_dataset(tmp_path, capsys):
    out = tmp_path / "g.png"
    assert main(["--dataset", "digits", "--n-images", "2", "--corruptions", "ori", "glo_4", "--out", str(out)]) == 0
    assert out.stat().st_size > 1000 and "2 images x 2 corruptions (ori, glo_4)" in capsys.readouterr().out


def test_gallery__a_grid_that_does_not_divide_the_image_is_one_line(tmp_path, capsys):
    assert main(["--dataset", "digits", "--corruptions", "glo_5", "--out", str(tmp_path / "g.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "grid 5 does not divide" in err and "valid grids" in err
