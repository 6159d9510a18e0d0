"""Grad-CAM of a trained trial on clean and corrupted test images (supplement Figures B.1-B.2).

Grad-CAM (Selvaraju et al. 2017): with A = the activations (K, h, w) of the backbone's last
spatial stage and s = a class score, the map is ``relu(sum_k mean_ij(ds/dA_kij) A_k)``,
upsampled to the image and scaled to [0, 1]. A short implementation of our own: forward
hooks on the backbone's last child with a 4-D output (``layer4`` of a timm ResNet).

Class scores. SSL backbones have no classifier, so every method gets the same label-free
readout of its frozen features, the one the kNN evaluation uses: the cosine similarity to each
class prototype (the mean L2-normalised feature of that class over the trial's training
images under the same corruption). Its gradient needs no fitting, so maps of different
methods and corruptions are directly comparable. The score explained is the predicted class.

    python -m analysis.gradcam --experiment grid_patch_sizes-shapes [--method moco_v2 --corruption glo_4 --seed 0]
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from analysis import cli

Head = Callable[[Tensor], Tensor]  # (B, D) features -> (B, C) class scores


def last_spatial_layer(model: nn.Module, x: Tensor) -> nn.Module:
    """The last direct child of ``model`` whose output is a (B, K, h, w) map with h * w > 1
    (a global pool keeping 4 dimensions has nothing left to localise)."""
    found: list[nn.Module] = []

    def spatial(module, _inputs, out) -> None:
        if out.ndim == 4 and out.shape[-1] * out.shape[-2] > 1:
            found.append(module)

    hooks = [m.register_forward_hook(spatial) for m in model.children()]
    try:
        with torch.no_grad():
            model(x[:1])
    finally:
        for h in hooks:
            h.remove()
    if not found:
        raise ValueError(f"{type(model).__name__} has no child with a 4-D output to explain")
    return found[-1]


def grad_cam(
    model: nn.Module, head: Head, x: Tensor, target: Tensor | None = None, layer: nn.Module | None = None
) -> tuple[Tensor, Tensor]:
    """Grad-CAM maps of a feature extractor + class-score head.

    Args:
        model: (B, C, H, W) float -> (B, D) features (e.g. a method's backbone), eval mode.
        head: (B, D) -> (B, n_classes) differentiable class scores.
        x: (B, C, H, W) float input.
        target: (B,) int64 classes to explain; None = the predicted class.
        layer: the module whose output A is explained; None = ``last_spatial_layer``.

    Returns:
        (cams (B, H, W) float32 in [0, 1] (all zeros where no location has positive evidence),
        scores (B, n_classes) float32).
    """
    layer = layer or last_spatial_layer(model, x)
    saved: dict[str, Tensor] = {}

    def keep(_module, _inputs, output):
        output.retain_grad()
        saved["a"] = output

    hook = layer.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            scores = head(model(x.detach().requires_grad_(True)))
            target = scores.argmax(dim=1) if target is None else target
            scores.gather(1, target[:, None]).sum().backward()
    finally:
        hook.remove()
    a, grad = saved["a"], saved["a"].grad
    weights = grad.mean(dim=(2, 3), keepdim=True)  # (B, K, 1, 1): global-average-pooled gradients
    cam = F.relu((weights * a).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    peak = cam.flatten(1).amax(dim=1).clamp_min(1e-12)[:, None, None]
    return (cam / peak).detach().float(), scores.detach().float()


def prototype_head(features: Tensor, labels: Tensor, num_classes: int, scale: float = 10.0) -> Head:
    """Cosine similarity to class prototypes (mean normalised feature per class), times ``scale``.

    Args:
        features: (N, D) float features of labelled images.
        labels: (N,) int64 in [0, num_classes).
        num_classes: C (classes without images get a zero prototype).
        scale: multiplies the cosine (a temperature; it does not change the normalised map).
    """
    z = F.normalize(features.float(), dim=1)
    sums = torch.zeros(num_classes, z.shape[1]).index_add_(0, labels, z)
    prototypes = F.normalize(sums, dim=1)
    return lambda f: scale * F.normalize(f.float(), dim=1) @ prototypes.to(f.device).T


def trial_cams(trial, views: list[str], n_images: int = 4, per_class: int = 50) -> list[dict]:
    """Maps of one loaded trial (``analysis.trial_model.LoadedTrial``) on the same test images
    under each view corruption; prototypes from its training images under that view."""
    test = trial.data.test
    index = torch.linspace(0, len(test) - 1, n_images).round().long()  # spread over classes
    out = []
    for view in views:
        feats, labels = trial.features(trial.data.train, view, per_class=per_class)
        head = prototype_head(feats, labels, trial.data.num_classes)
        x = trial.inputs(test.images[index], view)
        cams, scores = grad_cam(trial.method.backbone, head, x)
        images = trial.inputs(test.images[index], view).cpu()
        out.append(
            {
                "view": view,
                "images": _display(images).numpy(),
                "cams": cams.cpu().numpy(),
                "pred": scores.argmax(1).tolist(),
                "label": test.labels[index].tolist(),
            }
        )
    return out


def _display(x: Tensor) -> Tensor:
    """Normalised input -> (B, H, W, C) in [0, 1] for imshow (per-image min-max)."""
    lo = x.amin(dim=(1, 2, 3), keepdim=True)
    hi = x.amax(dim=(1, 2, 3), keepdim=True)
    return ((x - lo) / (hi - lo).clamp_min(1e-6)).permute(0, 2, 3, 1)


def cam_figure(panels: list[dict], title: str, classes: tuple[str, ...]):
    """Rows = images; per view two columns: the (corrupted) image and the CAM over it."""
    from analysis.figures import plt

    n = len(panels[0]["cams"])
    fig, axes = plt.subplots(n, 2 * len(panels), figsize=(1.5 * 2 * len(panels), 1.55 * n + 0.4), squeeze=False)
    for j, p in enumerate(panels):
        for i in range(n):
            axes[i, 2 * j].imshow(p["images"][i], interpolation="nearest")
            axes[i, 2 * j + 1].imshow(p["images"][i].mean(-1), cmap="gray", interpolation="nearest")
            axes[i, 2 * j + 1].imshow(p["cams"][i], cmap="jet", alpha=0.5, vmin=0, vmax=1)
            ok = "" if p["pred"][i] == p["label"][i] else " ✗"
            view = f"{p['view']}\n" if i == 0 else ""
            axes[i, 2 * j].set_title(f"{view}true {classes[p['label'][i]]}", fontsize=7, pad=2)
            axes[i, 2 * j + 1].set_title(f"{view}pred {classes[p['pred'][i]]}{ok}", fontsize=7, pad=2)
        for ax in axes.flat:
            ax.set_axis_off()
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    return fig


def figure_for(row, views: list[str] | None = None, n_images: int = 4):
    """Grad-CAM figure of a trial row: clean images and the trial's own corruption."""
    from analysis.trial_model import load_trial

    trial = load_trial(row)
    corruption = row["data.corruption"]
    views = views or list(dict.fromkeys(["ori", corruption]))
    title = f"Grad-CAM: {row['method']} trained {int(row['optim.epochs'])} epochs on {corruption}, seed {row['system.seed']}"
    return cam_figure(trial_cams(trial, views, n_images), title, trial.data.classes)


def main(argv: list[str] | None = None) -> int:
    """CLI: write one Grad-CAM figure per selected trial."""
    p = cli.parser(__doc__)
    p.add_argument("--method", help="method (or 'untrained'); default: every trained method")
    p.add_argument("--corruption", help="the trial's corruption; default: one per family")
    p.add_argument("--seed", type=int, help="default: the lowest seed")
    p.add_argument("--trial", help="a run_id or Tune trial_id (overrides the filters)")
    p.add_argument("--views", nargs="+", help="corruptions to show the images under (default: ori and the trial's)")
    p.add_argument("--images", type=int, default=4, help="test images (default: %(default)s)")
    return cli.run(_main, p.parse_args(argv))


def _main(args) -> None:
    from analysis import figures
    from analysis.trial_model import select_trials, showcase

    df, source = cli.load(args)
    rows = select_trials(df, args.method, args.corruption, args.seed, args.trial)
    if args.trial is None and args.corruption is None:
        rows = showcase(rows).query("corruption != 'ori'") if (rows["corruption"] != "ori").any() else rows
    for _, row in rows.head(8).iterrows():
        path = source.out / f"gradcam_{row['arm']}_{row['corruption']}_s{row['seed']}.png"
        figures.save(figure_for(row, args.views, args.images), path)
        print(f"written: {path}")


if __name__ == "__main__":
    sys.exit(main())
