"""A pure-PyTorch stand-in for the few ``flash_attn`` helpers OpenRLHF imports at import time.

``openrlhf/models/ring_attn_utils.py`` imports ``flash_attn.bert_padding`` (unpad/pad helpers) and
``flash_attn.utils.distributed.all_gather`` unconditionally, although they are plain tensor
functions that only the packed-sample path uses. In a process without CUDA and without flash-attn
(the CPU backend's driver and workers, CI, a dry run on a laptop, the job driver on a CPU-only
head node of a GPU cluster) :func:`install` registers this stand-in so that OpenRLHF's modules
import; such a process builds no model on a GPU. In a process with CUDA it never does anything:
a GPU node without a working flash-attn build fails at OpenRLHF's import, naming flash_attn, as it
would without this project. Where the real package is installed :func:`install` does nothing.
Attention kernels are not provided: transformers still reports flash-attn as unavailable, so
``model.attn_implementation: flash_attention_2`` fails at model load; use ``sdpa`` or ``eager``.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import types

import torch
import torch.distributed as dist
from einops import rearrange

STANDIN_MARKER = "__apmpo_standin__"


def index_first_axis(tensor: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Rows ``indices`` of ``tensor`` flattened over its first axis (as flash_attn.bert_padding)."""
    return tensor.reshape(tensor.shape[0], -1)[indices].reshape(-1, *tensor.shape[1:])


def unpad_input(hidden_states: torch.Tensor, attention_mask: torch.Tensor, unused_mask=None):
    """[B, S, ...] + [B, S] mask -> (valid tokens [N, ...], indices, cu_seqlens, max_seqlen, seqused)."""
    all_masks = attention_mask + unused_mask if unused_mask is not None else attention_mask
    seqlens = all_masks.sum(dim=-1, dtype=torch.int32)
    used_seqlens = attention_mask.sum(dim=-1, dtype=torch.int32)
    indices = torch.nonzero(all_masks.flatten(), as_tuple=False).flatten()
    max_seqlen = int(seqlens.max().item())
    cu_seqlens = torch.nn.functional.pad(torch.cumsum(seqlens, dim=0, dtype=torch.int32), (1, 0))
    flat = rearrange(hidden_states, "b s ... -> (b s) ...")
    return index_first_axis(flat, indices), indices, cu_seqlens, max_seqlen, used_seqlens


def pad_input(hidden_states: torch.Tensor, indices: torch.Tensor, batch: int, seqlen: int) -> torch.Tensor:
    """Inverse of :func:`unpad_input`: scatter [N, ...] back into zeros of shape [B, S, ...]."""
    out = torch.zeros(batch * seqlen, *hidden_states.shape[1:], device=hidden_states.device, dtype=hidden_states.dtype)
    out[indices] = hidden_states
    return rearrange(out, "(b s) ... -> b s ...", b=batch)


def all_gather(input_: torch.Tensor, process_group) -> torch.Tensor:
    """Concatenate ``input_`` from every rank of ``process_group`` along the first axis."""
    world_size = dist.get_world_size(process_group)
    output = torch.empty(world_size * input_.shape[0], *input_.shape[1:], dtype=input_.dtype, device=input_.device)
    dist.all_gather_into_tensor(output, input_.contiguous(), group=process_group)
    return output


def install() -> bool:
    """Register the stand-in as ``flash_attn`` in a process without CUDA where the real package is
    not importable (see the module docstring).

    Returns True when the stand-in is (now) in use.
    """
    existing = sys.modules.get("flash_attn")
    if existing is not None:
        return bool(getattr(existing, STANDIN_MARKER, False))
    if torch.cuda.is_available() or importlib.util.find_spec("flash_attn") is not None:
        return False
    root = types.ModuleType("flash_attn")
    root.__path__ = []  # a package, so that submodule imports resolve through sys.modules
    setattr(root, STANDIN_MARKER, True)
    bert_padding = types.ModuleType("flash_attn.bert_padding")
    for fn in (index_first_axis, pad_input, unpad_input):
        setattr(bert_padding, fn.__name__, fn)
    bert_padding.rearrange = rearrange
    utils = types.ModuleType("flash_attn.utils")
    utils.__path__ = []
    distributed = types.ModuleType("flash_attn.utils.distributed")
    distributed.all_gather = all_gather
    root.bert_padding, root.utils, utils.distributed = bert_padding, utils, distributed
    modules = {
        "flash_attn": root,
        "flash_attn.bert_padding": bert_padding,
        "flash_attn.utils": utils,
        "flash_attn.utils.distributed": distributed,
    }
    for name, module in modules.items():
        # A spec keeps importlib.util.find_spec() working; with no __version__ and no __file__,
        # transformers' availability check still reports flash-attn as not installed.
        module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=hasattr(module, "__path__"))
    sys.modules.update(modules)
    return True
