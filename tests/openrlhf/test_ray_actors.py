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

import pytest
import torch

from apmpo_openrlhf.openrlhf_adapter.actor import APMPOPolicyModelActor  # first: flash_attn stand-in
from openrlhf.trainer.ray.launcher import ReferenceModelActor  # noqa: E402  (isort: skip)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    import ray

    from apmpo_openrlhf.openrlhf_adapter import cpu_backend

    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
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
                "rollout/groups_all_1", "rollout/response_length_mean", "timing/ppo_train"):
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
        self.fit()
        return calls

    assert ray.get(trainer.__ray_call__.remote(fit_without_steps_left)) == [(0, 0.6, 4)]
