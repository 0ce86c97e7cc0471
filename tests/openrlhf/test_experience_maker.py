"""The experience-maker extension on real OpenRLHF Experience objects and OpenRLHF's own batching
code (rollout micro-batches, DP slicing, replay-buffer split/collate), against float64 references
written from the paper's equations (Eq. 2, 4, 5, 6)."""

from __future__ import annotations

import math

import pytest
import torch
from openrlhf.trainer.ppo_utils.experience import balance_experiences, make_experience_batch, split_experience_batch
from openrlhf.utils import get_strategy

from apmpo_openrlhf.openrlhf_adapter.actor import info_tensor
from apmpo_openrlhf.openrlhf_adapter.experience import (
    INFO_ADVANTAGE,
    INFO_EPS_HIGH,
    INFO_P,
    APMPOExperienceMaker,
)

G = 8


def reference(raw: list[float], shaped: list[float], gamma=0.8, eps_min=0.2, eps_max=0.4, delta=1e-6):
    """float64 reference: group advantages (population std, Eq. 2) from the shaped rewards and the
    batch-level p (Eq. 4), FSS (Eq. 5), eps_high (Eq. 6) from the raw rewards."""
    adv = []
    for g in range(0, len(shaped), G):
        grp = shaped[g : g + G]
        mu = sum(grp) / G
        sd = math.sqrt(sum((x - mu) ** 2 for x in grp) / G)
        adv += [0.0 if all(x == grp[0] for x in grp) else (x - mu) / (sd + delta) for x in grp]
    mu_r = sum(raw) / len(raw)
    sigma_r = math.sqrt(sum((x - mu_r) ** 2 for x in raw) / len(raw))
    fss = max(mu_r, 0.0) / (sigma_r + delta)
    return adv, math.exp(-gamma * mu_r), eps_min + (eps_max - eps_min) * math.tanh(fss), fss, mu_r, sigma_r


def make_maker(args):
    return APMPOExperienceMaker(None, None, None, None, None, get_strategy(args), tokenizer=_PadTokenizer())


class _PadTokenizer:
    pad_token_id = 0


def run_maker(args, samples):
    """OpenRLHF's split into rollout micro-batches, then the extension's advantage computation."""
    maker = make_maker(args)
    experiences = maker.split_rollout_samples(samples)
    return maker, maker.compute_advantages_and_returns(experiences)


def per_sample(experiences, key):
    """{rollout index: value} over a list of batched experiences."""
    out = {}
    for e in experiences:
        values = e.info[key]
        for idx, v in zip(e.index, values.tolist()):
            out[idx] = v
    return out


@pytest.fixture(scope="module")
def base_args(make_openrlhf_args):
    return make_openrlhf_args(["rollout.prompts_per_step=6", "train.train_batch_size=12", "train.micro_batch_size=2"])[1]


def test_statistics_over_whole_batch_match_paper_equations(base_args, make_rollout_samples, torch_generator):
    rewards = torch.bernoulli(torch.full((6 * G,), 0.4), generator=torch_generator)
    rewards[:G] = 1.0  # one all-correct group
    rewards[G : 2 * G] = 0.0  # one all-wrong group
    samples = make_rollout_samples(rewards, torch_generator)
    maker, experiences = run_maker(base_args, samples)
    adv_ref, p_ref, eps_ref, fss_ref, mu_ref, sigma_ref = reference(rewards.tolist(), rewards.tolist())

    adv = per_sample(experiences, INFO_ADVANTAGE)
    p = per_sample(experiences, INFO_P)
    eps = per_sample(experiences, INFO_EPS_HIGH)
    assert sorted(adv) == list(range(6 * G))
    for i in range(6 * G):
        assert adv[i] == pytest.approx(adv_ref[i], abs=1e-5)
        assert p[i] == pytest.approx(p_ref, rel=1e-6)
        assert eps[i] == pytest.approx(eps_ref, rel=1e-6)
    for g in range(2):  # all-equal groups have exactly zero advantage
        assert all(adv[i] == 0.0 for i in range(g * G, (g + 1) * G))
    # token-level advantages/returns (OpenRLHF's fields) carry A_i on the response tokens only
    for e in experiences:
        seq_adv = e.info[INFO_ADVANTAGE]
        assert torch.equal(e.advantages, seq_adv.unsqueeze(-1) * e.action_mask.float())
        assert torch.equal(e.returns, e.advantages) and e.kl is None
    stats = maker.last_stats
    assert stats["adaptive/p"] == pytest.approx(p_ref, rel=1e-6)
    assert stats["adaptive/eps_high"] == pytest.approx(eps_ref, rel=1e-6)
    assert stats["adaptive/fss"] == pytest.approx(fss_ref, rel=1e-5)
    assert stats["adaptive/mu_R"] == pytest.approx(mu_ref, rel=1e-6)
    assert stats["adaptive/sigma_R"] == pytest.approx(sigma_ref, rel=1e-6)
    assert stats["rollout/groups_all_1"] == 1 + sum(
        all(rewards[g * G : (g + 1) * G] == 1) for g in range(2, 6)
    )
    assert stats["rollout/groups_all_0"] == 1 + sum(
        all(rewards[g * G : (g + 1) * G] == 0) for g in range(2, 6)
    )


@pytest.mark.parametrize("split", ["micro_batch_1", "micro_batch_5", "seqlen_balanced"])
def test_per_sample_values_do_not_depend_on_how_the_batch_is_split(
    split, make_openrlhf_args, base_args, make_rollout_samples, torch_generator
):
    rewards = torch.bernoulli(torch.full((6 * G,), 0.3), generator=torch_generator)
    reference_values = None
    for args in (base_args, _split_args(split, make_openrlhf_args)):
        samples = make_rollout_samples(rewards, torch.Generator().manual_seed(7))
        _, experiences = run_maker(args, samples)
        values = {k: per_sample(experiences, k) for k in (INFO_ADVANTAGE, INFO_P, INFO_EPS_HIGH)}
        if reference_values is None:
            reference_values = values
        else:
            assert values == reference_values  # bit-identical, not just close
    # Through OpenRLHF's DP slicing (contiguous chunks of micro-batches per rank), the replay
    # buffer's split into single samples, a shuffle, and its collation into training micro-batches,
    # every sample keeps its own A_i, p and eps_high.
    ranks = 4
    chunk = math.ceil(len(experiences) / ranks)
    for rank in range(ranks):
        items = [item for e in experiences[rank * chunk : (rank + 1) * chunk] for item in split_experience_batch(e)]
        perm = torch.randperm(len(items), generator=torch_generator).tolist()
        items = [items[i] for i in perm]
        for start in range(0, len(items), 3):
            batch = make_experience_batch(items[start : start + 3])
            for key in (INFO_ADVANTAGE, INFO_P, INFO_EPS_HIGH):
                got = info_tensor(batch, key, "cpu", torch.float64).tolist()
                prompts = [int(p.split()[1]) for p in batch.prompts]
                assert got == pytest.approx([reference_values[key][i] for i in prompts], abs=0, rel=1e-7)


def _split_args(split, make_openrlhf_args):
    common = ["rollout.prompts_per_step=6", "train.train_batch_size=12", "train.micro_batch_size=2"]
    if split == "micro_batch_1":
        return make_openrlhf_args(common + ["openrlhf.rollout_micro_batch_size=1"])[1]
    if split == "micro_batch_5":
        return make_openrlhf_args(common + ["openrlhf.rollout_micro_batch_size=5"])[1]
    # OpenRLHF's dynamic batching: sequence-length-balanced partitions (samples reordered).
    _, args = make_openrlhf_args(common + ["openrlhf.packing_samples=true"])
    args.train.dynamic_batch_enable = True
    args.rollout.max_tokens_per_gpu = 40
    return args


def test_balance_experiences_keeps_per_sample_values(base_args, make_rollout_samples, torch_generator):
    rewards = torch.bernoulli(torch.full((6 * G,), 0.5), generator=torch_generator)
    _, experiences = run_maker(base_args, make_rollout_samples(rewards, torch_generator))
    want = {key: per_sample(experiences, key) for key in (INFO_ADVANTAGE, INFO_P)}
    prompt_of = {}
    for e in experiences:
        for idx, prompt in zip(e.index, e.prompts):
            prompt_of[prompt] = idx
    for batch in balance_experiences(experiences, base_args):
        for key in want:
            got = info_tensor(batch, key, "cpu", torch.float64).tolist()
            assert got == pytest.approx([want[key][prompt_of[p]] for p in batch.prompts], rel=1e-7)


def test_dynamic_filtering_and_overlong_shaping(make_openrlhf_args, make_rollout_samples, torch_generator):
    """DAPO settings: the batch holds only groups that passed OpenRLHF's filter (mean score strictly
    inside (0, 1)); overlong shaping lowers the rewards used for advantages, while p / eps_high come
    from the raw rewards. Here the loss is apmpo so that the adaptive values are the ones carried."""
    cfg, args = make_openrlhf_args(
        [
            "rollout.prompts_per_step=5",
            "train.train_batch_size=10",
            "train.micro_batch_size=2",
            "algorithm.dynamic_filtering=true",
            "algorithm.overlong_buffer_len=4",
            "algorithm.overlong_penalty_factor=0.5",
            "rollout.max_new_tokens=9",
        ]
    )
    assert args.algo.dynamic_filtering_enable and args.reward.overlong_buffer_len == 4
    # Draw groups until 5 pass OpenRLHF's filter rule (as SamplesGenerator._generate_vllm does).
    kept = []
    while len(kept) < 5:
        grp = torch.bernoulli(torch.full((G,), 0.5), generator=torch_generator)
        lo, hi = args.algo.dynamic_filtering_range
        if lo < float(grp.mean()) < hi:
            kept.append(grp)
    raw = torch.cat(kept)
    samples = make_rollout_samples(raw, torch_generator, max_response=9, max_new_tokens=9)
    lengths = [int(s.response_length) for s in samples]
    expected_len = 9 - 4
    shaped = [
        r - (min(l - expected_len, 4) / 4 * 0.5 if l - expected_len > 0 else 0.0) for r, l in zip(raw.tolist(), lengths)
    ]
    assert shaped != raw.tolist()  # some responses were penalised
    maker, experiences = run_maker(args, samples)
    adv_ref, p_ref, eps_ref, *_ = reference(raw.tolist(), shaped)
    adv = per_sample(experiences, INFO_ADVANTAGE)
    p = per_sample(experiences, INFO_P)
    eps = per_sample(experiences, INFO_EPS_HIGH)
    for i in range(len(raw)):
        assert adv[i] == pytest.approx(adv_ref[i], abs=1e-5)
        assert p[i] == pytest.approx(p_ref, rel=1e-6) and eps[i] == pytest.approx(eps_ref, rel=1e-6)
    assert maker.last_stats["rollout/groups_all_0"] == 0 and maker.last_stats["rollout/groups_all_1"] == 0
    assert maker.last_stats["rollout/num_groups"] == 5
    # OpenRLHF logs the shaped reward; the extension logs the raw one too
    assert maker.last_stats["rollout/raw_reward_mean"] == pytest.approx(float(raw.mean()))


def test_fixed_losses_carry_their_constant_parameters(make_openrlhf_args, make_rollout_samples, torch_generator):
    rewards = torch.bernoulli(torch.full((6 * G,), 0.5), generator=torch_generator)
    for loss, p_want, eps_want in (("grpo", 1.0, 0.2), ("dapo", 1.0, 0.28), ("gmpo", 0.0, math.expm1(0.4)),
                                   ("gspo", 0.0, 4e-4), ("drgrpo", 1.0, 0.2), ("cispo", 1.0, 0.28)):
        _, args = make_openrlhf_args(
            ["rollout.prompts_per_step=6", "train.train_batch_size=12", "train.micro_batch_size=2", f"algorithm.loss={loss}"]
        )
        maker, experiences = run_maker(args, make_rollout_samples(rewards, torch_generator))
        assert list(per_sample(experiences, INFO_P).values()) == pytest.approx([p_want] * len(rewards))
        assert list(per_sample(experiences, INFO_EPS_HIGH).values()) == pytest.approx([eps_want] * len(rewards), rel=1e-6)
        # the adaptive statistics are still logged for comparison across methods
        assert maker.last_stats["adaptive/mu_R"] == pytest.approx(float(rewards.mean()))
        # the registry entry's advantage: Dr. GRPO only centres the group rewards (no std)
        adv = per_sample(experiences, INFO_ADVANTAGE)
        groups = rewards.view(-1, G)
        want = groups - groups.mean(-1, keepdim=True)
        if loss != "drgrpo":
            want = torch.tensor(reference(rewards.tolist(), rewards.tolist())[0]).view(-1, G)
        assert [adv[i] for i in range(len(rewards))] == pytest.approx(want.flatten().tolist(), rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("level", ["off", "token"])
def test_mismatch_is_measured_over_the_whole_batch(level, make_openrlhf_args, make_rollout_samples, torch_generator):
    """vLLM's log-probs (Experience.rollout_log_probs) against the actor's, over every valid token of
    the batch (OpenRLHF's own micro-batch padding included); without a correction the rollout
    log-probs are dropped afterwards (not shipped to the actors), with one they stay."""
    extra = [] if level == "off" else [f"algorithm.rollout_correction.level={level}"]
    _, args = make_openrlhf_args(["rollout.prompts_per_step=6", "train.train_batch_size=12",
                                  "train.micro_batch_size=2", *extra])
    assert args.algo.advantage.is_correction_level == "token"  # OpenRLHF keeps vLLM's log-probs either way
    rewards = torch.bernoulli(torch.full((6 * G,), 0.5), generator=torch_generator)
    samples = make_rollout_samples(rewards, torch_generator)
    olds, rollouts = [], []
    for sample in samples:
        old = -2.0 + 0.5 * torch.randn(sample.action_mask.shape, generator=torch_generator)
        rollout = old + 0.7 * torch.randn(old.shape, generator=torch_generator)
        sample.action_log_probs, sample.rollout_log_probs = old, rollout
        mask = sample.action_mask.bool()
        olds.append(old[mask])
        rollouts.append(rollout[mask])
    maker = make_maker(args)
    experiences = maker.split_rollout_samples(samples)
    stats = maker.measure_mismatch(experiences)
    d = (torch.cat(olds) - torch.cat(rollouts)).double()
    assert stats["vllm_kl"] == pytest.approx(float((-d).mean()), rel=1e-5)
    assert stats["mismatch/kl_k3"] == pytest.approx(float((torch.expm1(d) - d).mean()), rel=1e-5)
    assert stats["mismatch/log_ratio_abs_max"] == pytest.approx(float(d.abs().max()), rel=1e-6)
    assert stats["mismatch/ratio_outside_2x"] == pytest.approx(float((d.abs() > math.log(2)).double().mean()))
    assert all((e.rollout_log_probs is None) == (level == "off") for e in experiences)
    maker.mismatch_stats = stats
    maker.compute_advantages_and_returns(experiences)
    assert maker.last_stats["vllm_kl"] == stats["vllm_kl"]


def test_mismatch_without_rollout_log_probs_is_an_error(base_args, make_rollout_samples, torch_generator):
    maker = make_maker(base_args)
    experiences = maker.split_rollout_samples(make_rollout_samples(torch.ones(6 * G), torch_generator))
    with pytest.raises(RuntimeError, match="is_correction_level"):
        maker.measure_mismatch(experiences)


@pytest.mark.parametrize("statistics", ["sampled", "kept"])
def test_adaptive_statistics_option(statistics, make_openrlhf_args, make_rollout_samples, torch_generator):
    """algorithm.adaptive_statistics: mu_R / sigma_R (and p, eps_high) from every group sampled
    for the step (the trainer's record, dropped groups included) or from the kept groups only;
    both batches are logged either way."""
    cfg, args = make_openrlhf_args(
        ["rollout.prompts_per_step=2", "train.train_batch_size=16", "train.micro_batch_size=2",
         "openrlhf.num_gpus_per_node=1", "openrlhf.vllm_num_engines=1",
         "algorithm.dynamic_filtering=true", f"algorithm.adaptive_statistics={statistics}"]
    )
    assert args.apmpo["adaptive_statistics"] == statistics
    kept = torch.tensor([1.0, 0, 0, 0, 0, 0, 0, 0] + [1.0, 1, 0, 1, 1, 1, 0, 1])
    sampled = torch.cat([torch.ones(2 * G), kept, torch.zeros(G)])  # 2 all-correct, 1 all-wrong group dropped
    maker = make_maker(args)
    maker.sampled_rewards = sampled
    samples = make_rollout_samples(kept, torch_generator)
    experiences = maker.compute_advantages_and_returns(maker.split_rollout_samples(samples))
    source = sampled if statistics == "sampled" else kept
    _, p_ref, eps_ref, _, mu_ref, sigma_ref = reference(source.tolist(), source.tolist())
    assert maker.last_stats["adaptive/mu_R"] == pytest.approx(mu_ref, rel=1e-6)
    assert maker.last_stats["adaptive/sigma_R"] == pytest.approx(sigma_ref, rel=1e-6)
    assert list(per_sample(experiences, INFO_P).values()) == pytest.approx([p_ref] * len(kept), rel=1e-6)
    assert list(per_sample(experiences, INFO_EPS_HIGH).values()) == pytest.approx([eps_ref] * len(kept), rel=1e-6)
    assert maker.last_stats["rollout/raw_reward_mean"] == pytest.approx(float(sampled.mean()))
    assert maker.last_stats["rollout/kept_raw_reward_mean"] == pytest.approx(float(kept.mean()))
    assert (maker.last_stats["rollout/num_groups"], maker.last_stats["rollout/kept_num_groups"]) == (5, 2)
