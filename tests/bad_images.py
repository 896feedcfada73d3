"""A source folder of real photographs plus every kind of problem file real datasets contain."""

import io
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

# file name -> (what the converter must do, expected "fixed" phrase or "skipped" reason fragment)
PROBLEMS = {
    "cmyk.jpg": ("fixed", "CMYK converted to RGB"),
    "gray.jpg": ("fixed", "grayscale converted to RGB"),
    "png_named.JPEG": ("fixed", "PNG data re-encoded as JPEG"),
    "rgba.png": ("fixed", "RGBA with transparency composited on white"),
    "palette.png": ("fixed", "P with transparency composited on white"),
    "deep16.png": ("fixed", "16-bit grayscale scaled to 8-bit RGB"),
    "rotated.jpg": ("fixed", "EXIF orientation 6 applied"),
    "huge.jpg": ("fixed", "resized from 3000x2000 to 512x341"),
    "truncated.jpg": ("skipped", "corrupt or truncated"),
    "empty.jpg": ("skipped", "empty file"),
    "notes.txt": ("skipped", "not an image"),
    "dangling.jpg": ("skipped", "unreadable"),
}


def make_source(photo_folder: Path, root: Path) -> Path:
    """``root/<class>/``: the photo folder's images and, in class ``zz_problems``, one file per problem."""
    shutil.copytree(photo_folder, root)
    bad = root / "zz_problems"
    bad.mkdir()
    photo = Image.open(next(photo_folder.rglob("*.jpg"))).convert("RGB")
    photo.convert("CMYK").save(bad / "cmyk.jpg", quality=90)
    photo.convert("L").save(bad / "gray.jpg", quality=90)
    photo.save(bad / "png_named.JPEG", format="PNG")
    rgba = photo.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(photo.size))
    rgba.save(bad / "rgba.png")
    palette = photo.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.info["transparency"] = 0
    palette.save(bad / "palette.png", transparency=0)
    deep = (np.linspace(0, 65535, photo.width * photo.height).reshape(photo.height, photo.width)).astype(np.uint16)
    Image.fromarray(deep).save(bad / "deep16.png")
    exif = Image.Exif()
    exif[0x0112] = 6
    photo.save(bad / "rotated.jpg", quality=90, exif=exif.tobytes())
    Image.new("RGB", (3000, 2000), (30, 120, 200)).save(bad / "huge.jpg", quality=90)
    data = io.BytesIO()
    photo.save(data, format="JPEG", quality=90)
    (bad / "truncated.jpg").write_bytes(data.getvalue()[: len(data.getvalue()) // 2])
    (bad / "empty.jpg").write_bytes(b"")
    (bad / "notes.txt").write_text("annotations, not an image\n")
    os.symlink(bad / "does_not_exist.jpg", bad / "dangling.jpg")
    return root
