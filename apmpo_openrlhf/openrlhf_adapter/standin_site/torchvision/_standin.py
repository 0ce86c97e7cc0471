"""The stand-in's kernels, written from torchvision's documented tensor semantics (CPU paths):
the same torch calls, so an image goes through the same arithmetic as with torchvision on a CPU."""

from __future__ import annotations

import enum

import numpy as np
import torch


class StandinMissingError(NotImplementedError):
    """A call into a part of torchvision the CPU backend's stand-in does not provide."""


def _missing_message(name: str) -> str:
    return (f"{name} is not provided by apmpo_openrlhf's torchvision stand-in (CPU backend, torchvision not "
            "installed): it covers the Qwen2-VL / Qwen2.5-VL image path only; install torchvision for more")


def missing_attribute(module: str):
    """Module ``__getattr__``: a name the stand-in does not define is absent (AttributeError, so
    ``hasattr`` is False and ``from ... import`` fails with an ImportError naming the stand-in's file)."""

    def __getattr__(name: str):
        raise AttributeError(_missing_message(f"{module}.{name}"))

    return __getattr__


def missing_function(qualname: str):
    """A function torchvision has and the stand-in does not compute: calling it raises."""

    def missing(*args, **kwargs):
        raise StandinMissingError(_missing_message(qualname))

    missing.__name__ = missing.__qualname__ = qualname.rsplit(".", 1)[-1]
    return missing


class InterpolationMode(enum.Enum):
    """torchvision.transforms.InterpolationMode (values are torch's interpolate mode names)."""

    NEAREST = "nearest"
    NEAREST_EXACT = "nearest-exact"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
    BOX = "box"
    HAMMING = "hamming"
    LANCZOS = "lanczos"


class ImageReadMode(enum.Enum):
    UNCHANGED = 0
    GRAY = 1
    GRAY_ALPHA = 2
    RGB = 3
    RGB_ALPHA = 4


def pil_to_tensor(pic) -> torch.Tensor:
    """A PIL image as a uint8 (C, H, W) tensor, channels in the image's band order."""
    array = np.array(pic, copy=True)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.as_tensor(array).permute(2, 0, 1).contiguous()


def _interpolation(mode) -> InterpolationMode:
    if isinstance(mode, InterpolationMode):
        return mode
    if isinstance(mode, str):
        return InterpolationMode(mode)
    raise TypeError(f"interpolation must be an InterpolationMode, got {mode!r}")


def resize(image: torch.Tensor, size, interpolation=InterpolationMode.BILINEAR, max_size=None, antialias=True):
    """Resize the last two dims of an image tensor to ``size`` = [height, width] (both given).

    As torchvision's tensor kernel: ``interpolate`` with ``align_corners=False`` and antialiasing for
    bilinear/bicubic; uint8 input stays uint8 where torch has a native CPU kernel (bicubic, and
    bilinear on AVX2/AVX-512), else it goes through float32, rounded and clamped back.
    """
    if not isinstance(image, torch.Tensor):
        raise StandinMissingError("the torchvision stand-in resizes tensors only (PIL images: use PIL)")
    if max_size is not None or size is None or len(size) != 2:
        raise StandinMissingError("the torchvision stand-in's resize needs size=[height, width] and no max_size")
    mode = _interpolation(interpolation)
    if mode not in (InterpolationMode.NEAREST, InterpolationMode.NEAREST_EXACT, InterpolationMode.BILINEAR,
                    InterpolationMode.BICUBIC):
        raise StandinMissingError(f"the torchvision stand-in cannot resize tensors with {mode}")
    smooth = mode in (InterpolationMode.BILINEAR, InterpolationMode.BICUBIC)
    new_height, new_width = int(size[0]), int(size[1])
    shape = image.shape
    channels, height, width = shape[-3:]
    if (new_height, new_width) == (height, width):
        return image
    dtype = image.dtype
    native = [torch.float32, torch.float64]
    if not smooth or (image.device.type == "cpu" and (
            mode == InterpolationMode.BICUBIC
            or torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"))):
        native.append(torch.uint8)
    batch = image.reshape(-1, channels, height, width)
    cast = dtype not in native
    if cast:
        batch = batch.to(torch.float32)
    out = torch.nn.functional.interpolate(batch, size=[new_height, new_width], mode=mode.value,
                                          align_corners=False if smooth else None,
                                          antialias=bool(antialias) and smooth)
    if cast:
        if mode == InterpolationMode.BICUBIC and dtype == torch.uint8:
            out = out.clamp_(0, 255)
        if not dtype.is_floating_point:
            out = out.round_()
        out = out.to(dtype)
    return out.reshape(shape[:-3] + (channels, new_height, new_width))


def normalize(image: torch.Tensor, mean, std, inplace: bool = False) -> torch.Tensor:
    """(image - mean) / std per channel, on a floating-point tensor."""
    if not image.is_floating_point():
        raise TypeError(f"normalize needs a floating-point tensor, got {image.dtype}")
    mean = torch.as_tensor(mean, dtype=image.dtype, device=image.device).view(-1, 1, 1)
    std = torch.as_tensor(std, dtype=image.dtype, device=image.device).view(-1, 1, 1)
    if (std == 0).any():
        raise ValueError(f"std evaluated to zero after conversion to {image.dtype}, leading to division by zero")
    return image.sub_(mean).div_(std) if inplace else (image - mean) / std


def pad(image: torch.Tensor, padding, fill=0, padding_mode: str = "constant") -> torch.Tensor:
    """Pad the last two dims by [left, top, right, bottom] (or 1 / 2 values) with a constant."""
    if padding_mode != "constant":
        raise StandinMissingError(f"the torchvision stand-in pads with padding_mode='constant' only, not {padding_mode!r}")
    padding = [int(padding)] if isinstance(padding, int) else [int(p) for p in padding]
    if len(padding) == 1:
        left = top = right = bottom = padding[0]
    elif len(padding) == 2:
        left = right = padding[0]
        top = bottom = padding[1]
    elif len(padding) == 4:
        left, top, right, bottom = padding
    else:
        raise ValueError(f"padding must have 1, 2 or 4 values, got {padding}")
    return torch.nn.functional.pad(image, [left, right, top, bottom], mode="constant", value=0 if fill is None else fill)


def crop(image: torch.Tensor, top: int, left: int, height: int, width: int) -> torch.Tensor:
    """The window [top, top + height) x [left, left + width); zero padding outside the image."""
    h, w = image.shape[-2:]
    right, bottom = left + width, top + height
    if left < 0 or top < 0 or right > w or bottom > h:
        image = image[..., max(top, 0):bottom, max(left, 0):right]
        return pad(image, [max(-left, 0), max(-top, 0), max(right - w, 0), max(bottom - h, 0)])
    return image[..., top:bottom, left:right]


def grayscale_to_rgb(image: torch.Tensor) -> torch.Tensor:
    """A one-channel image repeated to three channels (three-channel input is returned as is)."""
    if image.shape[-3] >= 3:
        return image
    return image.repeat_interleave(3, dim=-3)
