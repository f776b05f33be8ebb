"""The ImageNet-segmentation protocol of the explainability papers (Chefer et al.; Gandelsman et al.).

Per image (``gtsegs_ijcv.mat``: 4,276 ImageNet photos with a foreground mask):

1. the image goes through the model's own preprocessing (resize the short side, centre crop);
2. the class explained is the model's zero-shot prediction over the 1,000 ImageNet classes (80 templates),
   not the true class;
3. the method's map for that class (with the method's default contrast: the decomposition's is "minus the
   mean of the other classes", as in Gandelsman et al.) is upsampled bilinearly to the input, clipped below 0,
   min–max normalised; foreground = the normalised map at or above its mean;
4. metrics pooled over the data set: pixel accuracy (correct over all pixels), mIoU over the two classes
   (background, foreground) from summed intersections and unions, and mAP: the mean over images of the
   average precision of the two-channel scores ``[1 − map, map]`` for the two-channel one-hot mask.

Two ``mode`` s for the ground truth: ``"correct"`` (the default) applies the image's own resize and crop to the
mask (nearest neighbour), so mask and map cover the same pixels; ``"original"`` reproduces the first seed paper's
code, which centre-crops the image but only *resizes* the mask to 224×224 (so on non-square images the mask and
the map disagree): use it to compare with published numbers.

With ``out_dir`` the run is resumable exactly as :func:`cliplens.evaluation.segeval.evaluate_segmentation` (the
same :class:`~cliplens.evaluation.segeval.RunFolder`: progress written before any work, saved on the way out
whatever stops the run, each image counted all at once or not at all, the image set recorded: a folder holding a
run over other images is refused, a run can be extended to more) and can draw overlays for the first images
(``overlays/NNNNN.png``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cliplens.core.model import ImageTextModel
from cliplens.errors import InvalidInputError
from cliplens.evaluation.choices import IMAGENET_SEG_DEFAULT_MODE, IMAGENET_SEG_MODES
from cliplens.evaluation.segeval import RESULTS, RunFolder, image_ids, image_set, model_record, resume
from cliplens.evaluation.segmentation import average_precision, score_map
from cliplens.jsonio import write_json_atomic
from cliplens.maps.base import MapMethod, get_map
from cliplens.maps.inputs import fit_images
from cliplens.maps.targets import Targets

__all__ = ["DEFAULT_MODE", "MODES", "evaluate_imagenet_seg", "transform_mask"]

MODES = IMAGENET_SEG_MODES
DEFAULT_MODE = IMAGENET_SEG_DEFAULT_MODE
_COUNTS = ("inter_bg", "union_bg", "inter_fg", "union_fg", "correct", "pixels", "ap_sum", "ap_images")


def transform_mask(mask: np.ndarray, box: tuple[float, float, float, float], size: tuple[int, int],
                   mode: str) -> np.ndarray:
    """The mask ``[H0, W0]`` as the protocol compares it with a map over the model input of ``size``:
    ``"original"``: the whole mask resized to ``size`` (nearest, as the original's PIL resize); ``"correct"``:
    the window ``box`` (top, left, bottom, right in the original's pixels: what the model input shows)."""
    m = np.asarray(mask)
    h0, w0 = m.shape
    if mode == "original":
        box = (0.0, 0.0, float(h0), float(w0))
    elif mode != "correct":
        raise InvalidInputError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
    top, left, bottom, right = box
    # nearest neighbour at pixel centres (PIL's NEAREST, torch's "nearest-exact"): output pixel i of the
    # window [top, bottom) reads source pixel floor(top + (i + 0.5)·(bottom − top)/size). For "correct" this is
    # exactly the image's own resize followed by its crop, whose window in the original is ``box``.
    rows = np.floor(top + (np.arange(size[0]) + 0.5) * (bottom - top) / size[0]).astype(np.int64)
    cols = np.floor(left + (np.arange(size[1]) + 0.5) * (right - left) / size[1]).astype(np.int64)
    return m[np.clip(rows, 0, h0 - 1)[:, None], np.clip(cols, 0, w0 - 1)[None, :]].astype(np.int64)


def evaluate_imagenet_seg(
    model: ImageTextModel,
    method: MapMethod | str,
    dataset: Any,
    *,
    mode: str = DEFAULT_MODE,
    class_names: Sequence[str] | None = None,
    templates: str = "imagenet",
    out_dir: str | os.PathLike[str] | None = None,
    limit: int | None = None,
    save_every: int = 10,
    overlays: int = 0,
    draw_overlay: Callable[[Path, int, Any, dict[str, Any]], Any] | None = None,
    on_image: Callable[[int, int], None] | None = None,
    check_only: bool = False,
) -> dict[str, Any] | None:
    """Pixel accuracy, mIoU and mAP (percent) of ``method`` on an ImageNet-segmentation data set (see the module
    docs). ``mode``: ``"correct"`` (default) or ``"original"`` (the papers' misaligned mask). ``class_names``:
    the zero-shot classes (default the 1,000 ImageNet classes, CLIP's names: 998 distinct texts).

    ``draw_overlay(path, i, sample, view)`` draws image ``i``'s overlay (a PNG at ``path``) for each of the
    first ``overlays`` images (needs ``out_dir``); ``view`` holds what was compared, on the model input's
    pixels: ``image`` (``[H, W, 3]`` RGB in [0, 1]), ``map`` (the min–max normalised map), ``mask`` (the ground
    truth through ``mode``: 0, 1, 255 ignored), ``foreground`` (the map at or above its mean), ``class`` (the
    class explained) and ``mode``. ``check_only``: refuse now what the run would refuse (an ``out_dir`` holding
    another run) and return ``None``, computing and writing nothing."""
    if mode not in MODES:
        raise InvalidInputError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
    method = get_map(method)
    if class_names is None:
        from cliplens.datasets import imagenet_classes

        # (wnid, name) pairs; CLIP's names give two classes each to "missile" and "sunglasses": the same text,
        # so the same classifier row: kept once (the prediction, and the map explained, are the same either way)
        seen: set[str] = set()
        class_names = [n for _, n in imagenet_classes()
                       if " ".join(n.lower().split()) not in seen and not seen.add(" ".join(n.lower().split()))]
    names = list(class_names)
    n = len(dataset) if limit is None else min(limit, len(dataset))
    if n < 1:
        raise InvalidInputError("the data set has no images")
    if draw_overlay is not None and overlays > 0 and out_dir is None:
        raise InvalidInputError("overlays are written in the run's folder: pass out_dir")
    ids = image_ids(dataset, n)
    everything = Targets.classes(names, templates=templates, contrast=method.default_contrast if len(names) > 1
                                 else "none")
    settings = {"protocol": "imagenet-segmentation", "mode": mode, "model": model_record(model),
                "method": method.describe(), "classes": len(names), "templates": templates,
                "contrast": everything.contrast if method.text_dependent else "none",
                "targets": "every class" if method.text_dependent and (everything.contrast != "none"
                                                                      or method.uses_all_targets)
                else "the predicted class",
                "dataset": dataset.describe() if hasattr(dataset, "describe") else {}, "images": n,
                "image_set": image_set(dataset, ids, limit),
                "fit": "crop (the model's own preprocessing)", "threshold": "foreground where the normalised map >= "
                "its mean", "ap": "two-channel [1 - map, map] against the one-hot mask, per image, averaged"}
    out = Path(out_dir).expanduser() if out_dir is not None else None
    if check_only:
        if out is not None:
            resume(out, settings, ids, create=False)
        return None
    per_class = method.text_dependent and (everything.contrast != "none" or method.uses_all_targets)
    fresh: dict[str, Any] = {"done": 0, "seconds": 0.0, "overlays": [], **{k: 0.0 for k in _COUNTS}}
    with RunFolder(out, settings, fresh, ids=ids, save_every=save_every) as run:
        classifier = everything.embed(model).directions if run.done < n else None  # after the folder's check
        for i in range(run.done, n):
            sample = dataset[i]
            fitted, _ = fit_images(model, [sample.image], fit="crop")
            px = fitted[0].pixels[None].to(model.device, model.dtype)
            with torch.no_grad():
                emb = F.normalize(model.encode_image(px).float(), dim=-1)
            assert classifier is not None
            pred = int((emb @ classifier.to(emb).T).argmax(-1))
            targets = everything if per_class else Targets.classes([names[pred]], templates=templates,
                                                                   contrast="none")
            maps = method(model, [sample.image], targets, fit="crop", normalization="raw")
            raw = maps.images[0].raw[pred if per_class else 0]
            size = tuple(px.shape[-2:])
            gt = transform_mask(dataset.mask(i), fitted[0].box, size, mode)  # type: ignore[arg-type]
            valid = gt != 255
            mask = gt == 1
            s = score_map(raw, mask, ap=lambda y, p: 0.0)
            norm, fg = s["normalized"], s["pred"]
            counts = {k: float(run.state[k]) for k in _COUNTS}
            counts["inter_fg"] += int((fg & mask & valid).sum())
            counts["union_fg"] += int(((fg | mask) & valid).sum())
            counts["inter_bg"] += int((~fg & ~mask & valid).sum())
            counts["union_bg"] += int(((~fg | ~mask) & valid).sum())
            counts["correct"] += int(((fg == mask) & valid).sum())
            counts["pixels"] += int(valid.sum())
            y = np.concatenate([(~mask)[valid], mask[valid]])
            if y.any():
                counts["ap_sum"] += average_precision(y, np.concatenate([1.0 - norm[valid], norm[valid]]))
                counts["ap_images"] += 1
            drawn = []
            if draw_overlay is not None and i < overlays:
                view = {"image": _shown(model, fitted[0].pixels), "map": norm, "mask": gt, "foreground": fg,
                        "class": names[pred], "mode": mode}
                drawn.append(run.overlay(i, lambda p, s=sample, v=view, i=i: draw_overlay(p, i, s, v)))
            run.commit(done=i + 1, overlays=[*run.state["overlays"], *drawn], **counts)
            if on_image is not None:
                on_image(i + 1, n)
    counts = {k: float(run.state[k]) for k in _COUNTS}
    iou_bg = counts["inter_bg"] / max(counts["union_bg"], 1)
    iou_fg = counts["inter_fg"] / max(counts["union_fg"], 1)
    result = {"pixel_accuracy": 100 * counts["correct"] / max(counts["pixels"], 1),
              "miou": 100 * (iou_bg + iou_fg) / 2, "map": 100 * counts["ap_sum"] / max(counts["ap_images"], 1),
              "iou": {"background": 100 * iou_bg, "foreground": 100 * iou_fg}, "images": run.done,
              "seconds": float(run.state["seconds"]), "settings": settings, "overlays": list(run.state["overlays"])}
    if out is not None:
        write_json_atomic(out / RESULTS, result)
    return result


def _shown(model: ImageTextModel, pixels: torch.Tensor) -> np.ndarray:
    """The model input ``[3, H, W]`` (normalised) as ``[H, W, 3]`` RGB in [0, 1]."""
    cfg = model.preprocess_config
    mean = torch.tensor(cfg.mean, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(cfg.std, dtype=torch.float32).view(3, 1, 1)
    return (pixels.detach().float().cpu() * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()
