"""Cost of the policy losses (forward + backward) against GRPO, and against the policy model itself.

Measures, for every loss of the registry at a realistic rollout shape (default 64 sequences x
4096 tokens; fp32 on CPU, bf16 inputs on CUDA):
  * the median and minimum time of loss forward + backward (eager, and under torch.compile):
      CUDA: wall time after torch.cuda.synchronize();
      CPU:  with one thread (the default), the thread's CPU time, which does not count time spent
            descheduled by other processes on a shared machine (wall time with more threads),
  * the peak memory of that forward + backward above what was live before it:
      CUDA: torch.cuda.max_memory_allocated() (caching-allocator bytes handed to tensors);
      CPU:  every allocation and free of PyTorch's CPU allocator recorded by
            torch.profiler(profile_memory=True), replayed in time order: the peak of live tensor
            bytes. It counts tensor storage only (including the gradient of the log-probs), not
            allocator caching, the process RSS or Python objects,
  * the ratios to GRPO (targets for APMPO: <= 2x time, <= 1.5x peak memory, eager),
  * the loss time as a fraction of the policy's own forward + backward over the same tokens, using a
    Qwen2.5-0.5B-shaped model (transformers Qwen2Config: hidden 896, intermediate 4864, 14 heads,
    2 KV heads, vocab 151936, tied embeddings) with random weights: one decoder layer and the
    embedding + LM head are timed over --model-tokens tokens, the 24-layer cost is head + 24 x layer,
    scaled linearly to the loss batch's tokens (target < 1%).

Timing numbers are only comparable within one run: run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from apmpo_openrlhf.algorithms import POLICY_LOSSES, adaptive_parameters  # noqa: E402

QWEN25_05B = dict(
    hidden_size=896,
    intermediate_size=4864,
    num_attention_heads=14,
    num_key_value_heads=2,
    vocab_size=151936,
    max_position_embeddings=32768,
    rope_theta=1000000.0,
    rms_norm_eps=1e-6,
    tie_word_embeddings=True,
)
FULL_LAYERS = 24


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--num-sequences", type=int, default=64, help="sequences per loss call (N), default 64")
    ap.add_argument("--seq-len", type=int, default=4096, help="padded response length (T), default 4096")
    ap.add_argument(
        "--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto: cuda when available, else cpu"
    )
    ap.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "float32", "bfloat16", "float16"],
        help="dtype of the log-prob inputs; auto: bfloat16 on CUDA, float32 on CPU (losses accumulate in fp32)",
    )
    ap.add_argument("--losses", default="grpo,dapo,gmpo,apmpo",
                    help=f"comma-separated registry names ({', '.join(POLICY_LOSSES)}); grpo is always included")
    ap.add_argument("--repeats", type=int, default=50, help="timed forward+backward repetitions per loss (median and min are reported; default 50)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed repetitions before timing (also triggers compilation; default 3)")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile measurements")
    ap.add_argument(
        "--model-tokens",
        type=int,
        default=512,
        help="tokens in the model pass (one sequence); its time is scaled linearly to the valid tokens of the loss batch (default 512)",
    )
    ap.add_argument("--model-repeats", type=int, default=2, help="timed model forward+backward repetitions (default 2)")
    ap.add_argument("--no-model", action="store_true", help="skip the model comparison")
    ap.add_argument(
        "--threads",
        type=int,
        default=-1,
        help="torch.set_num_threads; default -1: 1 thread on CPU (stabler timings on a shared "
        "machine), PyTorch's default on CUDA; 0 keeps PyTorch's default",
    )
    ap.add_argument("--seed", type=int, default=0, help="random seed of the synthetic inputs")
    args = ap.parse_args(argv)
    for name in ("num_sequences", "seq_len", "repeats", "model_tokens", "model_repeats"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.warmup < 0:
        ap.error("--warmup must be >= 0")
    names = [n.strip() for n in args.losses.split(",") if n.strip()]
    unknown = [n for n in names if n not in POLICY_LOSSES]
    if unknown:
        ap.error(f"--losses: unknown {unknown}; choose from {sorted(POLICY_LOSSES)}")
    args.losses = ["grpo"] + [n for n in names if n != "grpo"]
    return args


def make_inputs(n: int, t: int, dtype: torch.dtype, device: torch.device, seed: int):
    """A rollout-like batch: response lengths uniform in [T/4, T], log r ~ N(0, 0.2), binary rewards
    in groups of 8 turned into advantages, and APMPO's per-sample p / eps_high from those rewards."""
    from apmpo_openrlhf.algorithms import group_advantages

    g = torch.Generator().manual_seed(seed)
    old = -2.0 * torch.rand(n, t, generator=g)
    new = old + 0.2 * torch.randn(n, t, generator=g)
    lengths = torch.randint(t // 4, t + 1, (n,), generator=g)
    mask = torch.arange(t).unsqueeze(0) < lengths.unsqueeze(1)
    group = 8 if n % 8 == 0 else 1
    rewards = (torch.rand(n, generator=g) < 0.4).float()
    adv = group_advantages(rewards, group)
    if bool((adv == 0).all()):
        adv = torch.randn(n, generator=g)
    params = adaptive_parameters(rewards, group)
    to = dict(device=device)
    return dict(
        log_probs=new.to(dtype=dtype, **to),
        old_log_probs=old.to(dtype=dtype, **to),
        advantages=adv.to(**to),
        action_mask=mask.to(**to),
        p=params.p.to(**to),
        eps_high=params.eps_high.to(**to),
    )


def loss_step(name: str, inputs: dict, fn: Callable) -> Callable[[], None]:
    """One forward + backward of a loss on a fresh leaf copy of the log-probs."""
    from apmpo_openrlhf.config import TrainConfig

    entry = POLICY_LOSSES[name]
    # the registry's default hyper-parameters (Dr. GRPO's token budget: the batch's width)
    width = inputs["log_probs"].shape[1]
    cfg = TrainConfig().model_copy(update={"rollout": TrainConfig().rollout.model_copy(update={"max_new_tokens": width})})
    extra = entry.parameters(cfg)
    if entry.adaptive:
        extra.update(p=inputs["p"], eps_high=inputs["eps_high"])

    def step() -> None:
        leaf = inputs["log_probs"].detach().requires_grad_(True)
        loss, _ = fn(leaf, inputs["old_log_probs"], inputs["advantages"], inputs["action_mask"], **extra)
        loss.backward()

    return step


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_steps(steps: dict[str, Callable[[], None]], device: torch.device, warmup: int, repeats: int):
    """Per step: (median, min) seconds. The steps run interleaved (round robin), so that load from
    other processes hits every loss alike. On CPU the clock is the thread's CPU time
    (time.thread_time; PyTorch runs single-threaded ops and the CPU autograd engine in the calling
    thread), which does not count time the thread spent descheduled by other processes; on CUDA it
    is wall time after torch.cuda.synchronize()."""
    clock = time.perf_counter if device.type == "cuda" or torch.get_num_threads() > 1 else time.thread_time
    for step in steps.values():
        for _ in range(warmup):
            step()
    sync(device)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            t0 = clock()
            step()
            sync(device)
            times[name].append(clock() - t0)
    return {name: (statistics.median(v), min(v)) for name, v in times.items()}


def peak_memory(step: Callable[[], None], device: torch.device) -> int:
    """Peak bytes of tensor memory allocated during one step, above what was live before it."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    import json
    import tempfile

    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    # The chrome trace holds every allocation and free of PyTorch's CPU allocator ("[memory]"
    # instant events with signed "Bytes"); replaying them in time order gives the live-bytes curve.
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(trace))
        events = json.loads(trace.read_text())["traceEvents"]
    deltas = sorted((e["ts"], e["args"]["Bytes"]) for e in events if e.get("name") == "[memory]")
    live = peak = 0
    for _, delta in deltas:
        live += delta
        peak = max(peak, live)
    return peak


def time_model(tokens: int, device: torch.device, repeats: int, dtype: torch.dtype) -> tuple[float, float]:
    """Forward + backward times of a Qwen2.5-0.5B-shaped policy over one sequence of `tokens` tokens,
    split into (one decoder layer, embedding + final norm + tied LM head + token log-probs).

    The two parts are timed separately because the 151936-word head dominates a model with few
    layers: the difference of two whole-model timings would bury the per-layer cost in noise.
    A 24-layer pass costs head + 24 x layer (the layers are identical)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(num_hidden_layers=1, attn_implementation="sdpa", **QWEN25_05B)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(cfg).to(device=device, dtype=dtype)
    model.train()
    ids = torch.randint(0, cfg.vocab_size, (1, tokens), device=device)
    positions = torch.arange(tokens, device=device).unsqueeze(0)
    hidden = torch.randn(1, tokens, cfg.hidden_size, device=device, dtype=dtype)
    layer, rotary = model.model.layers[0], model.model.rotary_emb

    def layer_step() -> None:
        h = hidden.detach().requires_grad_(True)
        # attention_mask=None makes SDPA attention causal.
        out = layer(h, attention_mask=None, position_ids=positions, position_embeddings=rotary(h, positions))
        out = out[0] if isinstance(out, tuple) else out
        out.float().sum().backward()
        model.zero_grad(set_to_none=True)

    def head_step() -> None:
        h = model.model.norm(model.model.embed_tokens(ids))
        logits = model.lm_head(h)[:, :-1].float()
        logp = torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
        logp.sum().backward()
        model.zero_grad(set_to_none=True)

    timed = time_steps({"layer": layer_step, "head": head_step}, device, warmup=1, repeats=repeats)
    del model
    return timed["layer"][0], timed["head"][0]


def fmt_bytes(n: float) -> str:
    return f"{n / 2**20:8.1f} MiB"


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            print("--device cuda: CUDA is not available", file=sys.stderr)
            return 2
    if args.threads > 0 or (args.threads < 0 and device.type == "cpu"):
        torch.set_num_threads(max(args.threads, 1))
    if args.dtype == "auto":
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    else:
        dtype = getattr(torch, args.dtype)

    n, t = args.num_sequences, args.seq_len
    inputs = make_inputs(n, t, dtype, device, args.seed)
    valid = int(inputs["action_mask"].sum())
    print(
        f"loss forward+backward: N={n} sequences x T={t} tokens ({valid} valid), inputs {str(dtype)[6:]} "
        f"on {device.type}, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    clock = "wall time" if device.type == "cuda" or torch.get_num_threads() > 1 else "thread CPU time"
    print(f"{clock} of {args.repeats} interleaved runs per loss after {args.warmup} warm-up runs; peak = "
          + ("torch.cuda.max_memory_allocated above the live baseline"
             if device.type == "cuda" else "peak live tensor bytes from torch.profiler CPU memory events"))

    modes = ["eager"] + ([] if args.no_compile else ["compiled"])
    results: dict[tuple[str, str], tuple[float, float, int]] = {}
    for mode in modes:
        steps = {}
        for name in args.losses:
            fn = POLICY_LOSSES[name].fn
            if mode == "compiled":
                fn = torch.compile(fn)
            steps[name] = loss_step(name, inputs, fn)
        timed = time_steps(steps, device, args.warmup, args.repeats)
        for name, step in steps.items():
            results[(mode, name)] = (*timed[name], peak_memory(step, device))

    header = (
        f"{'mode':9} {'loss':6} {'median':>9} {'x grpo':>7} {'min':>9} {'x grpo':>7} {'peak mem':>13} {'x grpo':>7}"
    )
    print(header)
    print("-" * len(header))
    for mode in modes:
        g_sec, g_best, g_mem = results[(mode, "grpo")]
        for name in args.losses:
            sec, best, mem = results[(mode, name)]
            print(
                f"{mode:9} {name:6} {sec * 1e3:7.2f}ms {sec / g_sec:7.2f} {best * 1e3:7.2f}ms {best / g_best:7.2f} "
                f"{fmt_bytes(mem)} {mem / max(g_mem, 1):7.2f}"
            )
    print("(median and min over the runs, each with its ratio to grpo; peak memory of compiled losses excludes compilation)")

    if "apmpo" in args.losses:
        a_sec, a_best, a_mem = results[("eager", "apmpo")]
        g_sec, g_best, g_mem = results[("eager", "grpo")]
        ok_t, ok_m = a_sec / g_sec <= 2, a_mem <= 1.5 * g_mem
        print(
            f"targets (eager): apmpo time {a_sec / g_sec:.2f}x grpo (medians; <= 2x: {'met' if ok_t else 'MISSED'}), "
            f"peak memory {a_mem / g_mem:.2f}x grpo (<= 1.5x: {'met' if ok_m else 'MISSED'})"
        )

    if not args.no_model:
        model_dtype = dtype if device.type == "cuda" else torch.float32
        tk = args.model_tokens
        layer_s, head_s = time_model(tk, device, args.model_repeats, model_dtype)
        full = head_s + FULL_LAYERS * layer_s
        scaled = full * valid / tk
        print(
            f"policy model: Qwen2.5-0.5B shape ({str(model_dtype)[6:]}, random weights), forward+backward over "
            f"{tk} tokens (median of {args.model_repeats}): one decoder layer {layer_s:.3f}s, embedding + "
            f"tied LM head + log-probs {head_s:.3f}s"
        )
        print(
            f"  24 layers = head + 24 x layer = {full:.2f}s per {tk} tokens; scaled linearly to the "
            f"{valid} valid tokens of the loss batch: {scaled:.1f}s (linear scaling ignores attention's "
            "quadratic term, so it underestimates the model and overstates the fractions below)"
        )
        for mode in modes:
            parts = ", ".join(
                f"{name} {100 * results[(mode, name)][0] / scaled:.1e}%" for name in args.losses
            )
            print(f"  loss time / model time ({mode}): {parts} (target < 1%)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
