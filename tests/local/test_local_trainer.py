"""The local trainer end to end on a tiny model: metrics, learning signal, resume, every loss."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

from apmpo_openrlhf.config import ConfigError, load_config
from apmpo_openrlhf.local.checkpoint import list_checkpoints
from apmpo_openrlhf.local.metrics import read_metrics
from apmpo_openrlhf.local.trainer import Trainer, run

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

REQUIRED = [
    "step", "reward_mean", "reward_std", "entropy", "p", "eps_high", "clip_frac_high", "clip_frac_low",
    "response_length", "step_time_s", "adaptive/p", "adaptive/eps_high", "adaptive/fss", "adaptive/mu_R",
    "adaptive/sigma_R", "vllm_kl", "mismatch/kl_k3", "mismatch/log_ratio_abs_mean", "mismatch/log_ratio_abs_max",
    "mismatch/ratio_outside_2x",
]
TIMING = {"step_time_s", "elapsed_s"}


def _weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_short_run_writes_metrics_and_changes_the_model(small_config):
    cfg = small_config("logging.tensorboard=true")
    trainer = Trainer(cfg)
    before = _weights(trainer.model)
    trainer.fit()
    rows = read_metrics(trainer.output_dir / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3]
    for r in rows:
        for key in REQUIRED:
            assert key in r and math.isfinite(r[key]), key
        assert 0.0 <= r["reward_mean"] <= 1.0
        assert r["optimizer_steps"] == 2  # 64 samples / train_batch_size 32
        assert 0.0 <= r["clip_frac_high"] <= 1.0 and 0.0 <= r["clip_frac_low"] <= 1.0
        assert 1.0 <= r["response_length"] <= cfg.rollout.max_new_tokens
        # APMPO with exp schedule: p = exp(-0.8 mu_R), eps_high from tanh(FSS) (SPEC.md 3).
        assert r["p"] == pytest.approx(math.exp(-0.8 * r["reward_mean"]), rel=1e-5)
        assert 0.2 - 1e-6 <= r["eps_high"] <= 0.4 + 1e-6
        assert (r["adaptive/p"], r["adaptive/eps_high"]) == pytest.approx((r["p"], r["eps_high"]), rel=1e-6)
        assert r["adaptive/mu_R"] == pytest.approx(r["reward_mean"], rel=1e-6)
        # The sampler is the trained model itself (same weights, dtype and temperature, top_p 1): the
        # mismatch is float noise of cached decoding against one full forward.
        assert 0 <= r["mismatch/log_ratio_abs_max"] < 1e-4 and r["mismatch/ratio_outside_2x"] == 0.0
    after = trainer.model.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(changed) == len(before), f"unchanged parameters: {set(before) - set(changed)}"
    # The reference model stays at the initial weights (KL term of SPEC.md 4).
    for k, v in trainer.ref_model.state_dict().items():
        assert torch.equal(v, before[k])
    assert any((trainer.output_dir / "tensorboard").iterdir())
    # The final model is an ordinary Hugging Face directory that the same loader opens.
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(trainer.output_dir / "final_model")
    assert torch.equal(reloaded.state_dict()["lm_head.weight"], after["lm_head.weight"])


def _run_to_end(cfg) -> tuple[dict[str, torch.Tensor], list[dict]]:
    trainer = Trainer(cfg)
    trainer.fit()
    rows = [{k: v for k, v in r.items() if k not in TIMING} for r in read_metrics(trainer.output_dir / "metrics.jsonl")]
    return _weights(trainer.model), rows


def test_resume_equals_an_uninterrupted_run(small_config):
    full_w, full_rows = _run_to_end(small_config("max_steps=4", name="full"))
    # Stop after 2 steps, then start again with the same output_dir.
    _run_to_end(small_config("max_steps=2", "checkpoint.save_hf=false", name="resumed"))
    res_w, res_rows = _run_to_end(small_config("max_steps=4", name="resumed"))
    assert res_rows == full_rows
    for k in full_w:
        assert torch.equal(full_w[k], res_w[k]), k


class _InterruptedAfterStep2(Trainer):
    """Dies during step 3, after the step-2 checkpoint: a crash with max_steps (and so the LR schedule) unchanged."""

    def train_step(self):
        if self.step == 2:
            raise KeyboardInterrupt
        return super().train_step()


def test_resume_under_the_cosine_schedule_equals_an_uninterrupted_run(small_config):
    """The default's cosine schedule depends on max_steps: a resumed run continues on the same curve."""
    cosine = ["max_steps=4", "train.lr_schedule=cosine", "train.min_lr_ratio=0.1", "checkpoint.save_steps=2"]
    full_w, full_rows = _run_to_end(small_config(*cosine, name="full"))
    lrs = [r["lr"] for r in full_rows]
    assert lrs == sorted(lrs, reverse=True) and lrs[-1] < lrs[0]
    with pytest.raises(KeyboardInterrupt):
        _InterruptedAfterStep2(small_config(*cosine, name="crashed")).fit()
    res_w, res_rows = _run_to_end(small_config(*cosine, name="crashed"))
    assert res_rows == full_rows
    for k in full_w:
        assert torch.equal(full_w[k], res_w[k]), k


def test_rerun_says_whether_it_resumes_or_is_complete(small_config, capsys):
    _run_to_end(small_config("max_steps=2", name="again"))
    capsys.readouterr()
    _run_to_end(small_config("max_steps=3", name="again"))
    assert "resuming at step 2 of 3" in capsys.readouterr().err
    _run_to_end(small_config("max_steps=3", name="again"))
    assert "already complete: nothing to train" in capsys.readouterr().err


def test_killed_process_resumes_from_its_last_checkpoint(small_config, small_overrides, default_config, tmp_path):
    """A real training process killed mid-run continues to the same result as an uninterrupted run.

    The kill lands wherever the process happens to be (a busy machine may let it run many steps
    past its first checkpoint), so the comparison run is sized from the checkpoint it left.
    """
    import time

    out = tmp_path / "killed"
    args = [sys.executable, "-m", "apmpo_openrlhf.train", "--config", str(default_config)]
    sets = [*small_overrides, f"output_dir={out}", "checkpoint.save_steps=2", "max_steps=1000"]
    for s in sets:
        args += ["--set", s]
    proc = subprocess.Popen(args, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        t0 = time.monotonic()
        # Kill once a checkpoint exists and the run has logged a step past it (a partial step is lost).
        while time.monotonic() - t0 < 300:
            ck = list_checkpoints(out)
            metrics = out / "metrics.jsonl"
            n = len(metrics.read_text().splitlines()) if metrics.exists() else 0
            if ck and n >= ck[-1][0] + 1:
                break
            if proc.poll() is not None:
                pytest.fail(f"training process exited early with {proc.returncode}")
            time.sleep(0.02)
        else:
            pytest.fail("no checkpoint within 300 s")
        proc.kill()
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    step = list_checkpoints(out)[-1][0]
    assert 2 <= step < 1000
    logged = len((out / "metrics.jsonl").read_text().splitlines())
    assert logged >= step  # the killed run's rows up to its checkpoint are on disk
    target = step + 2  # the resumed run trains 2 steps the killed one never finished
    full_w, full_rows = _run_to_end(small_config(f"max_steps={target}", name="full"))
    cfg = load_config(default_config, [*sets[:-1], f"max_steps={target}", "checkpoint.save_steps=1"])
    res_w, res_rows = _run_to_end(cfg)
    assert len(res_rows) == target
    assert res_rows == full_rows
    for k in full_w:
        assert torch.equal(full_w[k], res_w[k]), k


@pytest.mark.parametrize(
    "overrides",
    [
        ["algorithm.loss=grpo"],
        ["algorithm.loss=dapo", "algorithm.dynamic_filtering=true", "algorithm.overlong_buffer_len=2"],
        ["algorithm.loss=gmpo", "algorithm.kl_beta=0"],
        ["algorithm.adaptive.scope=group", "algorithm.adaptive.p_schedule=linear", "algorithm.adaptive.fss=mu",
         "algorithm.adaptive.eps_schedule=linear", "algorithm.clip=symmetric"],
        ["algorithm.adaptive.p_schedule=fixed", "algorithm.adaptive.p_fixed=0.5", "algorithm.adaptive.fss=inv_sigma",
         "algorithm.adaptive.eps_schedule=fixed", "algorithm.adaptive.eps_fixed=0.3", "algorithm.kl_estimator=k2",
         "algorithm.advantage_std=unbiased", "train.warmup_steps=2"],
        ["algorithm.loss=gspo"],
        ["algorithm.loss=drgrpo"],
        ["algorithm.loss=cispo"],
    ],
    ids=["grpo", "dapo-dynamic", "gmpo-nokl", "apmpo-group-linear", "apmpo-fixed", "gspo", "drgrpo", "cispo"],
)
def test_every_loss_and_adaptive_option_trains(small_config, overrides):
    cfg = small_config("max_steps=2", "checkpoint.save_hf=false", *overrides)
    trainer = Trainer(cfg)
    before = _weights(trainer.model)
    trainer.fit()
    rows = read_metrics(trainer.output_dir / "metrics.jsonl")
    assert len(rows) == 2
    loss = cfg.algorithm.loss
    for r in rows:
        if r["optimizer_steps"] == 0:  # dynamic filtering dropped every group
            continue
        assert math.isfinite(r["loss"]) and math.isfinite(r["kl"])
        if loss == "grpo":
            assert r["p"] == pytest.approx(1.0) and r["eps_high"] == pytest.approx(0.2)
        elif loss == "dapo":
            assert r["eps_high"] == pytest.approx(0.28) and r["groups_kept"] <= cfg.rollout.prompts_per_step
        elif loss == "gmpo":
            assert r["kl"] == 0.0 and r["eps_high"] == pytest.approx(math.expm1(0.4), rel=1e-5)
        elif loss == "gspo":  # the paper's sequence-level clip range
            assert r["p"] == 0.0 and (r["eps_low"], r["eps_high"]) == pytest.approx((3e-4, 4e-4))
        elif loss in ("drgrpo", "cispo"):
            assert r["p"] == 1.0 and r["eps_high"] == pytest.approx({"drgrpo": 0.2, "cispo": 0.28}[loss])
        if loss != "apmpo":  # the adaptive statistics are logged for every method, for comparison
            assert r["adaptive/p"] == pytest.approx(math.exp(-0.8 * r["adaptive/mu_R"]), rel=1e-5)
    if cfg.algorithm.adaptive.p_schedule == "fixed" and loss == "apmpo":
        assert all(r["p"] == pytest.approx(0.5) and r["eps_high"] == pytest.approx(0.3) for r in rows)
    if any(r["optimizer_steps"] for r in rows):
        assert any(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())


@pytest.mark.parametrize(
    "override, key",
    [
        ("local.task.min_operand=7", "local.task"),
        ("local.tiny_model.hidden_size=48", "local.tiny_model.hidden_size"),
        ("local.device=tpu", "local.device"),
        ("local.nonsense=1", "local.nonsense"),
        ("local.task.operations=['*']", "local.task.operations"),
        ("train.train_batch_size=7", "train.train_batch_size"),
        ("algorithm.adaptive.eps_min=0.5", "algorithm.adaptive"),
    ],
)
def test_bad_config_values_name_the_key(default_config, override, key):
    overrides = [override]
    if override.startswith("local.task.min_operand"):
        overrides.append("local.task.max_operand=3")
    with pytest.raises(ConfigError) as e:
        load_config(default_config, overrides)
    assert key in str(e.value)


@pytest.mark.parametrize(
    "override, key",
    [
        ("model.path=/nonexistent/model", "model.path"),
        ("data.train_path=/nonexistent/train.jsonl", "data.train_path"),
        ("model.attn_implementation=flash_attention_2", "model.attn_implementation"),
        ("model.dtype=bfloat16", "model.dtype"),
    ],
)
def test_setup_errors_exit_2_and_name_the_key(small_config, capsys, override, key):
    assert run(small_config(override, "local.device=cpu")) == 2
    assert key in capsys.readouterr().err


def test_schema_gpu_model_defaults_on_cpu_stop_with_both_keys_and_the_cpu_values(tmp_path, capsys):
    """A local config of one's own that does not extend configs/local/default.yaml keeps the schema's
    GPU defaults (bfloat16, flash_attention_2): on the CPU the run stops before building anything,
    with one message naming both keys and the values that work there."""
    from apmpo_openrlhf import train

    own = tmp_path / "own.yaml"
    own.write_text(f"backend: local\noutput_dir: {tmp_path / 'out'}\nlocal:\n  device: cpu\n")
    cfg = load_config(own)
    assert (cfg.model.dtype, cfg.model.attn_implementation) == ("bfloat16", "flash_attention_2")
    assert train.main(["--config", str(own)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert "model.attn_implementation='flash_attention_2' needs CUDA; on CPU use 'sdpa' or 'eager'" in err
    assert "model.dtype='bfloat16': on CPU use 'float32'" in err
    assert not (tmp_path / "out" / "base_model").exists() and not (tmp_path / "out" / "train_config.yaml").exists()
    # The same config with the CPU values passes this check (it then trains; not run here).
    from apmpo_openrlhf.local.trainer import check_cpu_model_settings

    fixed = load_config(own, ["model.dtype=float32", "model.attn_implementation=eager"])
    check_cpu_model_settings(fixed, torch.device("cpu"))


def test_jsonl_math_prompts_with_chat_template(small_config, tmp_path, tiny_model_dir):
    """The real-data path: a JSONL prompt file, the chat template, the math reward (math-verify)."""
    problems = [("What is $2+3$?", "5"), ("Compute $7 \\times 6$.", "42"), ("What is $10-4$?", "6"),
                ("Simplify $\\frac{6}{3}$.", "2"), ("What is $3^2$?", "9")]
    path = tmp_path / "train.jsonl"
    with path.open("w") as f:
        for q, a in problems:
            label = json.dumps({"task": "math", "answer": a})
            f.write(json.dumps({"prompt": [{"role": "user", "content": q}], "label": label}) + "\n")
    cfg = small_config(
        f"model.path={tiny_model_dir}", f"data.train_path={path}", "data.apply_chat_template=true",
        "reward.task=math", "rollout.max_new_tokens=8", "max_steps=2", "checkpoint.save_hf=false",
    )
    trainer = Trainer(cfg)
    rendered = trainer.tokenizer.apply_chat_template(
        [{"role": "user", "content": problems[0][0]}], tokenize=False, add_generation_prompt=True
    )
    assert rendered.startswith("<|im_start|>user\n") and rendered.endswith("<|im_start|>assistant\n")
    trainer.fit()
    rows = read_metrics(trainer.output_dir / "metrics.jsonl")
    assert len(rows) == 2 and all(r["reward_mean"] == 0.0 for r in rows)  # a random model solves nothing
    # The grader itself is live: a correct boxed answer scores 1 through the same spec.
    assert trainer.reward.grade("so \\boxed{5}", {"task": "math", "answer": "5"})[0] == 1.0


@pytest.mark.slow  # W&B starts a service process: ~10 s alone, much more on a loaded machine
def test_wandb_offline_logging(small_config, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = small_config("max_steps=1", "logging.wandb.mode=offline", "logging.wandb.project=apmpo-test",
                       "checkpoint.save_hf=false")
    Trainer(cfg).fit()
    cfg_out = Path(cfg.output_dir)
    runs = list(cfg_out.glob("wandb/offline-run-*"))
    assert runs, f"no offline W&B run under {cfg_out}"
    assert (cfg_out / "wandb_run_id").read_text().strip() in runs[0].name


def test_evaluation_does_not_change_training(small_config):
    _, plain_rows = _run_to_end(small_config("max_steps=2", "checkpoint.save_hf=false", name="plain"))
    cfg = small_config("max_steps=2", "checkpoint.save_hf=false", "eval.at_step0=true", "eval.every_steps=1",
                       "eval.n_samples_per_prompt=2", name="with_eval")
    _, eval_rows = _run_to_end(cfg)
    assert eval_rows == plain_rows
    evals = read_metrics(Path(cfg.output_dir) / "eval.jsonl")
    assert [e["step"] for e in evals] == [0, 1, 2]
    assert all(e["eval_samples"] == 25 * 2 and 0.0 <= e["eval_reward_mean"] <= 1.0 for e in evals)


def test_fresh_runs_are_reproducible_with_an_existing_base_model(small_config):
    _, first = _run_to_end(small_config("max_steps=2", "checkpoint.save_hf=false", name="a"))
    # Same output_dir without resuming: base_model exists now and is reused, results must not move.
    _, again = _run_to_end(small_config("max_steps=2", "checkpoint.save_hf=false", "checkpoint.resume=false", name="a"))
    assert again == first


def test_run_saves_its_config_where_the_evaluation_harness_reads_it(small_config):
    """<output_dir>/train_config.yaml holds the resolved config; evaluating final_model/ then reports
    the run's method, seed and name without flags."""
    import yaml

    from apmpo_openrlhf.config import validate
    from evaluation.run_info import resolve_run_identity

    cfg = small_config("max_steps=1", "algorithm.loss=gmpo", "seed=3", "name=ablation-x", name="gmpo_seed3")
    assert run(cfg) == 0
    saved = Path(cfg.output_dir) / "train_config.yaml"
    assert validate(yaml.safe_load(saved.read_text())) == cfg
    ident = resolve_run_identity(str(Path(cfg.output_dir) / "final_model"))
    assert (ident["method"], ident["train_seed"], ident["train_name"]) == ("gmpo", 3, "ablation-x")
    assert ident["identity_source"] == str(saved.resolve())
    assert resolve_run_identity(str(Path(cfg.output_dir) / "final_model"), method="base")["method"] == "base"


@pytest.mark.parametrize("schedule,transformers_name", [("constant", "constant_with_warmup"),
                                                         ("cosine", "cosine_with_min_lr")])
@pytest.mark.parametrize("warmup", [0, 3])
def test_lr_schedule_matches_the_transformers_schedule_openrlhf_uses(schedule, transformers_name, warmup):
    from transformers import get_scheduler

    from apmpo_openrlhf.local.trainer import lr_factor

    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([param], lr=1.0)
    kwargs = {"min_lr_rate": 0.1} if schedule == "cosine" else {}
    ref = get_scheduler(transformers_name, opt, num_warmup_steps=warmup, num_training_steps=20,
                        scheduler_specific_kwargs=kwargs)
    for step in range(21):
        assert lr_factor(step, warmup, 20, schedule, 0.1) == pytest.approx(ref.get_last_lr()[0], abs=1e-12), step
        opt.step()
        ref.step()
    # Past the planned end (dynamic filtering can take fewer steps, never more) it stays at the floor.
    assert lr_factor(25, warmup, 20, schedule, 0.1) == pytest.approx(1.0 if schedule == "constant" else 0.1)


def test_cosine_schedule_reaches_its_floor_at_the_last_step(small_config):
    cfg = small_config("max_steps=3", "train.lr_schedule=cosine", "train.min_lr_ratio=0.2", "checkpoint.save_hf=false")
    trainer = Trainer(cfg)
    trainer.fit()
    rows = read_metrics(trainer.output_dir / "metrics.jsonl")
    lrs = [r["lr"] for r in rows]
    assert lrs[0] < cfg.train.lr and lrs == sorted(lrs, reverse=True)
    assert lrs[-1] == pytest.approx(0.2 * cfg.train.lr)


@pytest.mark.parametrize("statistics", ["sampled", "kept"])
def test_dynamic_filtering_statistics_come_from_the_chosen_batch(small_config, statistics):
    """With dynamic filtering (groups with equal rewards dropped and re-sampled) mu_R / sigma_R, and
    so p, are those of every group sampled for the step by default (SPEC.md 3: the policy's success
    rate), or of the kept groups with algorithm.adaptive_statistics=kept; both batches are logged
    under the OpenRLHF backend's keys. The untrained tiny model gets most groups all wrong."""
    cfg = small_config("max_steps=2", "checkpoint.save_hf=false", "algorithm.dynamic_filtering=true",
                       f"algorithm.adaptive_statistics={statistics}")
    trainer = Trainer(cfg)
    trainer.fit()
    rows = read_metrics(trainer.output_dir / "metrics.jsonl")
    trained = [r for r in rows if r["optimizer_steps"] > 0]
    assert trained and any(r["rollout/num_groups"] > r["rollout/kept_num_groups"] for r in trained)
    for r in trained:
        assert r["rollout/raw_reward_mean"] == pytest.approx(r["reward_mean"], rel=1e-6)
        assert r["rollout/kept_num_groups"] == r["groups_kept"]
        want = r["rollout/raw_reward_mean" if statistics == "sampled" else "rollout/kept_raw_reward_mean"]
        want_std = r["rollout/raw_reward_std" if statistics == "sampled" else "rollout/kept_raw_reward_std"]
        assert r["adaptive/mu_R"] == pytest.approx(want, rel=1e-5)
        assert r["adaptive/sigma_R"] == pytest.approx(want_std, rel=1e-5)
        assert r["p"] == pytest.approx(math.exp(-0.8 * want), rel=1e-5)
    if statistics == "sampled":  # the kept groups alone say something else (filtering moves the mean)
        assert any(abs(r["rollout/kept_raw_reward_mean"] - r["adaptive/mu_R"]) > 0.01 for r in trained)


def test_rollout_correction_on_the_local_backend(small_config):
    """Nucleus sampling makes the local sampler's distribution differ from the policy's: log pi_old -
    log pi_sample = log(nucleus mass) <= 0 on every sampled token (about log 0.8 for the untrained
    model). The step logs it, and truncated IS (clip into [0.9, 1.1]) lifts those weights to 0.9."""
    cfg = small_config("max_steps=1", "checkpoint.save_hf=false", "rollout.top_p=0.8",
                       "algorithm.rollout_correction.level=token", "algorithm.rollout_correction.mode=clip",
                       "algorithm.rollout_correction.threshold=[0.9, 1.1]")
    trainer = Trainer(cfg)
    before = _weights(trainer.model)
    trainer.fit()
    (row,) = read_metrics(trainer.output_dir / "metrics.jsonl")
    assert 0.05 < row["vllm_kl"] <= -math.log(0.8) + 0.03
    assert row["mismatch/log_ratio_abs_max"] <= -math.log(0.8) + 0.03 and row["mismatch/kl_k3"] > 0.001
    assert row["is_filter_ratio"] > 0.5
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
