"""``torchvision.transforms.v2`` of the stand-in: the functional module only."""

from ..._standin import missing_attribute
from . import functional  # noqa: F401

__getattr__ = missing_attribute(__name__)
