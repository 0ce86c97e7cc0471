"""``torchvision.io`` of the stand-in: the names transformers imports; decoding is not provided
(transformers decodes images with PIL when given paths or PIL images)."""

from ._standin import ImageReadMode, missing_attribute, missing_function  # noqa: F401

decode_image = missing_function("torchvision.io.decode_image")
read_image = missing_function("torchvision.io.read_image")
read_video = missing_function("torchvision.io.read_video")

__getattr__ = missing_attribute(__name__)
