"""``torchvision.transforms`` of the stand-in: ``InterpolationMode`` and the functional modules."""

from .._standin import InterpolationMode, missing_attribute  # noqa: F401
from . import functional, v2  # noqa: F401

__getattr__ = missing_attribute(__name__)
