"""What to convert: every file of an ImageFolder tree, or the lines of a ``path label`` list."""

import os
from dataclasses import dataclass
from pathlib import Path

from mokd_fast.core.errors import UsageError


@dataclass(frozen=True)
class Sample:
    """One source file.

    Attributes:
        index: Position in the source listing; the sample's key in every output format.
        path: The file.
        label: Class index.
    """

    index: int
    path: str
    label: int


def image_folder(root: Path) -> tuple[list[Sample], list[str]]:
    """Every file under ``root/<class>/`` (recursively), in torchvision ImageFolder's order.

    Classes are the sorted sub-folder names, indexed like ``torchvision.datasets.ImageFolder``. Unlike
    ImageFolder, files are not filtered by extension: a file that is not an image is reported as
    skipped rather than ignored without a trace.
    """
    classes = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
    if not classes:
        raise UsageError(f"SRC {root} has no class sub-folders; expected <SRC>/<class>/<image> or a list file")
    samples: list[Sample] = []
    for label, name in enumerate(classes):
        for folder, _, files in sorted(os.walk(root / name, followlinks=True)):
            for fname in sorted(files):
                samples.append(Sample(len(samples), os.path.join(folder, fname), label))
    return samples, classes


def list_file(path: Path) -> tuple[list[Sample], list[str]]:
    """Samples from lines ``<path> <label>`` (paths relative to the list file's folder; '#' comments)."""
    samples: list[Sample] = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit() or int(parts[1]) < 0:
            raise UsageError(f"{path}:{number}: expected '<path> <label>' with a label >= 0, got {line!r}")
        file = Path(parts[0]) if Path(parts[0]).is_absolute() else path.parent / parts[0]
        samples.append(Sample(len(samples), str(file), int(parts[1])))
    if not samples:
        raise UsageError(f"SRC {path} lists no files; expected lines '<path> <label>'")
    n_classes = max(s.label for s in samples) + 1
    return samples, [str(i) for i in range(n_classes)]


def list_source(src: str | Path) -> tuple[list[Sample], list[str]]:
    """The samples and class names of ``src`` (an ImageFolder tree or a list file).

    Raises:
        UsageError: ``src`` is missing, empty, or a malformed list.
    """
    src = Path(src)
    if src.is_dir():
        return image_folder(src)
    if src.is_file():
        return list_file(src)
    raise UsageError(f"SRC {src} does not exist; give an ImageFolder root or a text file of '<path> <label>' lines")
