"""The CPU backend's torchvision stand-in (openrlhf_adapter/vision_standin.py, standin_site/torchvision).

What runs in a fresh process (the stand-in must be on the path before transformers is imported,
as in every process of the loop): transformers' torchvision-backend Qwen2-VL image processor,
computing with the stand-in, against its PIL-backend twin on real Geometry3K diagrams; the stand-in
reaching a child process through the environment; the parts torchvision has and the stand-in does
not, absent or raising. In this process: nothing is installed where a real torchvision is importable.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from apmpo_openrlhf.openrlhf_adapter import vision_standin

REPO = Path(__file__).resolve().parents[2]

FRESH_PROCESS = r"""
import json, subprocess, sys
from apmpo_openrlhf.openrlhf_adapter import vision_standin
installed = vision_standin.install()
from PIL import Image
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
from transformers.utils import is_torchvision_available
import torchvision
out = {"installed": installed, "active": vision_standin.active(), "standin": getattr(torchvision, "STANDIN", False),
       "transformers_sees_torchvision": is_torchvision_available(), "images": []}
for path in sys.argv[1:]:
    image = Image.open(path).convert("RGB")
    for longest in (112 * 112, 28 * 28 * 1280):  # the tiny model's limit, Qwen2.5-VL's default
        size = {"shortest_edge": 56 * 56, "longest_edge": longest}
        tv = Qwen2VLImageProcessor(size=dict(size))(images=[image], return_tensors="pt")
        pil = Qwen2VLImageProcessorPil(size=dict(size))(images=[image], return_tensors="pt")
        diff = (tv["pixel_values"] - pil["pixel_values"]).abs()
        out["images"].append({"grid": tv["image_grid_thw"].tolist(), "pil_grid": pil["image_grid_thw"].tolist(),
                              "mean_abs": float(diff.mean()), "max_abs": float(diff.max())})
child = subprocess.run([sys.executable, "-c", "import torchvision; print(torchvision.STANDIN)"],
                       capture_output=True, text=True)
out["child"] = child.stdout.strip()
try:
    from torchvision.ops import nms  # noqa: F401
    out["ops"] = "imported"
except ModuleNotFoundError:
    out["ops"] = "absent"
out["has_ToTensor"] = hasattr(torchvision.transforms, "ToTensor")
try:
    torchvision.io.read_video("clip.mp4")
except NotImplementedError as exc:
    out["read_video"] = str(exc)
print(json.dumps(out))
"""


@pytest.mark.slow
def test_standin_runs_the_qwen2_vl_image_path_like_the_pil_backend(data_dir):
    if vision_standin.real_package_installed():
        pytest.skip("torchvision is installed: the stand-in stays inactive")
    diagrams = [data_dir / "geometry3k" / "test" / name / "img_diagram.png" for name in ("2401", "2406")]
    if not all(p.is_file() for p in diagrams):
        pytest.skip("Geometry3K test diagrams are absent from the data directory")
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", FRESH_PROCESS, *map(str, diagrams)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["installed"] and out["active"] and out["standin"] and out["transformers_sees_torchvision"]
    assert out["child"] == "True"  # PYTHONPATH carries it to processes started from here (vLLM's)
    assert out["ops"] == "absent" and out["has_ToTensor"] is False
    assert "stand-in" in out["read_video"]
    # torch's antialiased bicubic (what torchvision runs on CPU tensors) vs PIL's: same grid, pixel
    # values within one intensity level (1/255 over CLIP's smallest std 0.2613: 0.0150)
    for image in out["images"]:
        assert image["grid"] == image["pil_grid"]
        assert image["max_abs"] <= 1 / 255 / 0.26130258 + 1e-5 and image["mean_abs"] < 1e-4


def test_nothing_is_installed_where_torchvision_is_importable(tmp_path, monkeypatch):
    site = tmp_path / "site"
    (site / "torchvision").mkdir(parents=True)
    (site / "torchvision" / "__init__.py").write_text("__version__ = '0.28.0'\n")
    monkeypatch.setattr(sys, "path", [str(site), *[p for p in sys.path if Path(p or ".").resolve() != vision_standin.STANDIN_SITE]])
    monkeypatch.setenv("PYTHONPATH", "/somewhere")
    path_before = list(sys.path)
    assert vision_standin.real_package_installed()
    assert vision_standin.install() is False
    assert sys.path == path_before and os.environ["PYTHONPATH"] == "/somewhere"
    assert not vision_standin.active()


def test_install_is_idempotent_and_reaches_the_environment(monkeypatch):
    if vision_standin.real_package_installed():
        pytest.skip("torchvision is installed: the stand-in stays inactive")
    monkeypatch.setattr(sys, "path", [p for p in sys.path if Path(p or ".").resolve() != vision_standin.STANDIN_SITE])
    monkeypatch.setenv("PYTHONPATH", "/somewhere")
    assert vision_standin.install() and vision_standin.install()
    assert sys.path.count(str(vision_standin.STANDIN_SITE)) == 1 and vision_standin.active()
    assert os.environ["PYTHONPATH"].split(os.pathsep) == [str(vision_standin.STANDIN_SITE), "/somewhere"]
