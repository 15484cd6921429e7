"""Padding-free attention without the ``flash-attn`` package: PyTorch's variable-length FlashAttention.

TRL's padding-free collator concatenates a step's examples into one row and hands the model ``position_ids`` that
restart at every example plus ``cu_seq_lens_q``/``max_length_q`` (example boundaries, computed on the CPU). The
``flash_attention_2`` implementation in transformers uses those boundaries, but needs the ``flash-attn`` package, which
PyPI only ships as a source build against the CUDA toolkit. PyTorch (2.10 and later) carries the same kernels as
``torch.nn.attention.varlen.varlen_attn``; this module registers it with transformers as the attention implementation
``tuneform_varlen``, so each example attends causally to itself only, with no ``tokens x tokens`` mask and no padding.

Off CUDA (the tests), the same function runs one causal SDPA call per example: the same inputs, outputs and example
boundaries, so the wiring (shapes, grouped-query heads, boundaries, scaling) is exercised on any machine; only the
kernel differs.
"""

from __future__ import annotations

from typing import Any

from tuneform.training.recipe import VARLEN_ATTENTION


def varlen_attention_forward(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    *,
    dropout: float = 0.0,
    scaling: float | None = None,
    cu_seq_lens_q: Any = None,
    max_length_q: int | None = None,
    **kwargs: Any,
) -> tuple[Any, None]:
    """Causal attention within each example of a padding-free row; transformers' attention-interface signature.

    Args:
        module: The attention module (for ``is_causal``).
        query: ``(1, heads, tokens, head_dim)``.
        key: ``(1, kv_heads, tokens, head_dim)``.
        value: Like ``key``.
        attention_mask: Must be ``None``: padding-free rows have no padding to mask.
        dropout: Must be 0 (no decoder tuned here uses attention dropout).
        scaling: Softmax scale (``head_dim ** -0.5`` when ``None``).
        cu_seq_lens_q: ``int32`` example boundaries ``[0, end_1, ..., tokens]``; ``None`` = one example per row.
        max_length_q: The longest example.
        kwargs: Further model kwargs (``cu_seq_lens_k``, ``position_ids``, ...), unused: keys equal queries here.

    Returns:
        ``(output, None)`` with ``output`` of shape ``(1, tokens, heads, head_dim)``, as transformers expects.

    Raises:
        ValueError: For inputs this function is not for (a padding mask, a KV cache, dropout, several rows with
            boundaries).
    """
    import torch

    if attention_mask is not None or query.shape[2] != key.shape[2]:
        raise ValueError(
            f"{VARLEN_ATTENTION} attention is for padding-free training batches; got an attention mask or a KV cache"
        )
    if dropout:
        raise ValueError(f"{VARLEN_ATTENTION} attention does not apply attention dropout")
    batch, _, tokens, head_dim = query.shape
    if cu_seq_lens_q is None:
        # Rows without boundaries: each row is one example (an unpacked batch without padding).
        cu_seq_lens_q = torch.arange(0, (batch + 1) * tokens, tokens, dtype=torch.int32, device=query.device)
        max_length_q = tokens
    elif batch != 1:
        raise ValueError(f"{VARLEN_ATTENTION} attention: expected one padding-free row, got {batch}")
    scale = scaling if scaling is not None else head_dim**-0.5
    # (batch, heads, tokens, dim) -> (batch * tokens, heads, dim): the varlen layout.
    q, k, v = (x.transpose(1, 2).reshape(batch * tokens, x.shape[1], head_dim) for x in (query, key, value))
    if q.is_cuda:
        from torch.nn.attention.varlen import varlen_attn

        # Under autocast the rotary embedding can return fp32 (cos/sin follow the fp32 residual stream in full
        # fine-tuning); the kernels take bf16/fp16 only.
        if q.dtype == torch.float32 and torch.is_autocast_enabled("cuda"):
            dtype = torch.get_autocast_dtype("cuda")
            q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
        output: Any = varlen_attn(
            q,
            k,
            v,
            cu_seq_lens_q,
            cu_seq_lens_q,
            int(max_length_q or tokens),
            int(max_length_q or tokens),
            scale=scale,
            window_size=(-1, 0),  # causal
            enable_gqa=q.shape[1] != k.shape[1],
        )
    else:
        bounds = cu_seq_lens_q.tolist()
        pieces = [
            torch.nn.functional.scaled_dot_product_attention(
                q[start:end].transpose(0, 1),
                k[start:end].transpose(0, 1),
                v[start:end].transpose(0, 1),
                is_causal=True,
                scale=scale,
                enable_gqa=q.shape[1] != k.shape[1],
            ).transpose(0, 1)
            for start, end in zip(bounds[:-1], bounds[1:], strict=True)
            if end > start
        ]
        output = torch.cat(pieces, dim=0)
    return output.reshape(batch, tokens, q.shape[1], head_dim), None


def register_varlen_attention() -> str:
    """Make ``attn_implementation="tuneform_varlen"`` available to transformers models; returns the name.

    No mask function is registered on purpose: transformers then builds no mask at all for this implementation (it
    would otherwise look for packed sequences in ``position_ids``, a device->host sync, and build a dense mask).
    """
    from transformers import AttentionInterface

    AttentionInterface.register(VARLEN_ATTENTION, varlen_attention_forward)
    return VARLEN_ATTENTION
