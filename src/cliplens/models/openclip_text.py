"""open_clip's text side, as cliplens uses it: the model's own tokenizer (or why it cannot be had, said at text
time, never at load time) and the text tower run only up to the end-of-text token when its causal mask allows
it (the rule: :meth:`~cliplens.models.base.CLIPAdapter._pooled_positions`). Used by
:class:`~cliplens.models.openclip.OpenCLIPAdapter`; open_clip is imported inside the functions.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from cliplens.models.hub import offline_guard, short

__all__ = ["CLIP_VOCAB", "assumed_tokenizer", "causal_text_tower", "default_tokenizer", "encode_text_prefix"]


#: the vocabulary of open_clip's standard CLIP tokenizer (BPE; OpenAI's and every LAION / DataComp CLIP)
CLIP_VOCAB = 49408


def assumed_tokenizer(open_clip: Any, model: nn.Module) -> tuple[Any, str | None, str | None]:
    """``cliplens.wrap(model)`` with no ``name=`` and no ``tokenizer=``: ``(tokenizer, error, note)``. A text tower
    whose vocabulary is the standard CLIP tokenizer's gets that tokenizer and a ``note`` (warned once, at the first
    text) naming it and how to choose another; any other tower (a Hugging Face text model, SigLIP's SentencePiece
    vocabulary, ...) gets no tokenizer and an ``error`` (raised at text time; the image side works): cliplens
    cannot know which tokenizer it was trained with, and a wrong one gives wrong embeddings without a sign."""
    how = ("pass name= (its open_clip name, e.g. cliplens.wrap(model, name='ViT-B-16'), which picks its tokenizer) "
           "or tokenizer= (e.g. open_clip.get_tokenizer('ViT-B-16'), or any callable texts -> LongTensor "
           "[batch, context])")
    text = getattr(model, "text", None)
    vocab = getattr(model, "vocab_size", None) or getattr(text, "vocab_size", None)
    if vocab != CLIP_VOCAB:
        kind = (f"a vocabulary of {vocab} tokens" if vocab else
                f"a {type(text).__name__} text tower" if text is not None else "no text tower cliplens can read")
        return None, (f"cliplens.wrap(model) got no name= and no tokenizer=, and this model's text side has {kind}, "
                      f"not the standard CLIP tokenizer's {CLIP_VOCAB}: cliplens cannot know its tokenizer (the "
                      f"image side works without one); {how}."), None
    return open_clip.get_tokenizer("ViT-B-32"), None, (
        f"cliplens.wrap(model) got no name=: texts are tokenized with open_clip's standard CLIP tokenizer (BPE, "
        f"{CLIP_VOCAB} tokens, the one of OpenAI's and LAION's CLIPs; this model's vocabulary has that size). If it "
        f"was trained with another, {how}.")


def default_tokenizer(open_clip: Any, name: str) -> tuple[Any, str | None]:
    """``(tokenizer, None)``: open_clip's own tokenizer for ``name``; or ``(None, why)`` when the model's tokenizer is
    a Hugging Face one (SigLIP's SentencePiece models, …) that cannot be had (offline, not cached): text then
    raises ``why``, naming what to do. Other names that open_clip cannot resolve get the standard CLIP BPE
    tokenizer (the tokenizer of every open_clip CLIP)."""
    if not name:
        return open_clip.get_tokenizer("ViT-B-32"), None
    hf_name = None
    try:
        hf_name = ((open_clip.get_model_config(name) or {}).get("text_cfg") or {}).get("hf_tokenizer_name")
    except Exception:  # a name open_clip has no config for (an hf-hub: name offline)
        pass
    try:
        # a Hugging Face tokenizer may need the Hub: look once, and read the cache at once when it does not answer
        # (instead of minutes of retries)
        with offline_guard(network=hf_name is not None or "siglip" in name.lower()):
            return open_clip.get_tokenizer(name), None
    except Exception as e:  # unknown/offline name
        if hf_name is None and "siglip" not in name.lower():
            return open_clip.get_tokenizer("ViT-B-32"), None
        which = f"the Hugging Face tokenizer {hf_name!r}" if hf_name else "its Hugging Face tokenizer"
        return None, (
            f"{name} needs {which}, which could not be loaded ({type(e).__name__}: {short(e, 200)}); the image "
            "side works without it, text needs it. Run once with network access (it is then cached), or pass "
            "tokenizer= to cliplens.load / cliplens.wrap: e.g. open_clip.tokenizer.HFTokenizer('/path/to/"
            "tokenizer-folder', context_length=64, clean='canonicalize'), or any callable texts -> "
            "LongTensor [batch, context]."
        )


def _is_causal(mask: Any) -> bool:
    """Whether ``mask`` is an additive ``[L, L]`` causal mask (-inf above the diagonal, 0 on and below it)."""
    if not isinstance(mask, Tensor) or mask.ndim != 2 or mask.shape[0] != mask.shape[1] or not mask.is_floating_point():
        return False
    upper = torch.ones(mask.shape, dtype=torch.bool, device=mask.device).triu(1)
    return bool((mask[upper] == float("-inf")).all()) and bool((mask[~upper] == 0).all())


def causal_text_tower(model: Any) -> tuple[nn.Module, str, int | None] | None:
    """``(module, pool type, eos id)`` of an open_clip text tower that may run only up to the end-of-text token
    (the rule: :meth:`CLIPAdapter._pooled_positions`); ``None`` for one that must see the whole context.

    Qualify: ``CLIP`` (its own ``encode_text``) and ``CustomTextCLIP`` with open_clip's own ``TextTransformer``
    (its own forward, no class token, no padding mask, no token output), with a causal ``attn_mask`` and
    ``argmax`` / ``eos`` pooling. Not: ``'last'`` / ``'first'`` pooling, bidirectional towers (SigLIP-style,
    ``no_causal_mask``), Hugging Face text towers (``HFTextEncoder``), CoCa, subclasses that change the forward.
    """
    try:
        from open_clip.model import CLIP, CustomTextCLIP
        from open_clip.transformer import TextTransformer
    except ImportError:  # pragma: no cover - another open_clip layout: keep the full length
        return None
    if isinstance(model, CLIP) and type(model).encode_text is CLIP.encode_text:
        tower, pool, eos = model, getattr(model, "text_pool_type", None), getattr(model, "text_eos_id", None)
    elif (isinstance(model, CustomTextCLIP) and type(model).encode_text is CustomTextCLIP.encode_text
          and isinstance(model.text, TextTransformer) and type(model.text).forward is TextTransformer.forward):
        text = model.text
        if text.cls_emb is not None or getattr(text, "use_pad_mask", False) or text.output_tokens:
            return None
        tower, pool, eos = text, text.pool_type, getattr(text, "eos_id", None)
    else:
        return None
    if pool not in ("argmax", "eos") or (pool == "eos" and eos is None) or not _is_causal(getattr(tower, "attn_mask", None)):
        return None
    return tower, pool, eos


def encode_text_prefix(tower: nn.Module, pool: str, eos: int | None, tokens: Tensor) -> Tensor:
    """open_clip's text forward (``CLIP.encode_text`` / ``TextTransformer.forward``) on the first ``L`` positions of
    a qualifying tower: positional embeddings and the causal mask cut to ``L``, pooled as the tower pools."""
    from open_clip.transformer import text_global_pool

    n = tokens.shape[1]
    cast = tower.transformer.get_cast_dtype()
    x = tower.token_embedding(tokens).to(cast) + tower.positional_embedding[:n].to(cast)
    x = tower.transformer(x, attn_mask=tower.attn_mask[:n, :n])
    x = text_global_pool(tower.ln_final(x), tokens, pool, eos_token_id=eos)
    proj = tower.text_projection
    if proj is None:
        return x
    return proj(x) if isinstance(proj, nn.Linear) else x @ proj
