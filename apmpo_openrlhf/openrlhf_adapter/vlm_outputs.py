"""A vision-language model's saved folders get its processor files, so they load like the base model.

OpenRLHF 0.11.2's policy actor saves ``final_model/`` and ``checkpoints/global_step*_hf/`` with
``self.tokenizer`` (trainer/ray/ppo_actor.py ``save_model`` / ``save_checkpoint``), which for a VLM is
the plain tokenizer: ``get_tokenizer(pretrain, actor.model, ...)`` tests ``is_vlm`` on the Hugging
Face model, where OpenRLHF's ``Actor`` wrapper keeps it. Without the image processor's
configuration neither ``AutoProcessor`` nor vLLM can open the folder (the evaluation harness could
not evaluate the trained Qwen2.5-VL). :class:`ProcessorFilesMixin` copies the processor files of
the base model into every folder the actor saves, on the rank that saved it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

# transformers 5 writes processor_config.json; older processors preprocessor_config.json (+ video)
PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json", "video_preprocessor_config.json",
                   "chat_template.json", "chat_template.jinja")


def copy_processor_files(source: str | os.PathLike, target: str | os.PathLike) -> list[str]:
    """Copy the processor files ``source`` has and ``target`` lacks; returns their names."""
    copied = []
    for name in PROCESSOR_FILES:
        src, dst = Path(source) / name, Path(target) / name
        if src.is_file() and not dst.exists():
            shutil.copyfile(src, dst)
            copied.append(name)
    return copied


class ProcessorFilesMixin:
    """For the policy actor: after OpenRLHF saves a Hugging Face folder, add the processor files."""

    def save_model(self):
        result = super().save_model()
        self._add_processor_files(self.strategy.args.ckpt.output_dir)
        return result

    def save_checkpoint(self, tag, client_states=None, metric_value=None, metric_key=None):
        result = super().save_checkpoint(tag, client_states, metric_value, metric_key)
        if self.save_hf_ckpt:
            self._add_processor_files(os.path.join(self.strategy.args.ckpt.path, f"{tag}_hf"))
        return result

    def _add_processor_files(self, folder: str) -> None:
        import torch.distributed as dist
        from openrlhf.utils.utils import is_vlm_model

        if dist.is_initialized() and dist.get_rank() != 0:
            return  # OpenRLHF's save_model writes on rank 0 only
        pretrain = self.strategy.args.actor.model_name_or_path
        if Path(folder, "config.json").is_file() and is_vlm_model(pretrain):
            copy_processor_files(pretrain, folder)
