#!/usr/bin/env bash
# GPU smoke check for a machine with one CUDA GPU and PyTorch + transformers (no Ray, DeepSpeed,
# vLLM or math-verify needed). Prints a short table:
#   1. the four policy losses + KL in bf16 on the GPU vs a float64 reference (loss and gradient);
#   2. a few steps of the local trainer (tiny model) on the GPU: reward, p, eps_high, step time.
# Usage: bash launch/gpu_smoke.sh            (SMOKE_DEVICE=cpu runs the same checks on the CPU)
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false
PY=${PYTHON:-python}
OUT=${OUT:-$(mktemp -d)}
"$PY" - "$OUT" <<'PYEOF'
import os, sys, time, importlib.util
import torch

out = sys.argv[1]
dev = os.environ.get("SMOKE_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
name = torch.cuda.get_device_name(0) if dev == "cuda" else "cpu"
print(f"torch {torch.__version__}, device {dev} ({name})")
sys.path.insert(0, os.getcwd())
from apmpo_openrlhf.algorithms import adaptive_parameters, get_policy_loss, group_advantages, kl_penalty

def sync():
    if dev == "cuda":
        torch.cuda.synchronize()

print("\n== policy losses: bf16 on %s vs float64 reference on the same (bf16-rounded) inputs (N=64 sequences, T=1024 tokens)" % dev)
print(f"{'loss':>6} | {'loss rel err':>12} | {'grad rel err':>12} | {'fwd+bwd ms':>10}")
g = torch.Generator().manual_seed(0)
N, T, G = 64, 1024, 8
rewards = (torch.rand(N, generator=g) < 0.4).float()
adv = group_advantages(rewards, G)
ada = adaptive_parameters(rewards, G)
old = -torch.rand(N, T, generator=g, dtype=torch.float64) * 3
new = old + torch.randn(N, T, generator=g, dtype=torch.float64) * 0.2
ref = old + torch.randn(N, T, generator=g, dtype=torch.float64) * 0.1
# The reference sees the same bf16-rounded inputs: this checks the loss arithmetic, not input rounding.
old, new, ref = (t.to(torch.bfloat16).double() for t in (old, new, ref))
lengths = torch.randint(T // 8, T + 1, (N,), generator=g)
mask = torch.arange(T)[None, :] < lengths[:, None]
failed = False
for loss_name in ("grpo", "dapo", "gmpo", "apmpo"):
    spec = get_policy_loss(loss_name)
    kw = {"eps_low": 0.2, "clip": "asymmetric"} if loss_name == "apmpo" else ({"clip": 0.4} if loss_name == "gmpo" else {})
    if spec.adaptive:
        kw.update(p=ada.p, eps_high=ada.eps_high)
    agg = "token" if spec.divisor == "num_tokens" else "sequence"
    results = []
    for dtype, device in ((torch.float64, "cpu"), (torch.bfloat16, dev)):
        lp = new.detach().to(device=device, dtype=dtype).clone().requires_grad_(True)
        args = (old.to(device, dtype), adv.to(device), mask.to(device))
        kwd = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in kw.items()}
        for _ in range(2 if device != "cpu" or dtype != torch.float64 else 1):
            lp.grad = None
            sync(); t0 = time.perf_counter()
            loss, _ = spec(lp, *args, **kwd)
            kl = kl_penalty(lp, ref.to(device, dtype), mask.to(device), "k3", agg)
            (loss + 0.001 * kl).backward()
            sync(); ms = (time.perf_counter() - t0) * 1000
        results.append((float((loss + 0.001 * kl).detach()), lp.grad.double().cpu(), ms))
    (l64, g64, _), (l16, g16, ms) = results
    lerr = abs(l16 - l64) / max(abs(l64), 1e-12)
    gerr = float((g16 - g64).norm() / g64.norm().clamp(min=1e-30))
    ok = lerr < 2e-2 and gerr < 2e-2 and torch.isfinite(g16).all()
    failed |= not ok
    print(f"{loss_name:>6} | {lerr:12.2e} | {gerr:12.2e} | {ms:10.2f} {'ok' if ok else 'FAIL'}")

print(f"\n== local trainer on {dev}: tiny model, default config, 5 steps")
missing = [m for m in ("pydantic", "yaml", "transformers") if importlib.util.find_spec(m) is None]
if missing:
    print(f"SKIP: python packages missing here: {missing}")
else:
    from apmpo_openrlhf.config import load_config
    from apmpo_openrlhf.local.trainer import Trainer
    cfg = load_config("configs/local/default.yaml", [
        f"local.device={dev}", f"output_dir={out}/trainer", "max_steps=5", "local.progress_bar=false",
        "checkpoint.save_steps=5"])
    tr = Trainer(cfg)
    print(f"{'step':>4} | {'reward':>6} | {'p':>5} | {'eps_high':>8} | {'loss':>9} | {'step s':>6}")
    tr.fit()
    from apmpo_openrlhf.local.metrics import read_metrics
    for r in read_metrics(f"{out}/trainer/metrics.jsonl"):
        print(f"{r['step']:>4} | {r['reward_mean']:6.3f} | {r['p']:5.3f} | {r['eps_high']:8.3f} | {r['loss']:9.2e} | {r['step_time_s']:6.3f}")
    print(f"model on {next(tr.model.parameters()).device}")
sys.exit(1 if failed else 0)
PYEOF
