"""Reading images from bytes, shared by the converters and the training pipeline.

Real datasets hold more than 8-bit RGB: COCO has grayscale and CMYK JPEGs, web data has palette PNGs
with transparency and 16-bit PNGs. Those are good images and are converted here, correctly, to RGB.
What cannot be used (undecodable, truncated, absurdly large) raises :class:`BadImage` with a short
reason, which converters and the pipeline count by reason.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image

# PIL's own default; an image above it is treated as a decompression bomb rather than decoded.
MAX_IMAGE_PIXELS = 89_478_485
PIL_FORMAT_TO_EXTENSION = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}
# Transparent pixels are composited onto this colour instead of exposing whatever RGB they hide.
ALPHA_BACKGROUND = (255, 255, 255)


class BadImage(ValueError):
    """An image that cannot be used; ``reason`` is the short, countable explanation."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def mode_note(mode: str) -> str:
    """How an image that is not plain RGB is kept (counted by converters; nothing is dropped for it)."""
    if mode in ("RGB",):
        return ""
    if mode in ("L", "1"):
        return "grayscale"
    if mode in ("RGBA", "LA", "PA") or mode == "P":
        return "palette or alpha"
    if mode == "CMYK":
        return "CMYK"
    if mode.startswith("I") or mode == "F":
        return "16-bit or float"
    return f"mode {mode}"


def _open(data: bytes, max_pixels: int) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit decides
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as error:
        raise BadImage("image too large (decompression-bomb limit)") from error
    except Exception as error:  # PIL raises many types for data that is not an image
        raise BadImage("undecodable image") from error
    width, height = image.size
    if width * height > max_pixels:
        raise BadImage("image too large (decompression-bomb limit)")
    if width < 1 or height < 1:
        raise BadImage("empty image")
    return image


def _load(image: Image.Image) -> None:
    try:
        image.load()  # a full decode: Image.open and verify() do not notice a truncated JPEG
    except Exception as error:
        raise BadImage("undecodable or truncated image") from error


def inspect_image(data: bytes, max_pixels: int = MAX_IMAGE_PIXELS) -> tuple[str, str]:
    """Decode fully and return (extension of the real format, mode note); raises BadImage."""
    image = _open(data, max_pixels)
    image_format = image.format
    _load(image)
    if image_format not in PIL_FORMAT_TO_EXTENSION:
        raise BadImage(f"unsupported image format {image_format}")
    return PIL_FORMAT_TO_EXTENSION[image_format], mode_note(image.mode)


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB, whatever the source mode: alpha composited on white, 16-bit scaled (not clipped)."""
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I") or image.mode == "F":
        # convert("L") would clip 16-bit values at 255 (a white image); scale the real range instead.
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or values.max() > 255 else 255.0
        gray = np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, ALPHA_BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def decode_rgb(data: bytes, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Bytes -> fully decoded 8-bit RGB PIL image; raises BadImage."""
    image = _open(data, max_pixels)
    _load(image)
    try:
        return to_rgb(image)
    except Exception as error:
        raise BadImage(f"unconvertible image mode {image.mode}") from error
