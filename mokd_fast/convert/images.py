"""Reading one source file into an RGB image fit for training data, or a reason to skip it.

Real datasets hold CMYK and grayscale JPEGs, PNGs named ``.JPEG``, RGBA and palette PNGs, 16-bit
PNGs, EXIF-rotated photos, truncated, empty and unreadable files, files that are not images, and
huge images. Each either becomes an 8-bit RGB image (every change named in ``fixed``) or raises
``Skip`` with the reason; nothing is dropped silently.
"""

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

EXIF_ORIENTATION = 0x0112


class Skip(Exception):
    """This file cannot become a training image; the message says why."""


@dataclass
class Prepared:
    """A source file made ready for writing.

    Attributes:
        image: The 8-bit RGB image after every fix.
        data: The file's bytes (what a verbatim copy writes).
        source_format: PIL's name of the file's format (JPEG, PNG, ...).
        fixed: What was changed in the pixels and why, one phrase each.
    """

    image: Image.Image
    data: bytes
    source_format: str
    fixed: list[str] = field(default_factory=list)

    @property
    def verbatim(self) -> bool:
        """A JPEG that needed no change: its bytes can be stored as they are."""
        return self.source_format == "JPEG" and not self.fixed

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) after every fix."""
        return self.image.size

    def jpeg_bytes(self, quality: int) -> bytes:
        """The bytes to store as ``.jpg``: the original when verbatim, else a fresh encoding."""
        if self.verbatim:
            return self.data
        out = io.BytesIO()
        self.image.save(out, format="JPEG", quality=quality)
        return out.getvalue()

    def array(self) -> np.ndarray:
        """``[H, W, 3]`` uint8."""
        return np.asarray(self.image, dtype=np.uint8)


def _open(path: Path, max_resolution: int) -> tuple[Image.Image, bytes, tuple[int, int]]:
    try:
        data = path.read_bytes()
    except OSError as err:
        raise Skip(f"unreadable: {err.strerror or err}") from err
    if not data:
        raise Skip("empty file (0 bytes)")
    try:
        img = Image.open(io.BytesIO(data))
        full_size = img.size
        if img.format == "JPEG" and max(img.size) > 2 * max_resolution:
            # Decode a huge JPEG at 1/2..1/8 scale (DCT scaling): it is resized below anyway.
            img.draft(img.mode, (max_resolution, max_resolution))
        img.load()
    except UnidentifiedImageError as err:
        raise Skip("not an image (no known image format)") from err
    except Image.DecompressionBombError as err:
        raise Skip(f"too many pixels to decode safely ({err})") from err
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise Skip(f"corrupt or truncated image data ({err})") from err
    return img, data, full_size


def _to_rgb(img: Image.Image, fixed: list[str]) -> Image.Image:
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        values = np.asarray(img, dtype=np.int64)
        high = 65535 if mode != "I" or values.max(initial=0) > 255 else 255
        gray = np.clip(np.round(values * (255.0 / high)), 0, 255).astype(np.uint8)
        fixed.append(f"{'16' if high == 65535 else '32'}-bit grayscale scaled to 8-bit RGB")
        return Image.fromarray(gray, "L").convert("RGB")
    if mode == "F":
        fixed.append("floating-point image clipped to 8-bit RGB")
        return Image.fromarray(np.clip(np.asarray(img), 0, 255).astype(np.uint8), "L").convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in img.info)
    if has_alpha:
        rgba = img.convert("RGBA")
        fixed.append(f"{mode} with transparency composited on white")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    names = {"CMYK": "CMYK", "L": "grayscale", "1": "1-bit", "P": "palette", "YCbCr": "YCbCr", "LAB": "Lab", "HSV": "HSV"}
    if mode not in names:
        raise Skip(f"unsupported pixel mode {mode}")
    fixed.append(f"{names[mode]} converted to RGB")
    return img.convert("RGB")


def prepare(path: str | Path, max_resolution: int) -> Prepared:
    """Opens ``path`` and makes it an 8-bit RGB image no larger than ``max_resolution`` on its longer side.

    Raises:
        Skip: The file is empty, unreadable, not an image, corrupt or truncated, or of an unknown mode.
    """
    img, data, (width, height) = _open(Path(path), max_resolution)
    source_format, fixed = img.format, []
    orientation = img.getexif().get(EXIF_ORIENTATION, 1)
    if orientation not in (1, None):
        img = ImageOps.exif_transpose(img)
        fixed.append(f"EXIF orientation {orientation} applied")
        if orientation in (5, 6, 7, 8):  # a quarter turn swaps the sides
            width, height = height, width
    img = _to_rgb(img, fixed)
    if max(width, height) > max_resolution:
        scale = max_resolution / max(width, height)
        new = (max(1, round(width * scale)), max(1, round(height * scale)))
        img = img.resize(new, Image.Resampling.LANCZOS)
        fixed.append(f"resized from {width}x{height} to {new[0]}x{new[1]}")
    return Prepared(img, data, source_format, fixed)
