"""What ``--help`` lists, answered without importing torch (so ``--help`` takes well under a second).

The names mirror the registries (``trainables.methods.METHODS``, ``trainables.data.datasets.DATASETS``,
``corruptions.CORRUPTIONS``); ``tests/sweeps/test_choices.py`` fails, naming the missing entry,
when one is registered and not listed here. Validation itself always asks the registries.
"""

from __future__ import annotations

METHODS = ("supervised", "moco_v2", "supcon", "simclr", "byol", "barlow_twins", "dino", "moco_v3")
DATASETS = {
    "shapes": "embedded, drawn from a seed (the main job)",
    "digits": "embedded, scikit-learn's 8x8 digits",
    "cifar10": "torchvision, downloaded into --data-dir",
    "cifar100": "torchvision, downloaded into --data-dir",
    "stl10": "torchvision, downloaded into --data-dir",
    "imagefolder": "imagefolder:<path>: any <path>/train/<class>/* and <path>/test/<class>/* tree",
}
# Spec prefix -> what its parameter is (spec: <prefix>_<value>, e.g. glo_4, gam_0.5).
CORRUPTIONS = {
    "ori": "the clean images",
    "glo": "glo_<N>: move whole patches of an N x N grid (N divides the image side)",
    "loc": "loc_<N>: move pixels inside each patch of an N x N grid",
    "randglo": "randglo_<N>: glo with a fresh permutation per image and draw",
    "randloc": "randloc_<N>: loc with a fresh permutation per image and draw",
    "gam": "gam_<g>: gamma distortion, g > 0",
    "defocusblur": "defocusblur_<s>: CIFAR-10-C defocus blur, severity 1-5",
    "shotnoise": "shotnoise_<s>: CIFAR-10-C shot noise, severity 1-5",
    "jpeg": "jpeg_<s>: CIFAR-10-C JPEG, severity 1-5",
}


def epilog() -> str:
    """The choices as plain text, for the end of every sweep's ``--help``."""
    width = max(map(len, (*DATASETS, *CORRUPTIONS)))
    lines = ["methods (--methods):", "  " + ", ".join(METHODS), "", "datasets (--dataset):"]
    lines += [f"  {name:<{width}}  {what}" for name, what in DATASETS.items()]
    lines += ["", "corruptions (data.corruption, the YAML's families/grids/gammas/corruptions):"]
    lines += [f"  {name:<{width}}  {what}" for name, what in CORRUPTIONS.items()]
    lines += ["", "Every trial config key and its default: docs/configuration.md (set one with --set KEY=VALUE)."]
    return "\n".join(lines)
