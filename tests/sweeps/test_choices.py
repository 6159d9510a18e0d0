"""sweeps/choices.py: --help lists the registries' names without importing torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sweeps import choices
from sweeps.cli import SWEEPS

ROOT = Path(__file__).resolve().parents[2]
# The built-in registrations, read in a fresh interpreter: other tests register toy methods and
# corruptions in this process.
REGISTRIES = (
    "import json; from corruptions import CORRUPTIONS; from trainables.data.datasets import DATASETS; "
    "from trainables.methods import METHODS; print(json.dumps([sorted(METHODS), sorted(DATASETS), sorted(CORRUPTIONS)]))"
)


def test_choices__list_exactly_the_registered_names():
    out = subprocess.run(
        [sys.executable, "-c", REGISTRIES], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    registries = json.loads(out.strip().splitlines()[-1])
    for listed, registry, where in zip(
        (choices.METHODS, choices.DATASETS, choices.CORRUPTIONS),
        registries,
        ("trainables.methods.METHODS", "trainables.data.datasets.DATASETS", "corruptions.CORRUPTIONS"),
        strict=True,
    ):
        assert sorted(set(registry) - set(listed)) == [], f"registered in {where} but not listed in sweeps/choices.py"
        assert sorted(set(listed) - set(registry)) == [], f"listed in sweeps/choices.py but not registered in {where}"


@pytest.mark.parametrize("sweep", sorted(SWEEPS))
def test_help__plain_text_with_every_choice_and_no_torch_import(sweep):
    code = (
        f"import sys; from sweeps.cli import main\n"
        f"try:\n    main([{sweep!r}, '--help'])\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
        "heavy = sorted(m for m in ('torch', 'ray', 'timm', 'mlflow', 'pandas') if m in sys.modules)\n"
        "print('HEAVY', heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("HEAVY []"), out[-300:]
    assert "``" not in out
    for name in (*choices.METHODS, *choices.DATASETS, *choices.CORRUPTIONS):
        assert name in out, f"{name} missing from {sweep} --help"


def test_help__the_script_form_answers_like_the_console_script():
    out = subprocess.run(
        [sys.executable, str(ROOT / "sweeps" / "grid_patch_sizes.py"), "--help"],
        cwd="/",
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.startswith("usage: grid_patch_sizes.py") and "moco_v2" in out and "imagefolder:<path>" in out
