"""The map interface: one method per file, registered by name, batched over images and targets.

``method(model, images, targets) -> Maps``: one map per (image, target). *What* is explained
(:class:`~cliplens.maps.targets.Targets`: texts, classes with a contrast, prompt ensembles) is kept
apart from *how* (the method). A method implements one thing, :meth:`MapMethod.raw`: preprocessed
pixels ``[B, 3, H, W]`` and text embeddings -> raw score maps ``[B, T, h, w]`` (on the token grid, or
at pixels); this class does the rest for every method: fitting images to the model
(:mod:`cliplens.maps.inputs`), batching, sliding windows, the target's contrast, normalisation, and
maps over the model input and over the original images. Register your own::

    @register_map("my-method")
    class MyMethod(MapMethod):
        def raw(self, model, pixels, texts):
            ...  # -> [B, T, gh, gw]
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from cliplens.core.model import ImageTextModel
from cliplens.core.trunk import blocks_message
from cliplens.errors import CliplensError, InvalidInputError, UnsupportedArchitectureError
from cliplens.images.io import DEFAULT_MAX_PIXELS
from cliplens.maps.choices import NORMALIZATIONS
from cliplens.maps.inputs import check_tokens, fit_images, group_by_size, to_image, window_positions
from cliplens.maps.targets import Targets, TextEmbeddings, as_targets, contrast_others

__all__ = ["NORMALIZATIONS", "ImageMaps", "cls_readout_message", "MapMethod", "Maps", "get_map", "map_class", "map_names", "normalize_maps",
           "register_map"]



def cls_readout_message(name: str, view: Any, reads: str) -> str | None:
    """Why a method that reads a tower's CLS token through ``ln_post`` and the projection cannot run on ``view``
    (``None``: it can); ``reads`` says what the method does with it."""
    if view.class_embedding is None or view.num_prefix_tokens != 1 or not hasattr(view.head, "ln_post"):
        return (f"the {name!r} map needs a tower with one CLS token read through ln_post and a projection ({reads}); "
                "this model has none")
    return None


def normalize_maps(raw: Tensor, normalization: str) -> Tensor:
    """``"raw"``: as is; ``"minmax"``: each map (last two axes) to [0, 1] (a constant map becomes 0)."""
    if normalization == "raw":
        return raw
    if normalization != "minmax":
        raise InvalidInputError(f"normalization must be one of {', '.join(NORMALIZATIONS)}; got {normalization!r}")
    flat = raw.flatten(-2)
    lo = flat.amin(-1, keepdim=True)
    span = flat.amax(-1, keepdim=True) - lo
    out = torch.where(span > 0, (flat - lo) / span.clamp_min(1e-30), torch.zeros_like(flat))
    return out.view_as(raw)


@dataclass
class ImageMaps:
    """The maps of one image: raw scores (after the contrast), and where they lie on the original.

    The box convention: ``box = (top, left, bottom, right)``, in the original image's pixels (floats; row 0,
    column 0 at the top left corner; ``bottom`` and ``right`` exclusive), is the rectangle of the original that
    the model input, and so the whole grid ``raw[t]``, covers: ``(0, 0, H0, W0)`` when the whole image was seen
    (``fit="whole"`` or ``"squash"``); the centre crop's rectangle for ``fit="crop"``, where the rest of the
    image is NaN in :meth:`on_image`. Grid cell ``(i, j)`` of an ``h × w`` grid covers rows
    ``top + i·(bottom−top)/h …`` and columns ``left + j·(right−left)/w …`` of the original."""

    raw: Tensor  # [T, h, w]
    input_size: tuple[int, int]  # the model input's (H, W)
    image_size: tuple[int, int]  # the original's (H0, W0)
    box: tuple[float, float, float, float]  # (top, left, bottom, right): where the model input lies in the original
    source: str
    normalization: str = "minmax"
    #: regions ``[H, W]`` (int64) over the model input that the method's label step votes in
    #: (:meth:`MapMethod.correct_labels`; CorrCLIP's SAM regions); ``None`` for most methods
    regions: Tensor | None = None

    def normalized(self, t: int | None = None) -> Tensor:
        """``[T, h, w]`` (or ``[h, w]`` for target ``t``) normalised as named."""
        raw = self.raw if t is None else self.raw[t:t + 1]
        out = normalize_maps(raw, self.normalization)
        return out if t is None else out[0]

    def on_input(self, t: int | None = None) -> Tensor:
        """Maps over the model input ``[T, H, W]`` (bilinear; normalised first, as the original does)."""
        m = self.normalized(t)
        m4 = m.reshape(-1, 1, *m.shape[-2:]).float()
        up = F.interpolate(m4, size=self.input_size, mode="bilinear", align_corners=False)
        return up.reshape(*m.shape[:-2], *self.input_size)

    def on_image(self, t: int | None = None) -> Tensor:
        """Maps over the original image ``[T, H0, W0]`` (NaN where the model did not see it)."""
        return to_image(self.normalized(t), self.box, self.image_size)


@dataclass
class Maps:
    """One map per (image, target), with every setting that made them."""

    images: list[ImageMaps]
    labels: list[str]
    method: str
    settings: dict[str, Any] = field(default_factory=dict)
    #: inputs skipped as unreadable (``skip_bad``): ``(source, reason)``
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> ImageMaps:
        return self.images[i]

    @property
    def raw(self) -> Tensor:
        """``[B, T, h, w]`` raw scores (after the target's contrast), when every image has the same grid."""
        shapes = {tuple(m.raw.shape) for m in self.images}
        if len(shapes) > 1:
            raise InvalidInputError(f"the images have different map grids {sorted(shapes)}; use maps[i].raw")
        return torch.stack([m.raw for m in self.images])

    @property
    def input(self) -> Tensor:
        """``[B, T, H, W]`` normalised maps over the model input (same input size for every image)."""
        return torch.stack([m.on_input() for m in self.images])

    @classmethod
    def from_grids(cls, grids: Tensor | Sequence[Tensor], *, image_size: tuple[int, int] | Sequence[tuple[int, int]],
                   labels: Sequence[str] | None = None, box: tuple[float, float, float, float] | None = None,
                   input_size: tuple[int, int] | None = None, method: str = "grids",
                   normalization: str = "minmax", sources: Sequence[str] | None = None,
                   settings: dict[str, Any] | None = None) -> Maps:
        """Maps from raw score grids you computed yourself: ``grids`` ``[B, T, h, w]`` (or a list of ``[T, h, w]``,
        one per image, grids may differ), one per (image, target), as :attr:`raw` holds them.

        ``image_size``: the original image's ``(H, W)`` (one for all images, or one per image). ``box``: where the
        grid lies on the original, ``(top, left, bottom, right)`` in its pixels (the convention of
        :class:`ImageMaps`; default the whole image, ``(0, 0, H, W)``). ``input_size``: the model input's
        ``(H, W)`` the grid covers, for :meth:`ImageMaps.on_input` (default: the box's size). ``labels``: one per
        target (default ``"text 0"``, …). Then everything a method's maps offer works on them: normalised
        maps, maps over the original image, pictures, points for SAM
        (:func:`cliplens.tasks.points.points_from_maps`)."""
        if normalization not in NORMALIZATIONS:
            raise InvalidInputError(f"normalization must be one of {', '.join(NORMALIZATIONS)}; got {normalization!r}")
        items = list(grids) if not isinstance(grids, Tensor) else ([grids] if grids.ndim == 3 else list(grids))
        if isinstance(grids, Tensor) and grids.ndim not in (3, 4):
            raise InvalidInputError(f"grids must be [images, targets, h, w] (or [targets, h, w] for one image), got "
                                    f"shape {tuple(grids.shape)}")
        if not items:
            raise InvalidInputError("no grids given")
        for i, g in enumerate(items):
            if not isinstance(g, Tensor) or g.ndim != 3 or min(g.shape) < 1:
                raise InvalidInputError(f"grid {i} must be a tensor [targets, h, w], got "
                                        + (f"shape {tuple(g.shape)}" if isinstance(g, Tensor) else type(g).__name__))
        T = items[0].shape[0]
        if any(g.shape[0] != T for g in items):
            raise InvalidInputError(f"every image needs one grid per target: got {[g.shape[0] for g in items]} targets")
        names = [f"text {t}" for t in range(T)] if labels is None else list(labels)
        if len(names) != T:
            raise InvalidInputError(f"{T} targets in the grids but {len(names)} labels")
        sizes = _per_image(image_size, len(items), "image_size")
        srcs = [f"image {i}" for i in range(len(items))] if sources is None else list(sources)
        if len(srcs) != len(items):
            raise InvalidInputError(f"{len(items)} images but {len(srcs)} sources")
        out = []
        for g, (H, W), src in zip(items, sizes, srcs, strict=True):
            b = (0.0, 0.0, float(H), float(W)) if box is None else tuple(float(v) for v in box)
            if len(b) != 4 or not (b[2] > b[0] and b[3] > b[1]):
                raise InvalidInputError(f"box is (top, left, bottom, right) in the image's pixels with bottom > top "
                                        f"and right > left; got {box}")
            ins = input_size or (max(1, round(b[2] - b[0])), max(1, round(b[3] - b[1])))
            out.append(ImageMaps(g.detach().float().cpu(), (int(ins[0]), int(ins[1])), (H, W), b, src,  # type: ignore[arg-type]
                                 normalization))
        return cls(out, names, method, {"method": method, "normalization": normalization, **(settings or {})})


class MapMethod:
    """Base class of map methods. Parameters are keyword arguments of the constructor."""

    #: the registered name (set by :func:`register_map`)
    name: ClassVar[str] = ""
    #: whether the map depends on the text (baselines, raw attention and rollout do not; contrasts do not apply).
    #: The one place that says so: ``--method all`` runs the text-dependent methods (:func:`map_names`)
    text_dependent: ClassVar[bool] = True
    #: a baseline that does not look at the image (``uniform``, ``nothing``, ``gaussian``): left out of "all"
    baseline: ClassVar[bool] = False
    #: whether the method reads a second image backbone besides CLIP (a vision foundation model such as DINO,
    #: :mod:`cliplens.models.vfm`: weights of its own to download): left out of "all", run by name
    second_backbone: ClassVar[bool] = False
    #: whether :meth:`raw` needs the empty prompt's direction (``texts.empty``)
    needs_empty: bool = False
    #: the contrast used when the targets do not name one (see :mod:`cliplens.maps.targets`)
    default_contrast: ClassVar[str] = "none"
    #: whether a target's map depends on the other targets (CLIP Surgery's feature surgery): explaining one
    #: class of many then needs all of them
    uses_all_targets: bool = False
    #: whether the method runs on a tower without transformer blocks (an opaque trunk and a pooling head: OpenAI's
    #: ResNets); the others need attention blocks and refuse such a model with one paragraph
    #: (:func:`cliplens.core.trunk.needs_blocks`)
    runs_without_blocks: ClassVar[bool] = False
    #: how the method's authors resize the positional table for another token grid (``None``: the model's own
    #: rule), one of :data:`cliplens.core.plan.POSITIONAL_MODES`; each method's ``positional`` parameter
    #: defaults to it, and :meth:`plan_for` applies it to every forward the method runs
    own_positional: ClassVar[str | None] = None
    #: the paper the method comes from, and the code its defaults follow (``cliplens methods`` lists them)
    paper: ClassVar[str] = ""
    code: ClassVar[str] = ""

    def __init__(self, **params: Any) -> None:
        from cliplens.core.plan import POSITIONAL_MODES

        self.params: dict[str, Any] = dict(params)
        pos = self.params.setdefault("positional", type(self).own_positional)
        if pos is not None and pos not in POSITIONAL_MODES:
            raise InvalidInputError(f"positional must be one of {', '.join(POSITIONAL_MODES)} (or None: the "
                                    f"model's own rule); got {pos!r}")

    def plan_for(self, plan: Any = None) -> Any:
        """``plan`` (default: the model's own forward) with the method's positional rule
        (``self.params["positional"]``) for inputs at another grid than the model's."""
        from cliplens.core.plan import Plan

        plan = plan if plan is not None else Plan()
        pos = self.params.get("positional")
        return plan if pos is None else plan.interpolate(pos)

    def raw(self, model: ImageTextModel, pixels: Tensor, texts: TextEmbeddings) -> Tensor:
        """Raw score maps ``[B, T, h, w]`` for preprocessed ``pixels`` ``[B, 3, H, W]`` and unit-norm text
        directions ``texts.directions`` ``[T, E]``."""
        raise NotImplementedError

    def input_regions(self, px: Tensor) -> Tensor | None:
        """Regions ``[B, H, W]`` over the inputs ``px`` that the method's last run on ``px`` found, for
        :meth:`correct_labels` (kept on each image's maps as :attr:`ImageMaps.regions`); ``None`` for most
        methods."""
        return None

    def correct_labels(self, maps: ImageMaps, labels: Tensor) -> Tensor:
        """The method's own last step on labels ``[H0, W0]`` predicted from one image's ``maps`` (CorrCLIP's map
        correction); most methods have none and return ``labels``. ``segment`` and ``segment-eval`` apply it."""
        return labels

    def unsupported(self, model: ImageTextModel) -> str | None:
        """Why this method cannot run on ``model`` (``None``: it can). A group of methods (``--method all``)
        leaves such a method out with this note; asked for by name, it refuses with it. The base rule: a method
        that needs attention blocks cannot run on a tower without them (:attr:`runs_without_blocks`), and a method
        with a :attr:`second_backbone` cannot run without that backbone."""
        if not self.runs_without_blocks:
            why = blocks_message(f"the {self.name!r} map", model.vision)
            if why:
                return why
        if self.second_backbone:
            try:
                self.backbone(model)
            except CliplensError as e:
                return f"the {self.name!r} map needs its second backbone: {e}"
        return None

    def backbone(self, model: ImageTextModel) -> Any:
        """The second backbone of a :attr:`second_backbone` method: its ``vfm`` (a name, or the model object
        given) loaded by :func:`cliplens.models.vfm.load_vfm` on first use and cached per name, on the CLIP
        model's device and dtype."""
        from cliplens.models.vfm import load_vfm

        spec = getattr(self, "_vfm", None)
        return load_vfm(self.params["vfm"] if spec is None else spec, device=model.device, dtype=model.dtype)

    def describe(self) -> dict[str, Any]:
        return {"method": self.name, **{k: _plain(v) for k, v in sorted(self.params.items())}}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in sorted(self.params.items()))
        return f"{type(self).__name__}({args})"

    # ---- the pipeline every method shares -------------------------------------
    def __call__(
        self,
        model: ImageTextModel,
        images: Any,
        targets: Targets | str | Sequence[str],
        *,
        fit: str = "whole",
        size: int | None = None,
        window: int | None = None,
        stride: int | None = None,
        normalization: str = "minmax",
        batch_size: int = 8,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        skip_bad: bool = False,
    ) -> Maps:
        """Maps of ``targets`` over ``images`` (see :mod:`cliplens.maps.inputs` for ``fit`` and ``size``).

        ``window``/``stride`` (pixels of the fitted input): a sliding window; each window's maps are upsampled
        to its pixels and overlapping windows are averaged (no seams). ``normalization``: ``"minmax"`` per map
        (the original's) or ``"raw"``.
        """
        if normalization not in NORMALIZATIONS:
            raise InvalidInputError(f"normalization must be one of {', '.join(NORMALIZATIONS)}; got {normalization!r}")
        if batch_size < 1:
            raise InvalidInputError(f"batch_size must be at least 1, got {batch_size}")
        targets = as_targets(targets)
        if window is not None:
            ph, pw = model.vision.patch_size
            if window < max(ph, pw) or window % ph or window % pw:
                raise InvalidInputError(f"window must be a multiple of the patch size {ph}x{pw}, got {window}")
            stride = stride or window // 2
            if not 0 < stride <= window:
                raise InvalidInputError(f"stride must be between 1 and the window ({window}), got {stride}")
        elif stride is not None:
            raise InvalidInputError("stride is only used with a sliding window: pass window= too")
        contrast = targets.resolved_contrast(self.default_contrast) if self.text_dependent else "none"
        texts = targets.embed(model, with_empty=self.needs_empty or contrast == "empty")
        empty = (TextEmbeddings(texts.empty[None], ("",), texts.empty)
                 if contrast == "empty" and texts.empty is not None else None)
        fitted, skipped = fit_images(model, images, fit=fit, size=size, max_pixels=max_pixels, skip_bad=skip_bad,
                                     window=window)
        raws: list[Tensor | None] = [None] * len(fitted)
        found: dict[int, Tensor] = {}
        for _, idx in group_by_size(fitted).items():
            for start in range(0, len(idx), batch_size):
                chunk = idx[start:start + batch_size]
                px = torch.stack([fitted[i].pixels for i in chunk]).to(model.device, model.dtype)
                check_tokens(px, model.vision.patch_size, window)
                raw = self._contrasted(model, px, texts, empty, contrast, window, stride)
                regions = self.input_regions(px)
                for j, i in enumerate(chunk):
                    raws[i] = raw[j]
                    if regions is not None:
                        found[i] = regions[j].cpu()
        items = [ImageMaps(r.detach().float().cpu(), tuple(f.pixels.shape[-2:]), f.image_size, f.box, f.source,
                           normalization, found.get(i))
                 for i, (r, f) in enumerate(zip(raws, fitted, strict=True))]  # type: ignore[union-attr]
        settings = {**self.describe(), **targets.describe(), "contrast": contrast, "fit": fit,
                    "size": size or min(model.vision.image_size), "window": window, "stride": stride,
                    "normalization": normalization}
        return Maps(items, list(targets.names), self.name, settings, skipped)

    def _contrasted(self, model: ImageTextModel, px: Tensor, texts: TextEmbeddings, empty: TextEmbeddings | None,
                    contrast: str, window: int | None, stride: int | None) -> Tensor:
        def run(t: TextEmbeddings) -> Tensor:
            return self._raw(model, px, t) if window is None else self._windowed(model, px, t, window, stride or window)

        raw = run(texts)
        if contrast == "others":
            return contrast_others(raw, dim=1)
        if contrast == "empty":
            with warnings.catch_warnings():  # the empty prompt's own map: a one-text run, warnings about it mislead
                warnings.simplefilter("ignore")
                return raw - run(empty)  # type: ignore[arg-type]
        return raw

    def _raw(self, model: ImageTextModel, px: Tensor, texts: TextEmbeddings) -> Tensor:
        why = self.unsupported(model)
        if why:
            raise UnsupportedArchitectureError(why if why.endswith(".") else why + ".")
        with torch.no_grad():
            raw = self.raw(model, px, texts)
        if raw.dim() != 4 or raw.shape[:2] != (px.shape[0], texts.directions.shape[0]):
            raise InvalidInputError(f"map method {self.name!r} returned shape {tuple(raw.shape)}; expected "
                                    f"[{px.shape[0]}, {texts.directions.shape[0]}, h, w]")
        return raw

    def _windowed(self, model: ImageTextModel, px: Tensor, texts: TextEmbeddings, window: int, stride: int) -> Tensor:
        """Slide a ``window`` over each input; average the windows' maps (upsampled to pixels) where they overlap."""
        B, _, H, W = px.shape
        wh, ww = min(window, H), min(window, W)
        tops, lefts = window_positions(H, wh, stride), window_positions(W, ww, stride)
        T = texts.directions.shape[0]
        total = px.new_zeros(B, T, H, W, dtype=torch.float32)
        count = px.new_zeros(1, 1, H, W, dtype=torch.float32)
        boxes = [(t, lft) for t in tops for lft in lefts]
        for t, lft in boxes:
            crop = px[:, :, t:t + wh, lft:lft + ww]
            m = self._raw(model, crop, texts).float()
            m = F.interpolate(m, size=(wh, ww), mode="bilinear", align_corners=False) if m.shape[-2:] != (wh, ww) else m
            total[:, :, t:t + wh, lft:lft + ww] += m
            count[:, :, t:t + wh, lft:lft + ww] += 1
        return total / count


def _per_image(size: Any, n: int, what: str) -> list[tuple[int, int]]:
    """One ``(H, W)`` for all ``n`` images, or one per image -> ``n`` positive pairs."""
    try:
        pairs = [tuple(size)] * n if len(size) == 2 and all(isinstance(v, (int, float)) for v in size) \
            else [tuple(s) for s in size]
        out = [(int(h), int(w)) for h, w in pairs]
    except (TypeError, ValueError):
        raise InvalidInputError(f"{what} must be (H, W) or one (H, W) per image, got {size!r}") from None
    if len(out) != n or any(h < 1 or w < 1 for h, w in out):
        raise InvalidInputError(f"{what} must be (H, W) with H, W >= 1, for all or for each of the {n} images; "
                                f"got {size!r}")
    return out


def _plain(v: Any) -> Any:
    if isinstance(v, (bool, int, float, str)) or v is None:
        return v
    if isinstance(v, (tuple, list)):
        return [_plain(x) for x in v]
    return repr(v)


_REGISTRY: dict[str, type[MapMethod]] = {}
#: the modules of the built-in methods (each registers its own on import); loaded on the registry's first use
BUILTIN_MODULES: tuple[str, ...] = (
    "baselines", "cass", "chefer", "clearclip", "cliper", "corrclip", "decomposition", "gem", "gradcam", "legrad",
    "maskclip", "naclip", "proxyclip", "raw_attention", "resclip", "rollout", "scclip", "sclip", "sfp", "surgery",
    "token_similarity", "trident",
)


def _load_builtins() -> None:
    for module in BUILTIN_MODULES:
        importlib.import_module(f"cliplens.maps.{module}")


def register_map(name: str) -> Callable[[type[MapMethod]], type[MapMethod]]:
    """Decorator: register a :class:`MapMethod` subclass under ``name``."""

    def deco(cls: type[MapMethod]) -> type[MapMethod]:
        if not cls.__module__.startswith("cliplens.maps."):  # a user's method: the built-in names are taken first
            _load_builtins()
        if name in _REGISTRY:
            raise InvalidInputError(f"map method {name!r} is already registered")
        if not (isinstance(cls, type) and issubclass(cls, MapMethod)):
            raise InvalidInputError(f"register_map needs a MapMethod subclass, got {cls!r}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def map_names(*, text_dependent: bool | None = None, baseline: bool | None = None,
              second_backbone: bool | None = None) -> list[str]:
    """The registered map methods (sorted). ``text_dependent``: only those whose map depends on the text (``True``)
    or only those that ignore it (``False``: raw attention, rollout and the baselines); ``baseline``: only the
    baselines that do not look at the image (``True``) or none of them (``False``); ``second_backbone``: only the
    methods that also read a vision foundation model (``True``: ProxyCLIP, CASS) or only those that read CLIP alone
    (``False``; ``--method all`` runs those whose map depends on the text). Each reads the methods' own class
    attributes (:attr:`MapMethod.text_dependent`, :attr:`MapMethod.baseline`, :attr:`MapMethod.second_backbone`)."""
    _load_builtins()
    return sorted(name for name, cls in _REGISTRY.items()
                  if (text_dependent is None or cls.text_dependent == text_dependent)
                  and (baseline is None or cls.baseline == baseline)
                  and (second_backbone is None or cls.second_backbone == second_backbone))


def map_class(name: str) -> type[MapMethod]:
    """The class registered under ``name`` (a clear error listing the names otherwise)."""
    _load_builtins()
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise InvalidInputError(f"unknown map method {name!r}; registered: {', '.join(map_names())}") from None


def get_map(name: str | MapMethod, **params: Any) -> MapMethod:
    """A map method instance by name (with parameters), or an instance returned as is."""
    if isinstance(name, MapMethod):
        return name
    cls = map_class(name)
    try:
        return cls(**params)
    except (TypeError, ValueError) as e:  # an unknown parameter, or a value the constructor cannot read
        raise InvalidInputError(f"map method {name!r}: {e}") from None


#: ``cliplens.maps.get(name)``, the short name of :func:`get_map`
get = get_map
