"""The forward as a plan: what each block does.

``embed → block(plan_l) for each l → head``. A :class:`BlockPlan` names

* its attention strategy (an :class:`~cliplens.core.attention.AttentionStrategy`, with its
  parameters; the token grid reaches it through its context),
* whether the residual connection around attention is kept (``residual``: ``x + attn(x)`` or
  ``attn(x)``) and whether the MLP is kept (``mlp``: ``x + mlp(ln_2(x))`` or ``x``),
* any :class:`SidePath`: a second stream that *reads* the main stream at that block and
  accumulates its own output, while the main stream runs on untouched (CLIP Surgery's v-v path,
  GEM's self-self path).

A :class:`Plan` is a list of rules, each applying changes to some layers, resolved against a
tower's depth when the forward runs, so that "the last 6 blocks" means the same thing for any
model. The default plan is the model's own forward::

    Plan()                                                        # vanilla everywhere
    Plan().at(-1, attention="vanilla", residual=False, mlp=False) # last block: attention only
    Plan().side(range(-6, 0), SidePath("surgery", attention={"name": "self-self", "source": "v"}))  # v-v path

Layer indices may be negative (counted from the end), an int, a range, a slice or any iterable.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from cliplens.core.attention import AttentionStrategy, get_attention
from cliplens.errors import InvalidInputError

Layers = int | slice | Iterable[int]


def _strategy(spec: str | AttentionStrategy | dict[str, Any]) -> AttentionStrategy:
    return get_attention(spec)  # type: ignore[arg-type]


@dataclass(frozen=True)
class SidePath:
    """A parallel stream over some blocks.

    At the first block where it appears it starts from the main stream's input to that block
    (``start="residual"``) or from zeros (``start="zero"``). At every block where it appears it
    adds ``attention(q, k, v)`` computed from the *main* stream's ``ln_1`` output (q, k and v
    with their biases), passed through the block's out-projection (with its bias and layer-scale),
    and, when ``mlp`` is true, then adds the block's MLP applied to its own stream. The main
    stream never sees it. Its tokens leave through ``ln_post`` and the projection as the dense
    output ``side.{name}.dense``.
    """

    name: str
    attention: AttentionStrategy | str = "vanilla"
    start: Literal["residual", "zero"] = "residual"
    mlp: bool = False

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").isalnum():
            raise InvalidInputError(f"a side path's name must be a word (letters, digits, _), got {self.name!r}")
        if self.start not in ("residual", "zero"):
            raise InvalidInputError(f"SidePath.start must be 'residual' or 'zero', got {self.start!r}")
        object.__setattr__(self, "attention", _strategy(self.attention))

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "attention": self.attention.describe(),  # type: ignore[union-attr]
                "start": self.start, "mlp": self.mlp}


@dataclass(frozen=True)
class BlockPlan:
    """What one block does (see the module docs)."""

    attention: AttentionStrategy | str = "vanilla"
    residual: bool = True
    mlp: bool = True
    side: tuple[SidePath, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "attention", _strategy(self.attention))
        names = [s.name for s in self.side]
        if len(set(names)) != len(names):
            raise InvalidInputError(f"a block has two side paths with the same name: {names}")

    @property
    def is_vanilla(self) -> bool:
        return self.attention.name == "vanilla" and self.residual and self.mlp and not self.side  # type: ignore[union-attr]

    def describe(self) -> dict[str, Any]:
        return {"attention": self.attention.describe(), "residual": self.residual,  # type: ignore[union-attr]
                "mlp": self.mlp, "side": [s.describe() for s in self.side]}


def select_layers(num_layers: int, layers: Layers | None = None, last: int | None = None) -> list[int] | None:
    """The one rule for choosing layers by index or from the end: ``layers=`` are layer indices (negatives count
    from the end), ``last=k`` the last ``k`` layers; ``None`` when neither is given (the caller's default).

    A non-negative int ``layers=k`` is refused where it used to mean "the last k" (``decompose``, TEXTSPAN, the
    report, the toy heads): read as an index now, an old call would silently analyse another layer. The message
    names both spellings: ``last=k`` and ``layers=[k]``. Negative ints never meant "the last k" and are indices."""
    if layers is not None and last is not None:
        raise InvalidInputError("give layers= (layer indices) or last= (the number of last layers), not both")
    if last is not None:
        if isinstance(last, bool) or not isinstance(last, int) or not 1 <= last <= num_layers:
            raise InvalidInputError(f"the last {last!r} layers: the tower has {num_layers} layers, so the number of "
                                    f"last layers (last=K, --last K) is 1..{num_layers}")
        return list(range(num_layers - last, num_layers))
    if layers is None:
        return None
    if isinstance(layers, int) and not isinstance(layers, bool) and layers >= 0:
        raise InvalidInputError(
            f"layers={layers} is ambiguous: layers= takes layer indices and last= a number of last layers (an int "
            f"layers=k used to mean the last k). For the last {layers} layers pass last={layers}; for layer "
            f"{layers} alone pass layers=[{layers}]")
    return resolve_layer_indices(layers, num_layers)


def resolve_layer_indices(layers: Layers, num_layers: int, what: str = "layer") -> list[int]:
    """Layer indices (negatives from the end) -> sorted, distinct, in ``0..num_layers-1``."""
    if isinstance(layers, bool):
        raise InvalidInputError(f"{what} indices must be integers, got {layers!r}")
    if isinstance(layers, int):
        items = [layers]
    elif isinstance(layers, slice):
        items = list(range(num_layers))[layers]
    else:
        try:
            items = list(layers)
        except TypeError:
            raise InvalidInputError(f"{what} indices must be an int, a slice or a list of ints, got "
                                    f"{type(layers).__name__}") from None
    out = []
    for i in items:
        if isinstance(i, bool) or not isinstance(i, int):
            try:
                i = int(i)  # numpy / torch integers
            except (TypeError, ValueError):
                raise InvalidInputError(f"{what} index {i!r} is not an integer") from None
        j = i + num_layers if i < 0 else i
        if not 0 <= j < num_layers:
            raise InvalidInputError(
                f"{what} {i} is out of range for a {num_layers}-layer tower (valid: 0..{num_layers - 1}, "
                f"or -{num_layers}..-1 counted from the end)"
            )
        out.append(j)
    return sorted(set(out))


#: how the patch part of the positional embedding is resized for another token grid (``align_corners=False``,
#: the CLS position kept, the table as is at its own grid):
#:
#: * "bicubic" (to the exact size, no antialiasing): Hugging Face's ``interpolate_pos_encoding`` and mmseg's
#:   (MaskCLIP's) rule, the default of most models;
#: * "bicubic_dino": bicubic with the *scale factor* ``(n + 0.1) / n₀`` per side (DINO's
#:   ``interpolate_pos_encoding``, which NACLIP, SCLIP, ClearCLIP and ResCLIP use): the same output size, sampled
#:   at slightly other points;
#: * "bicubic_antialias": bicubic to the exact size with antialiasing (timm's ``resample_abs_pos_embed``: GEM,
#:   LeGrad);
#: * "bilinear" (no antialiasing): CLIP Surgery's;
#: * "bilinear_antialias": SigLIP 2 NaFlex's (``Siglip2VisionEmbeddings``, in float32).
POSITIONAL_MODES = ("bicubic", "bicubic_dino", "bicubic_antialias", "bilinear", "bilinear_antialias")


@dataclass(frozen=True)
class Plan:
    """Rules ``(layers, changes)`` applied in order to the vanilla plan (see the module docs), and how the
    positional embedding is resized for other grids (``positional``, one of :data:`POSITIONAL_MODES`; ``None``:
    the model's own rule, :attr:`cliplens.core.view.VisionView.positional`)."""

    rules: tuple[tuple[Any, dict[str, Any]], ...] = field(default=())
    positional: str | None = None

    def __post_init__(self) -> None:
        if self.positional is not None and self.positional not in POSITIONAL_MODES:
            raise InvalidInputError(f"positional must be one of {', '.join(POSITIONAL_MODES)}; got "
                                    f"{self.positional!r}")

    def interpolate(self, positional: str) -> Plan:
        """The same plan with positions resized by ``positional`` (one of :data:`POSITIONAL_MODES`) for other
        grids."""
        return replace(self, positional=positional)

    def at(self, layers: Layers, **changes: Any) -> Plan:
        """A plan where ``layers`` get ``changes`` (``attention``, ``residual``, ``mlp``)."""
        bad = set(changes) - {"attention", "residual", "mlp"}
        if bad:
            raise InvalidInputError(f"Plan.at takes attention=, residual=, mlp=; got {sorted(bad)} "
                                    "(side paths: Plan.side)")
        if "attention" in changes:
            changes["attention"] = _strategy(changes["attention"])
        return replace(self, rules=self.rules + ((_freeze(layers), changes),))

    def side(self, layers: Layers, path: SidePath) -> Plan:
        """A plan where ``path`` runs alongside the main stream over ``layers``."""
        if not isinstance(path, SidePath):
            raise InvalidInputError(f"Plan.side needs a SidePath, got {type(path).__name__}")
        return replace(self, rules=self.rules + ((_freeze(layers), {"side": path}),))

    def resolve(self, num_layers: int) -> tuple[BlockPlan, ...]:
        """One :class:`BlockPlan` per layer of a ``num_layers``-deep tower."""
        blocks = [BlockPlan() for _ in range(num_layers)]
        for layers, changes in self.rules:
            for i in resolve_layer_indices(layers, num_layers):
                if "side" in changes:
                    blocks[i] = replace(blocks[i], side=blocks[i].side + (changes["side"],))
                else:
                    blocks[i] = replace(blocks[i], **changes)
        return tuple(blocks)

    def describe(self, num_layers: int) -> list[dict[str, Any]]:
        """Per layer, what it does (JSON-serialisable)."""
        return [b.describe() for b in self.resolve(num_layers)]

    def is_vanilla(self, num_layers: int) -> bool:
        return all(b.is_vanilla for b in self.resolve(num_layers))


def _freeze(layers: Layers) -> Any:
    if isinstance(layers, (int, slice)):
        return layers
    try:
        return tuple(layers)
    except TypeError:
        raise InvalidInputError(f"layers must be an int, a slice or a list of ints, got {type(layers).__name__}") from None


VANILLA = Plan()
