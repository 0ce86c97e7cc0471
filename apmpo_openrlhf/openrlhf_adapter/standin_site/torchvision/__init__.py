"""Stand-in for ``torchvision`` on the CPU backend (no CPU build of torchvision installs beside
the CPU torch from the package index). Put on the import path by
``apmpo_openrlhf/openrlhf_adapter/vision_standin.py`` only where torchvision is absent.

It provides what the Qwen2-VL / Qwen2.5-VL image path of transformers and vLLM imports and calls,
computed with the same torch operations torchvision uses for CPU tensors
(``torchvision/transforms/v2/functional``: ``pil_to_tensor``, ``resize`` on uint8/float tensors
through ``torch.nn.functional.interpolate`` with antialiasing, ``normalize``, ``pad``, ``crop``,
``grayscale_to_rgb``). Everything else (video decoding, detection ops, other transforms) is absent:
importing such a name fails with an ImportError naming the stand-in, and nothing is silently
approximated. The version is 0.0.0, so version-gated features of transformers stay off (e.g.
LANCZOS processors keep their PIL backend).
"""

from . import _standin
from . import io, transforms  # noqa: F401  (``import torchvision; torchvision.io`` works as in the real package)

__version__ = "0.0.0+apmpo.standin"
STANDIN = True  # marker checked by apmpo_openrlhf/openrlhf_adapter/vision_standin.py

__getattr__ = _standin.missing_attribute(__name__)
