"""``torchvision.transforms.v2.functional`` of the stand-in (the tensor kernels of ``_standin``)."""

from ..._standin import (  # noqa: F401
    InterpolationMode, crop, grayscale_to_rgb, missing_attribute, normalize, pad, pil_to_tensor, resize,
)

__getattr__ = missing_attribute(__name__)
