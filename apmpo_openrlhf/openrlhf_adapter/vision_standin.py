"""The torchvision stand-in of the CPU backend: what a Qwen2.5-VL model needs where torchvision is absent.

No CPU build of torchvision installs beside the CPU torch from the package index, yet three things
of the vision-language path import it:

- transformers' Qwen2-VL image and video processors (``image_processing_qwen2_vl.py`` /
  ``video_processing_qwen2_vl.py`` import ``torchvision.transforms.v2.functional`` at module
  level; the Qwen2.5-VL processor needs a video processor object even for images only);
- vLLM's Qwen2-VL / Qwen2.5-VL module (``smart_resize`` from ``image_processing_qwen2_vl``), which
  vLLM imports in a subprocess it starts to inspect the model (``model_executor/models/registry.py``
  ``_run_in_subprocess``; the result is cached under ``VLLM_CACHE_ROOT/modelinfos``, so only a
  fresh cache shows a missing stand-in);
- transformers' image utilities, which import ``torchvision.io`` / ``transforms`` names once
  torchvision counts as available.

:func:`install` puts ``standin_site/`` (a ``torchvision`` package computing the image path with the
same torch kernels torchvision uses on CPU tensors, everything else absent) at the front of
``sys.path`` and of ``PYTHONPATH``, so it reaches this process and every process started from it:
Ray workers (the CPU backend runs it in their ``worker_process_setup_hook`` and passes
``PYTHONPATH`` in their environment), vLLM's engine-core and worker processes and its model-inspection
subprocess (they inherit the environment). Where torchvision is installed it does nothing.
"""

from __future__ import annotations

import importlib.machinery
import os
import sys
from pathlib import Path

STANDIN_SITE = Path(__file__).resolve().parent / "standin_site"
PACKAGE = "torchvision"


def real_package_installed() -> bool:
    """Whether a torchvision other than the stand-in is importable (searched without its folder)."""
    search = [p for p in sys.path if Path(p or ".").resolve() != STANDIN_SITE]
    return importlib.machinery.PathFinder.find_spec(PACKAGE, search) is not None


def _on_path(entries: list[str]) -> bool:
    return any(Path(p or ".").resolve() == STANDIN_SITE for p in entries if p is not None)


def active() -> bool:
    """Whether this process imports the stand-in (its folder on sys.path, no real torchvision)."""
    return _on_path(sys.path) and not real_package_installed()


def install() -> bool:
    """Make the stand-in importable here and in every child process, unless torchvision is installed.

    Returns True when the stand-in is (now) in use. Idempotent.
    """
    if real_package_installed():
        return False
    loaded = sys.modules.get(PACKAGE)
    if loaded is not None and not getattr(loaded, "STANDIN", False):
        return False  # a torchvision module object from elsewhere (e.g. a test's own): leave it
    site = str(STANDIN_SITE)
    if not _on_path(sys.path):
        sys.path.insert(0, site)
        importlib.invalidate_caches()
    entries = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if not _on_path(entries):
        os.environ["PYTHONPATH"] = os.pathsep.join([site, *entries])
    return True


def usable_here() -> bool:
    """:func:`install`, then whether transformers in this process can use torchvision (the real one
    or the stand-in). False where transformers was imported before the stand-in was on the path:
    it decides once, at import, whether torchvision is available (``is_torchvision_available`` is
    cached, image utilities and the video processor classes are set up from it); such a process
    must leave the work to a fresh one."""
    if install() and "transformers" in sys.modules:
        from transformers.utils import import_utils

        return import_utils.is_torchvision_available()
    return True
