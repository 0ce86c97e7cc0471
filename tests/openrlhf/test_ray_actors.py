"""The patched Ray actor classes in a real local Ray instance (CPU, loopback only, started and
stopped here): APMPOPPOTrainer drives one controller step (train_step) over a RayActorGroup of
the patched policy actor and one of OpenRLHF's reference actor: old and reference log-probs by
Ray forward calls, the extension's advantages and statistics, the DP dispatch of experiences, the
actor's ppo_train with the registry loss and the k3 KL loss, and the merged metrics. Generation (vLLM) is not part of the step: the rollout samples are built the
way OpenRLHF's SamplesGenerator builds them.
"""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch

from apmpo_openrlhf.openrlhf_adapter.actor import APMPOPolicyModelActor  # first: flash_attn stand-in
from openrlhf.trainer.ray.launcher import ReferenceModelActor  # noqa: E402  (isort: skip)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    import ray
    from ray import cloudpickle

    from apmpo_openrlhf.openrlhf_adapter import cpu_backend

    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    # this module is not importable in the workers (OpenRLHF's wheel owns the top-level `tests`
    # package there): ship the classes defined here (ScriptedRolloutEngine) by value
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    # conftest.py set RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 before Ray was imported: with
    # 127.0.0.1 as node address every Ray socket stays on loopback; the workers get it too.
    assert not ray._private.ray_constants.ENABLE_RAY_CLUSTER
    ray.init(
        num_cpus=3,  # logical slots: trainer, policy actor, reference actor (2 real cores)
        num_gpus=2,  # logical GPU slots: OpenRLHF's model actors request one each; torch stays on the CPU
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        _temp_dir=str(tmp_path_factory.mktemp("ray")),
        runtime_env={
            "env_vars": {"PYTHONPATH": repo, "TOKENIZERS_PARALLELISM": "false",
                         "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "GLOO_SOCKET_IFNAME": "lo",
                         cpu_backend.RENDEZVOUS_DIR_ENV: str(tmp_path_factory.mktemp("rendezvous"))},
            # the flash_attn stand-in and the CPU backend's shims, as a CPU training run has them
            "worker_process_setup_hook": cpu_backend.WORKER_SETUP_HOOK,
        },
        log_to_driver=False,
    )
    yield ray
    ray.shutdown()
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def _prompt_file(path, n):
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"prompt": [{"role": "user", "content": f"{i}+1"}],
                                "label": json.dumps({"task": "arithmetic", "answer": str(i + 1)})}) + "\n")
    return path


def _rollout(n_prompts, group, seed):
    from openrlhf.trainer.ppo_utils.experience import Experience

    gen = torch.Generator().manual_seed(seed)
    samples = []
    for i in range(n_prompts * group):
        r = float(torch.bernoulli(torch.tensor(0.5), generator=gen))
        prompt_len, response_len = 3, 1 + (i * 5) % 9
        total = prompt_len + response_len
        mask = torch.zeros(total, dtype=torch.long)
        mask[prompt_len:] = 1
        samples.append(
            Experience(
                sequences=torch.randint(5, 90, (1, total), generator=gen),
                attention_mask=torch.ones(1, total, dtype=torch.long), action_mask=mask[1:].unsqueeze(0),
                prompts=[f"p{i // group}"], labels=["{}"], images=[None], mm_train_inputs=[None],
                rewards=torch.tensor([r]), scores=torch.tensor([r]), response_length=torch.tensor([response_len]),
                truncated=torch.tensor([False]), total_length=torch.tensor([float(total)]),
                info={"reward": torch.tensor([r]), "score": torch.tensor([r])},
                # vLLM's log-probs of the sampled tokens (the step measures the rollout/trainer mismatch)
                rollout_log_probs=-4.0 + 0.1 * torch.randn(1, total - 1, generator=gen),
            )
        )
    return samples


def test_trainer_and_policy_actor_run_a_controller_step(local_ray, tiny_model_dir, tmp_path, make_openrlhf_args):
    ray = local_ray
    from openrlhf.trainer.ray.launcher import RayActorGroup
    from openrlhf.utils import get_strategy

    from apmpo_openrlhf.openrlhf_adapter.trainer import APMPOPPOTrainer

    cfg, args = make_openrlhf_args(
        [
            f"model.path={tiny_model_dir}",
            f"data.train_path={_prompt_file(tmp_path / 'prompts.jsonl', 8)}",
            f"data.eval_path={_prompt_file(tmp_path / 'eval.jsonl', 3)}",
            "eval.at_step0=true",
            "model.attn_implementation=sdpa",
            "model.gradient_checkpointing=false",
            "rollout.prompts_per_step=2",
            "rollout.n_samples_per_prompt=4",
            "train.train_batch_size=4",  # 2 optimizer steps per rollout batch
            "train.micro_batch_size=2",
            "max_steps=3",
            f"output_dir={tmp_path / 'out'}",
            "openrlhf.num_gpus_per_node=1",
            "openrlhf.vllm_num_engines=1",
            "openrlhf.ds_enable_sleep=false",
            "openrlhf.rollout_micro_batch_size=2",
        ]
    )
    strategy = get_strategy(args)
    assert args.algo.kl.use_loss and args.algo.kl.init_coef == 0.001 and args.algo.kl.estimator == "k3"
    actor_group = RayActorGroup(1, 1, APMPOPolicyModelActor, pg=None, num_gpus_per_actor=1)
    ref_group = RayActorGroup(1, 1, ReferenceModelActor, pg=None, num_gpus_per_actor=1)
    trainer = APMPOPPOTrainer.remote(
        str(tiny_model_dir), strategy, actor_group, None, None, ref_group, None,
        do_sample=True, max_len=args.data.max_len, max_new_tokens=args.rollout.max_new_tokens,
        temperature=1.0, top_p=1.0,
    )
    max_steps = ray.get(trainer.get_max_steps.remote())
    assert max_steps == 3 * 2  # max_steps rollout steps x optimizer steps per rollout batch
    ray.get(actor_group.async_init_model_from_pretrained(strategy, str(tiny_model_dir), max_steps, None)
            + ref_group.async_init_model_from_pretrained(strategy, str(tiny_model_dir)))
    trainer_class = actor_group._actor_handlers[0].__ray_call__.remote(lambda actor: type(actor.trainer).__name__)
    assert ray.get(trainer_class) == "APMPOActorPPOTrainer"

    status, step = ray.get(trainer.train_step.remote(_rollout(2, 4, seed=0), 0))
    assert step == 1
    for key in ("policy_loss", "actor_grad_norm", "clip_frac_high", "clip_frac_low", "p", "eps_high",
                "entropy_loss", "adaptive/p", "adaptive/eps_high", "adaptive/fss", "adaptive/mu_R",
                "adaptive/sigma_R", "rollout/reward_mean", "rollout/reward_std", "rollout/groups_all_0",
                "rollout/groups_all_1", "rollout/response_length_mean", "timing/ppo_train", "vllm_kl",
                "mismatch/kl_k3"):
        assert key in status, (key, sorted(status))
    assert status["actor_grad_norm"] > 0
    # KL loss against the reference actor's log-probs: the same weights, so k3 is ~0 on the first
    # optimizer step and positive once the policy moved (2 optimizer steps per rollout here)
    assert status["kl"] >= 0 and "logprobs_diff" in status
    assert status["p"] == pytest.approx(status["adaptive/p"], rel=1e-5)  # apmpo uses the batch's p

    # max_steps: once reached, the sample generator reports an empty, exhausted batch (the fit loop ends)
    def reach_max_steps(self):
        self.completed_steps = self.spec["max_steps"]
        return self.samples_generator.generate_samples()

    samples, _, consumed, exhausted = ray.get(trainer.__ray_call__.remote(reach_max_steps))
    assert samples == [] and consumed == 0 and exhausted

    # fit(): evaluation at step 0 (with the eval temperature and sample count), then OpenRLHF's
    # loop ends at once when no steps are left. evaluate() itself is OpenRLHF's and needs vLLM
    # engines, so here it only records its call.
    def fit_without_steps_left(self):
        calls = []
        self.evaluate = lambda step, **kw: calls.append((step, kw["temperature"], kw["n_samples_per_prompt"])) or {}
        self.spec = {**self.spec, "max_steps": 0}
        self.samples_generator.max_steps = 0
        self.fit()
        return calls

    assert ray.get(trainer.__ray_call__.remote(fit_without_steps_left)) == [(0, 0.6, 4)]


class ScriptedRolloutEngine:
    """Stands in for a vLLM engine (not the code under test): answers OpenRLHF's rollout calls with
    G fixed responses per prompt, rewarded as the prompt's label says (``{"rewards": [...]}``), and
    keeps a log of the prompts it served."""

    def __init__(self):
        self.served = []
        self.min_tokens = []  # vLLM SamplingParams.min_tokens of each request

    def get_num_unfinished_requests(self):
        return 0

    def generate_responses(self, prompt, label, sampling_params, max_length, hf_tokenizer, num_samples, images=None):
        rewards = json.loads(label)["rewards"]
        assert len(rewards) == num_samples
        self.served.append(rewards)
        self.min_tokens.append(sampling_params.min_tokens)
        prompt_ids = hf_tokenizer(prompt, add_special_tokens=False)["input_ids"]
        return [
            {"observation_tokens": prompt_ids + [7, 8, 9][: 1 + j % 3], "action_ranges": [(len(prompt_ids), len(prompt_ids) + 1 + j % 3)],
             "reward": float(r), "scores": float(r), "rollout_log_probs": None, "prompt": prompt, "label": label,
             "extra_logs": {}, "truncated": False}
            for j, r in enumerate(rewards)
        ]

    def served_rewards(self):
        return self.served

    def served_min_tokens(self):
        return self.min_tokens


FILTERED_GROUPS = [[1, 1, 1, 1], [1, 0, 0, 0], [0, 0, 0, 0], [1, 1, 0, 1], [0, 0, 0, 0], [0, 1, 0, 0],
                   [1, 1, 1, 1], [1, 0, 1, 0], [0, 0, 0, 0], [0, 0, 1, 0]]  # every other group is dropped


def _filtering_trainer(ray, tmp_path, tiny_model_dir, make_openrlhf_args, generate_batch: int | None = None,
                       overrides: tuple[str, ...] = ()):
    """The trainer (in this process) over a scripted engine serving FILTERED_GROUPS' rewards, with
    DAPO's dynamic filtering, 4 prompts x 4 samples per step; returns (trainer, engine)."""
    from openrlhf.utils import get_strategy

    from apmpo_openrlhf.openrlhf_adapter.trainer import APMPOPPOTrainerImpl

    with open(tmp_path / "prompts.jsonl", "w") as f:
        for i, rewards in enumerate(FILTERED_GROUPS):
            f.write(json.dumps({"prompt": [{"role": "user", "content": f"{i}+1"}],
                                "label": json.dumps({"rewards": rewards})}) + "\n")
    _, args = make_openrlhf_args(
        [
            f"model.path={tiny_model_dir}", f"data.train_path={tmp_path / 'prompts.jsonl'}",
            "algorithm.dynamic_filtering=true", "rollout.prompts_per_step=4", "rollout.n_samples_per_prompt=4",
            "train.train_batch_size=16", "train.micro_batch_size=2", f"output_dir={tmp_path / 'out'}",
            "data.eval_path=null", "logging.tensorboard=false", "openrlhf.num_gpus_per_node=1",
            "openrlhf.vllm_num_engines=1", "openrlhf.vllm_enable_sleep=false",
            "openrlhf.rollout_micro_batch_size=2", *overrides,
        ]
    )
    if generate_batch is not None:
        args.rollout.vllm_generate_batch_size = generate_batch  # OpenRLHF's over-sampling (tied to async mode)
    engine = ray.remote(num_cpus=0)(ScriptedRolloutEngine).remote()
    trainer = APMPOPPOTrainerImpl(str(tiny_model_dir), get_strategy(args), None, None, None, None, [engine],
                                  max_len=args.data.max_len, max_new_tokens=args.rollout.max_new_tokens,
                                  temperature=1.0, top_p=1.0)
    return trainer, engine


def test_statistics_cover_every_sampled_group_under_dynamic_filtering(local_ray, tiny_model_dir, tmp_path,
                                                                      make_openrlhf_args):
    """OpenRLHF's SamplesGenerator (real code: dispatch, filtering, replacement prompts) drops
    all-equal groups before the experience maker runs. The APMPO samples generator files the raw rewards of
    every group sampled for the step, so mu_R, sigma_R, p and eps_high describe the whole sampled
    batch (SPEC.md 3, algorithm.adaptive_statistics=sampled), and both batches are logged."""
    import math

    ray = local_ray
    trainer, engine = _filtering_trainer(ray, tmp_path, tiny_model_dir, make_openrlhf_args)
    samples, pass_rate, consumed, _ = trainer.samples_generator.generate_samples(**trainer.generate_kwargs)
    served = torch.tensor(ray.get(engine.served_rewards.remote()), dtype=torch.float32)
    kept = torch.tensor([float(s.rewards) for s in samples])
    assert len(samples) == 16 and served.shape[0] > 4 and consumed == served.shape[0]  # groups were replaced
    maker = trainer.experience_maker
    maker.compute_advantages_and_returns(maker.split_rollout_samples(samples))
    stats = maker.last_stats

    mu, sigma = float(served.mean()), float(served.std(correction=0))
    assert float(kept.mean()) != pytest.approx(mu, abs=0.02)  # filtering moved the mean
    assert stats["adaptive/mu_R"] == pytest.approx(mu, rel=1e-6)
    assert stats["adaptive/sigma_R"] == pytest.approx(sigma, rel=1e-6)
    assert stats["adaptive/p"] == pytest.approx(math.exp(-0.8 * mu), rel=1e-6)
    assert stats["adaptive/eps_high"] == pytest.approx(0.2 + 0.2 * math.tanh(mu / (sigma + 1e-6)), rel=1e-6)
    assert stats["rollout/raw_reward_mean"] == pytest.approx(mu, rel=1e-6)
    assert stats["rollout/num_groups"] == served.shape[0]
    assert stats["rollout/groups_all_0"] + stats["rollout/groups_all_1"] == served.shape[0] - 4
    assert stats["rollout/kept_raw_reward_mean"] == pytest.approx(float(kept.mean()), rel=1e-6)
    assert stats["rollout/kept_num_groups"] == 4
    assert maker.sampled_rewards is None  # consumed by this batch, never reused for the next one
    # OpenRLHF has no flag for vLLM's min_tokens: every request, replacement prompts included, carries
    # rollout.min_new_tokens (default 1, as OpenRLHF's own default), as the local sampler applies it.
    assert ray.get(engine.served_min_tokens.remote()) == [1] * served.shape[0]


def test_groups_buffered_across_steps_are_attributed_to_their_step(local_ray, tiny_model_dir, tmp_path,
                                                                   make_openrlhf_args):
    """A generation call that fills more than one step (OpenRLHF's ``vllm_generate_batch_size`` above
    the rollout batch, which its buffer serves later without generating): every sampled group, kept
    or dropped by dynamic filtering, counts for exactly one step, each step's statistics cover its
    own kept groups (and the dropped groups filed with them), and the second step, served from the
    buffer, does not fall back to its kept batch."""
    ray = local_ray
    trainer, engine = _filtering_trainer(ray, tmp_path, tiny_model_dir, make_openrlhf_args, generate_batch=8,
                                         overrides=("rollout.min_new_tokens=3",))
    generator, maker = trainer.samples_generator, trainer.experience_maker

    def as_groups(rewards):
        return sorted(tuple(int(v) for v in g) for g in rewards.view(-1, 4).tolist())

    steps = []
    for _ in range(2):
        samples, _, _, exhausted = generator.generate_samples(**trainer.generate_kwargs)
        kept = as_groups(torch.tensor([float(s.rewards) for s in samples]))
        assert maker.sampled_rewards is not None  # never the kept-batch fallback
        sampled = as_groups(maker.sampled_rewards)
        assert trainer.reward_outcomes.take()["reward/graded"] == 4 * len(sampled)
        maker.sampled_rewards = None  # what compute_advantages_and_returns does with it
        steps.append((kept, sampled, exhausted))
    served = ray.get(engine.served_rewards.remote())
    assert len(served) == 10 and len(steps[0][0]) == 4 and len(steps[1][0]) == 1  # 5 kept groups: 4 + 1
    assert steps[1][2]  # the buffer is drained and the prompts ran out
    for kept, sampled, _ in steps:
        assert all(sampled.count(g) >= kept.count(g) for g in kept)  # a step's kept groups are in its statistics
        assert all(0 < sum(g) < 4 for g in kept)
    assert sorted(steps[0][1] + steps[1][1]) == as_groups(torch.tensor(served))  # each sampled group once
    assert ray.get(engine.served_min_tokens.remote()) == [3] * len(served)  # rollout.min_new_tokens=3


def test_generation_batch_other_than_the_rollout_batch_is_refused(make_openrlhf_args):
    from apmpo_openrlhf.config import ConfigError
    from apmpo_openrlhf.openrlhf_adapter.trainer import check_generation_batch

    _, args = make_openrlhf_args(["rollout.prompts_per_step=128",
                                  'openrlhf.extra_args=["--rollout.vllm_generate_batch_size", "4"]'])
    with pytest.raises(ConfigError, match=r"vllm_generate_batch_size 4 .*rollout.prompts_per_step = 128"):
        check_generation_batch(args)
    _, args = make_openrlhf_args(["rollout.prompts_per_step=128"])
    check_generation_batch(args)  # OpenRLHF's default: the rollout batch


class _DispatchedChunk:
    """What OpenRLHF's RayActorGroup.async_run_method_batch sends to one rank: records the call
    instead of running a model (the code under test is the slicing, not the rank)."""

    def __init__(self):
        self.calls = []
        self.execute_batch = self

    def remote(self, method_name, chunk_ref, start, end):
        self.calls.append((method_name, chunk_ref, start, end))


def test_short_batch_is_dealt_evenly_over_data_parallel_ranks(local_ray, make_openrlhf_args, make_rollout_samples,
                                                               torch_generator):
    """4 DP ranks, G = 4, training micro-batch 2, rollout micro-batch 4; a short batch of 7 prompts.
    OpenRLHF's own split gives the ranks ceil(K / 4) contiguous rollout micro-batches: 8 / 8 / 8 / 4
    samples (24 after trimming: 8 / 8 / 8 / 0), so under ZeRO-3 the ranks would run different
    numbers of forwards, backwards and optimizer steps. The trainer trims the batch to whole
    8-sample units (6 prompts) and the experience maker deals 6 samples to every rank in the same
    micro-batch sizes; every sample keeps the advantage it has in an undivided batch."""
    from openrlhf.trainer.ppo_utils.experience_maker import RemoteExperienceMaker
    from openrlhf.trainer.ray.launcher import RayActorGroup
    from openrlhf.utils import get_strategy

    from apmpo_openrlhf.openrlhf_adapter.experience import (
        INFO_ADVANTAGE,
        APMPOExperienceMaker,
        data_parallel_unit,
    )
    from apmpo_openrlhf.openrlhf_adapter.trainer import whole_units

    ray = local_ray
    _, args = make_openrlhf_args(
        ["rollout.prompts_per_step=8", "rollout.n_samples_per_prompt=4", "train.train_batch_size=16",
         "train.micro_batch_size=2", "openrlhf.num_gpus_per_node=4", "openrlhf.vllm_num_engines=4",
         "openrlhf.rollout_micro_batch_size=4"]
    )
    tokenizer = type("PadTokenizer", (), {"pad_token_id": 0})
    ranks = RayActorGroup.__new__(RayActorGroup)
    ranks._actor_handlers, ranks.duplicate_actors = [_DispatchedChunk() for _ in range(4)], 1

    def samples_per_rank(micro_batches):
        for handler in ranks._actor_handlers:
            handler.calls.clear()
        ranks.async_run_method_batch(method_name="append", experience=micro_batches)
        return [[len(e.sequences) for e in ray.get(h.calls[0][1])["experience"]] if h.calls else [] for h in
                ranks._actor_handlers]

    rewards = torch.bernoulli(torch.full((7 * 4,), 0.5), generator=torch_generator)
    samples = make_rollout_samples(rewards, torch_generator)
    openrlhf_split = RemoteExperienceMaker(None, None, None, None, None, get_strategy(args), tokenizer)
    assert [sum(r) for r in samples_per_rank(openrlhf_split.split_rollout_samples(samples))] == [8, 8, 8, 4]

    assert data_parallel_unit(args, 4) == 8
    kept = whole_units(samples, data_parallel_unit(args, 4))
    assert len(kept) == 24 and kept == samples[:24]
    maker = APMPOExperienceMaker(None, None, None, None, None, get_strategy(args), tokenizer)
    micro_batches = maker.compute_advantages_and_returns(maker.split_rollout_samples(kept))
    assert samples_per_rank(micro_batches) == [[4, 2]] * 4  # 6 samples = 3 training micro-batches per rank
    dealt = sorted(i for e in micro_batches for i in e.index)
    assert dealt == list(range(24))
    one_rank = APMPOExperienceMaker(None, None, None, None, None, get_strategy(
        make_openrlhf_args(["rollout.prompts_per_step=8", "rollout.n_samples_per_prompt=4",
                            "train.train_batch_size=16", "train.micro_batch_size=2"])[1]), tokenizer)
    undivided = one_rank.compute_advantages_and_returns(one_rank.split_rollout_samples(samples[:24]))

    def advantages(experiences):
        return {p: float(a) for e in experiences for p, a in zip(e.prompts, e.info[INFO_ADVANTAGE])}

    assert advantages(micro_batches) == advantages(undivided)
