"""The local backend: one process, PyTorch + transformers, CPU or one CUDA GPU.

Each step: draw B prompts, sample G responses each (temperature from the config), grade them with
the registered reward of ``reward.task``, compute group advantages and the adaptive statistics,
old and reference log-probs, then take ``optimizer_steps_per_rollout`` AdamW steps over shuffled
mini-batches (SPEC.md 5) with the policy loss of the registry plus the KL loss. Every formula
comes from :mod:`apmpo_openrlhf.algorithms`; this module only moves tensors around.
"""

from __future__ import annotations

import copy
import json
import math
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from ..algorithms import (
    adaptive_parameters,
    get_policy_loss,
    rollout_correction_weights,
    rollout_mismatch,
    rollout_reward_summary,
)
from ..config import TRAIN_CONFIG_FILE, TrainConfig, save_config
from ..rewards.outcomes import OutcomeCounter
from ..rewards.registry import get_reward_spec
from .checkpoint import list_checkpoints, load_latest, rng_state, save_checkpoint, set_rng_state
from .data import SetupError, build_eval_prompts, build_prompt_source, render_prompt
from .metrics import MetricsLogger, format_summary, run_summary
from .rollout import Rollout, generate, token_log_probs

# Prompts per generate() call: bounds the KV cache of a real model on one GPU.
GENERATION_CHUNK_PROMPTS = 64


def resolve_device(cfg: TrainConfig) -> torch.device:
    want = cfg.local.device
    if want == "cuda" and not torch.cuda.is_available():
        raise SetupError("local.device='cuda' but no CUDA device is available (use 'auto' or 'cpu')")
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(want)


def prepare_model_dir(cfg: TrainConfig, output_dir: Path) -> Path:
    """``model.path``, or the tiny model built once into ``<output_dir>/base_model`` (seeded)."""
    if cfg.model.path is not None:
        path = Path(cfg.model.path)
        if not (path / "config.json").is_file():
            raise SetupError(f"model.path={cfg.model.path!r}: not a Hugging Face model directory (no config.json)")
        return path
    from ..models.tiny import build_tiny_model

    t = cfg.local.tiny_model
    return build_tiny_model(
        output_dir / "base_model",
        hidden_size=t.hidden_size,
        num_layers=t.num_layers,
        num_heads=t.hidden_size // 32,
        intermediate_size=t.intermediate_size,
        seed=cfg.seed,
    )


def check_cpu_model_settings(cfg: TrainConfig, device: torch.device) -> None:
    """The schema's model defaults (bfloat16, flash_attention_2) are GPU settings, right for the
    OpenRLHF backend; a local config that keeps them on the CPU stops here, naming both keys."""
    if device.type == "cuda":
        return
    problems = []
    if cfg.model.attn_implementation == "flash_attention_2":
        problems.append("model.attn_implementation='flash_attention_2' needs CUDA; on CPU use 'sdpa' or 'eager'")
    if cfg.model.dtype != "float32":
        problems.append(f"model.dtype={cfg.model.dtype!r}: on CPU use 'float32' (half-precision CPU kernels are "
                        "slow, and AdamW on half-precision weights drops small updates)")
    if problems:
        raise SetupError(f"{'; '.join(problems)} (local.device={cfg.local.device!r} resolved to CPU; "
                         "configs/local/default.yaml sets float32 and sdpa)")


def load_model(cfg: TrainConfig, path: Path, device: torch.device):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = getattr(torch, cfg.model.dtype)
    model = AutoModelForCausalLM.from_pretrained(
        str(path), dtype=dtype, attn_implementation=cfg.model.attn_implementation
    ).to(device)
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if cfg.model.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    return model, tokenizer


def lr_factor(step: int, warmup_steps: int, total_steps: int, schedule: str, min_lr_ratio: float) -> float:
    """Learning-rate multiplier at optimizer step ``step``: linear warm-up from 0, then constant or
    cosine decay to ``min_lr_ratio`` at ``total_steps``. These are the formulas of transformers'
    ``constant_with_warmup`` / ``cosine_with_min_lr`` schedules, which OpenRLHF's actor uses
    (tests compare them); importing transformers.optimization would pull in bitsandbytes."""
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_lr_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """``train.lr_schedule`` over the planned optimizer steps (``max_steps`` x steps per rollout)."""
    t = cfg.train
    total = cfg.max_steps * cfg.optimizer_steps_per_rollout
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, t.warmup_steps, total, t.lr_schedule, t.min_lr_ratio)
    )


class Trainer:
    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.output_dir = Path(cfg.output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        if cfg.local.num_threads is not None:
            torch.set_num_threads(cfg.local.num_threads)
        self.device = resolve_device(cfg)
        check_cpu_model_settings(cfg, self.device)  # before the tiny model is built or a model is loaded
        self.model_dir = prepare_model_dir(cfg, self.output_dir)
        self.model, self.tokenizer = load_model(cfg, self.model_dir, self.device)
        try:
            # every answer graded under reward.timeout_s, as reward_func does on the OpenRLHF backend
            self.reward = get_reward_spec(cfg.reward.task).with_timeout(cfg.reward.timeout_s)
        except KeyError as e:
            raise SetupError(f"reward.task={cfg.reward.task!r}: {e.args[0]}") from None
        self.reward_outcomes = OutcomeCounter()
        # local.warmstart: supervised warm start (cached, own RNG) before the reference copy is taken.
        self.warmstart = self._warm_start()
        # Seed after building/loading, so a run is the same whether or not base_model already existed.
        torch.manual_seed(cfg.seed)
        self.ref_model = None
        if cfg.algorithm.kl_beta > 0:
            self.ref_model = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.loss = get_policy_loss(cfg.algorithm.loss)  # everything about the loss comes from its entry
        self.loss_kwargs = self.loss.parameters(cfg)
        self.prompts = build_prompt_source(cfg)
        self.eval_prompts = build_eval_prompts(cfg)
        self.eval_enabled = bool(cfg.eval.at_step0 or cfg.eval.every_steps)
        if self.eval_enabled and self.eval_prompts is None:
            print("warning: eval.at_step0/eval.every_steps are set but data.train_path has no data.eval_path: "
                  "evaluation is off", file=sys.stderr)
            self.eval_enabled = False
        t = cfg.train
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=t.lr, betas=tuple(t.adam_betas), weight_decay=t.weight_decay
        )
        self.scheduler = build_lr_scheduler(self.optimizer, cfg)
        self.shuffle_gen = torch.Generator().manual_seed(cfg.seed + 1)
        self.step = 0
        self.elapsed_s = 0.0  # training wall-clock time, summed over resumed segments
        # every response sampled for training (dynamic sampling's extra rounds included), over the run;
        # local.max_generated_samples stops training once it reaches the budget
        self.samples_generated_total = 0
        # Written once the setup is accepted (a rejected config leaves an earlier run's file alone); the
        # evaluation harness reads method, seed and base model from it (evaluation/run_info.py).
        save_config(cfg, self.output_dir / TRAIN_CONFIG_FILE)

    def _warm_start(self) -> dict | None:
        if self.cfg.local.warmstart.target_accuracy is None:
            return None
        from .warmstart import warm_start

        return warm_start(self.cfg, self.model, self.tokenizer, self.device, self.output_dir, self.reward)

    # ----------------------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict:
        return {
            "step": self.step,
            "elapsed_s": self.elapsed_s,
            "samples_generated_total": self.samples_generated_total,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng_state(),
            "shuffle_gen": self.shuffle_gen.get_state(),
            "prompts": self.prompts.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        self.shuffle_gen.set_state(state["shuffle_gen"])
        self.prompts.load_state_dict(state["prompts"])
        self.step = int(state["step"])
        self.elapsed_s = float(state["elapsed_s"])
        total = state.get("samples_generated_total")
        # a checkpoint written before the counter existed: count the logged steps' sampled groups
        self.samples_generated_total = int(total) if total is not None else self._logged_samples(self.step)

    def _logged_samples(self, last_step: int) -> int:
        """Samples generated over steps 1..last_step according to metrics.jsonl (rollout/num_groups counts
        every group sampled for a step, dynamic sampling's extra rounds included)."""
        from .metrics import read_metrics

        path = self.output_dir / "metrics.jsonl"
        rows = [r for r in (read_metrics(path) if path.exists() else []) if r.get("step", 0) <= last_step]
        if len(rows) < last_step or any("rollout/num_groups" not in r for r in rows):
            raise SetupError(f"{path}: cannot recover the generated-sample count of the checkpoint at step "
                             f"{last_step} (written before samples_generated_total was recorded); resume it "
                             "without local.max_generated_samples or start a fresh output_dir")
        return sum(int(r["rollout/num_groups"]) for r in rows) * self.cfg.rollout.n_samples_per_prompt

    def budget_spent(self) -> bool:
        """``local.max_generated_samples`` is set and the run has generated that many training samples."""
        budget = self.cfg.local.max_generated_samples
        return budget is not None and self.samples_generated_total >= budget

    def finished(self) -> bool:
        return self.step >= self.cfg.max_steps or self.budget_spent()

    def maybe_resume(self) -> None:
        if not self.cfg.checkpoint.resume:
            return
        found = load_latest(self.output_dir, map_location="cpu")
        if found is not None:
            self.load_state_dict(found[1])
            if self.finished():
                note = "already complete: nothing to train"
            else:
                note = f"resuming at step {self.step} of {self.cfg.max_steps}"
            print(
                f"{self.output_dir}: {note} (checkpoint.resume=true; use --set output_dir=DIR for a fresh run)",
                file=sys.stderr,
            )

    def save(self) -> None:
        save_checkpoint(self.output_dir, self.step, self.state_dict(), self.cfg.checkpoint.max_keep)

    # ----------------------------------------------------------------------------- rollout
    def grade(self, responses: list[str], labels: list[dict]) -> torch.Tensor:
        """Rewards of the responses, each graded under reward.timeout_s; how each was graded (timeout,
        error, no answer) is counted in ``self.reward_outcomes`` under the OpenRLHF backend's names."""
        def one(pair):
            return self.reward.grade(*pair)

        pairs = list(zip(responses, labels))
        if self.cfg.reward.num_workers > 1 and len(pairs) > 1:
            with ThreadPoolExecutor(self.cfg.reward.num_workers) as pool:
                grades = list(pool.map(one, pairs))
        else:
            grades = [one(p) for p in pairs]
        for _, reason in grades:
            self.reward_outcomes.add_reason(reason)
        return torch.tensor([score for score, _ in grades], dtype=torch.float32, device=self.device)

    def sample_groups(self, n_prompts: int) -> tuple[Rollout, torch.Tensor]:
        cfg, r = self.cfg, self.cfg.rollout
        records = self.prompts.sample(n_prompts)
        texts = [render_prompt(self.tokenizer, rec["prompt"], cfg.data.apply_chat_template) for rec in records]
        self.model.eval()
        rollout = generate(
            self.model, self.tokenizer, texts, [rec["label"] for rec in records], r.n_samples_per_prompt,
            r.temperature, r.top_p, r.max_new_tokens, r.max_prompt_len, GENERATION_CHUNK_PROMPTS,
            record_log_probs=cfg.algorithm.rollout_correction.measure, min_new_tokens=r.min_new_tokens,
        )
        return rollout, self.grade(rollout.responses, rollout.labels)

    def collect(self) -> tuple[Rollout, torch.Tensor, dict]:
        """One rollout batch; with DAPO dynamic filtering, groups with equal rewards are replaced."""
        cfg = self.cfg
        B, G = cfg.rollout.prompts_per_step, cfg.rollout.n_samples_per_prompt
        rollout, rewards = self.sample_groups(B)
        all_rewards = [rewards]
        stats: dict = {}
        if cfg.algorithm.dynamic_filtering:
            kept_r, kept_w = [], []
            for round_ in range(cfg.local.dynamic_sampling_max_rounds):
                if round_ > 0:
                    rollout, rewards = self.sample_groups(B)
                    all_rewards.append(rewards)
                g = rewards.view(-1, G)
                keep = ~(g == g[:, :1]).all(-1)
                rows = torch.nonzero(keep.repeat_interleave(G)).squeeze(-1)
                if rows.numel():
                    kept_r.append(rollout.select(rows))
                    kept_w.append(rewards[rows])
                if sum(w.numel() for w in kept_w) >= B * G:
                    break
            if kept_w:
                rollout = _concat(kept_r, self.tokenizer)
                rewards = torch.cat(kept_w)
                rows = torch.arange(min(rewards.numel(), B * G), device=rewards.device)
                rollout, rewards = rollout.select(rows), rewards[rows]
            else:
                rollout, rewards = None, None
            stats["groups_kept"] = 0 if rewards is None else rewards.numel() // G
        stats["all_rewards"] = torch.cat(all_rewards)
        # both batches' raw rewards, under the keys the OpenRLHF backend logs
        stats.update(rollout_reward_summary(stats["all_rewards"], rewards, G))
        return rollout, rewards, stats

    # ----------------------------------------------------------------------------- training
    def shaped_rewards(self, rollout: Rollout, rewards: torch.Tensor) -> torch.Tensor:
        """DAPO overlong shaping (optional): a length penalty on top of the raw reward."""
        a = self.cfg.algorithm
        buf = a.overlong_buffer_len
        if buf is None:
            return rewards
        max_len = self.cfg.rollout.max_new_tokens
        over = rollout.response_lengths.float() - (max_len - buf)
        penalty = (over / buf * a.overlong_penalty_factor).clamp(min=0.0, max=a.overlong_penalty_factor)
        return rewards - penalty

    @torch.no_grad()
    def reference_log_probs(self, model, rollout: Rollout, with_entropy: bool):
        mb = self.cfg.train.micro_batch_size
        lps, ents = [], []
        for s in range(0, rollout.sequences.shape[0], mb):
            lp, ent = token_log_probs(
                model, rollout.sequences[s : s + mb], rollout.attention_mask[s : s + mb], rollout.prompt_len,
                self.cfg.rollout.temperature, with_entropy,
            )
            lps.append(lp)
            ents.append(ent)
        return torch.cat(lps), (torch.cat(ents) if with_entropy else None)

    def train_on(self, rollout: Rollout, rewards: torch.Tensor, sampled_rewards: torch.Tensor | None = None) -> dict:
        """Optimizer steps on the kept groups; ``sampled_rewards`` (every group sampled for the step,
        dynamic filtering's dropped ones included) give mu_R / sigma_R unless
        ``algorithm.adaptive_statistics`` is ``kept``."""
        cfg, a = self.cfg, self.cfg.algorithm
        G = cfg.rollout.n_samples_per_prompt
        adv = self.loss.advantages(self.shaped_rewards(rollout, rewards), G, a.advantage_std, a.advantage_delta)
        batch = sampled_rewards if a.adaptive_statistics == "sampled" else None
        # every run logs the adaptive statistics (adaptive/*); only an adaptive loss trains with them
        ada = adaptive_parameters(rewards, G, **a.adaptive.model_dump(), batch_rewards=batch)
        self.model.eval()
        old_lp, entropy = self.reference_log_probs(self.model, rollout, with_entropy=True)
        ref_lp = self.reference_log_probs(self.ref_model, rollout, False)[0] if self.ref_model is not None else None
        mask = rollout.action_mask
        correction = a.rollout_correction
        sample_lp = rollout.sample_log_probs
        self.model.train()

        n = rewards.numel()
        perm = torch.randperm(n, generator=self.shuffle_gen).to(self.device)
        tb, mb = cfg.train.train_batch_size, cfg.train.micro_batch_size
        sums: dict[str, float] = {}
        weight_total = 0.0
        grad_norms, losses, kls = [], [], []
        for start in range(0, n, tb):
            batch = perm[start : start + tb]
            count = max(self.loss.step_count(batch.numel(), int(mask[batch].sum())), 1)
            self.optimizer.zero_grad(set_to_none=True)
            step_loss = step_kl = 0.0
            for ms in range(0, batch.numel(), mb):
                rows = batch[ms : ms + mb]
                lp, _ = token_log_probs(
                    self.model, rollout.sequences[rows], rollout.attention_mask[rows], rollout.prompt_len,
                    cfg.rollout.temperature,
                )
                kwargs = dict(self.loss_kwargs)
                kwargs[self.loss.divisor] = count
                if self.loss.adaptive:
                    kwargs["p"] = ada.p[rows]
                    kwargs["eps_high"] = ada.eps_high[rows]
                extra: dict[str, float] = {}
                if correction.level != "off":
                    kwargs["is_weights"], filtered = rollout_correction_weights(
                        old_lp[rows], sample_lp[rows], mask[rows], correction.level, correction.mode,
                        correction.gating, correction.threshold,
                    )
                    extra["is_filter_ratio"] = float(filtered)
                loss, metrics = self.loss(lp, old_lp[rows], adv[rows], mask[rows], **kwargs)
                total = loss
                if ref_lp is not None:
                    kl = self.kl_loss(lp, ref_lp[rows], mask[rows], count)
                    total = total + a.kl_beta * kl
                    step_kl += float(kl.detach())
                total.backward()
                step_loss += float(loss.detach())
                w = float(mask[rows].sum())
                weight_total += w
                for k, v in [*metrics.items(), *extra.items()]:
                    sums[k] = sums.get(k, 0.0) + float(v) * w
            grad_norms.append(float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.train.grad_clip)))
            self.optimizer.step()
            self.scheduler.step()
            losses.append(step_loss)
            kls.append(step_kl)

        out = {k: v / max(weight_total, 1.0) for k, v in sums.items()}
        out.update(
            entropy=float(entropy[mask].mean()) if mask.any() else 0.0,
            loss=sum(losses) / len(losses),
            kl=sum(kls) / len(kls),
            grad_norm=sum(grad_norms) / len(grad_norms),
            lr=self.scheduler.get_last_lr()[0],
            optimizer_steps=len(losses),
            response_length=float(rollout.response_lengths.float().mean()),
        )
        # the batch statistics under the OpenRLHF backend's names (experience.py)
        out.update({f"adaptive/{k}": v for k, v in ada.summary().items()})
        if sample_lp is not None:
            out.update(rollout_mismatch(old_lp, sample_lp, mask))
        return out

    def kl_loss(self, log_probs: torch.Tensor, ref_log_probs: torch.Tensor, mask: torch.Tensor, count) -> torch.Tensor:
        """KL term of one micro-batch (SPEC.md 4; multiply by beta), aggregated like the policy term
        over the ``count`` sequences (or tokens) of its optimizer step: the registry entry's
        ``kl_penalty``, which the OpenRLHF actor reproduces (openrlhf_adapter/actor.py)."""
        return self.loss.kl_penalty(log_probs, ref_log_probs, mask, self.cfg.algorithm.kl_estimator,
                                    self.loss_kwargs, count)

    def train_step(self) -> dict:
        t0 = time.perf_counter()
        self.reward_outcomes.reset()
        rollout, rewards, stats = self.collect()
        grading = self.reward_outcomes.take()  # every response graded for the step, filtered groups too
        all_rewards = stats.pop("all_rewards")
        row = {"step": self.step + 1}
        if rollout is not None:
            row.update(self.train_on(rollout, rewards, all_rewards))
        else:  # every group had equal rewards: nothing to learn from this step
            row.update(optimizer_steps=0)
        row.update(stats)
        row.update(grading)
        row["samples_generated"] = int(all_rewards.numel())  # every response sampled for this step
        self.samples_generated_total += row["samples_generated"]
        row["samples_generated_total"] = self.samples_generated_total
        row["reward_mean"] = float(all_rewards.mean())
        row["reward_std"] = float(all_rewards.std(correction=0))
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        row["step_time_s"] = time.perf_counter() - t0
        self.elapsed_s += row["step_time_s"]
        row["elapsed_s"] = self.elapsed_s
        self.step += 1
        return row

    @torch.no_grad()
    def sample_and_grade(self, records: list[dict], n: int, temperature: float, top_p: float,
                         seed: int) -> tuple[Rollout, torch.Tensor]:
        """n samples per record, graded, under a forked RNG seeded with ``seed``: evaluation (eval,
        held-out Pass@k, benchmarks) never changes the training trajectory."""
        cfg = self.cfg
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices, device_type=self.device.type):
            torch.manual_seed(seed)
            texts = [render_prompt(self.tokenizer, r["prompt"], cfg.data.apply_chat_template) for r in records]
            self.model.eval()
            rollout = generate(
                self.model, self.tokenizer, texts, [r["label"] for r in records], n, temperature, top_p,
                cfg.rollout.max_new_tokens, cfg.rollout.max_prompt_len, GENERATION_CHUNK_PROMPTS,
                min_new_tokens=cfg.rollout.min_new_tokens,
            )
            return rollout, self.grade(rollout.responses, rollout.labels)

    def evaluate(self) -> dict:
        """Mean reward on the held-out prompts (eval temperature/top_p, n samples each).

        Sampling runs under a forked RNG seeded from the step, so evaluating never changes the
        training trajectory (a run with and without eval trains identically).
        """
        cfg, e = self.cfg, self.cfg.eval
        self.reward_outcomes.reset()
        rollout, rewards = self.sample_and_grade(
            self.eval_prompts, e.n_samples_per_prompt, e.temperature, e.top_p, seed=cfg.seed * 100_003 + self.step
        )
        return {"step": self.step, "eval_reward_mean": float(rewards.mean()), "eval_samples": rewards.numel(),
                "eval_response_length": float(rollout.response_lengths.float().mean()),
                **self.reward_outcomes.take()}

    def save_final_model(self) -> Path:
        out = self.output_dir / "final_model"
        self.model.save_pretrained(out)
        self.tokenizer.save_pretrained(out)
        return out

    def fit(self) -> None:
        cfg = self.cfg
        self.maybe_resume()
        logger = MetricsLogger(cfg, self.output_dir, self.step)
        h = cfg.local.heldout_eval
        heldout = None
        if (h.at_end or h.every_steps) and self.eval_prompts is not None:
            from .heldout_eval import HeldoutLog, heldout_pass_at_k

            heldout = HeldoutLog(self.output_dir, self.step)
        bar = None
        if cfg.local.progress_bar:
            from tqdm import tqdm

            bar = tqdm(total=cfg.max_steps, initial=self.step, desc=f"{cfg.name} [{cfg.algorithm.loss}]",
                       unit="step", file=sys.stderr, dynamic_ncols=True)
        try:
            if self.eval_enabled and cfg.eval.at_step0 and self.step == 0:
                logger.log(self.evaluate(), kind="eval")
            if heldout is not None and h.every_steps and self.step == 0:
                heldout.log(heldout_pass_at_k(self), final=False)
            start_step = self.step
            while not self.finished():
                row = self.train_step()
                logger.log(row)
                if self.eval_enabled and cfg.eval.every_steps and self.step % cfg.eval.every_steps == 0:
                    logger.log(self.evaluate(), kind="eval")
                last = self.finished()  # max_steps, or local.max_generated_samples spent
                if heldout is not None and ((h.every_steps and self.step % h.every_steps == 0) or (h.at_end and last)):
                    heldout.log(heldout_pass_at_k(self), final=last)
                if bar is not None:
                    bar.set_postfix(reward=f"{row['reward_mean']:.3f}", p=f"{row.get('p', math.nan):.3f}",
                                    eps=f"{row.get('eps_high', math.nan):.3f}", samples=self.samples_generated_total)
                    bar.update(1)
                if self.step % cfg.checkpoint.save_steps == 0 or last:
                    self.save()
            ends_off_schedule = not cfg.eval.every_steps or self.step % cfg.eval.every_steps
            if self.eval_enabled and self.step > start_step and ends_off_schedule:
                logger.log(self.evaluate(), kind="eval")  # the end-of-run figure is always measured
        finally:
            if bar is not None:
                bar.close()
            logger.close()
        if cfg.checkpoint.save_hf:
            self.save_final_model()


def _concat(parts: list[Rollout], tokenizer) -> Rollout:
    """Join rollouts of several generation rounds (each padded differently) into one batch."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    P = max(r.prompt_len for r in parts)
    T = max(r.action_mask.shape[1] for r in parts)
    seqs, ams, masks = [], [], []
    for r in parts:
        lp, rp = P - r.prompt_len, T - r.action_mask.shape[1]
        s = r.sequences
        seqs.append(torch.nn.functional.pad(s, (lp, rp), value=pad))
        ams.append(torch.nn.functional.pad(r.attention_mask, (lp, rp), value=0))
        masks.append(torch.nn.functional.pad(r.action_mask, (0, rp), value=False))
    sample_lp = None
    if all(r.sample_log_probs is not None for r in parts):
        sample_lp = torch.cat([torch.nn.functional.pad(r.sample_log_probs, (0, T - r.action_mask.shape[1]))
                               for r in parts])
    return Rollout(
        torch.cat(seqs), torch.cat(ams), torch.cat(masks), P,
        [t for r in parts for t in r.responses], [lab for r in parts for lab in r.labels], sample_lp,
    )


def run(cfg: TrainConfig) -> int:
    """Train with the local backend; returns the process exit code (2 for a setup error)."""
    t0 = time.perf_counter()
    try:
        trainer = Trainer(cfg)
    except SetupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    trainer.fit()
    final = list_checkpoints(trainer.output_dir)
    budget = cfg.local.max_generated_samples
    reached = f" (local.max_generated_samples={budget} reached)" if trainer.budget_spent() else ""
    print(f"done: {trainer.step} steps, {trainer.samples_generated_total} samples generated{reached}, metrics in "
          f"{trainer.output_dir / 'metrics.jsonl'}" + (f", checkpoint {final[-1][1]}" if final else ""), file=sys.stderr)
    if trainer.step > 0:
        summary = run_summary(trainer.output_dir, wall_s=time.perf_counter() - t0)
        (trainer.output_dir / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
        print(format_summary(summary), file=sys.stderr)
    return 0
