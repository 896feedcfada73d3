"""Reading checkpoint-like files without running code from them, and writing them atomically.

A ``.pth`` file is a pickle, and a pickle can name any Python callable to run while it is read: a
teacher downloaded for SEED or weights handed over to evaluate could run a shell command on load.
Every file the project reads goes through ``load_file``, which reads torch files with torch's
weights-only unpickler. That unpickler admits tensors, storages and plain containers; here it also
admits ``argparse.Namespace`` (the ``args`` entry of official MOKD, DINO and MoCo checkpoints) and
NumPy arrays, scalars and dtypes (the learning rates and RNG state of official checkpoints and of
this project's checkpoints written before 2026-12-04). Anything else is refused before it is built,
with a message naming the flag, the file and what the pickle asked for; ``--trust_checkpoint`` reads
a file the user vouches for with the full unpickler.

``.safetensors`` files hold tensors and a JSON header only and are read with ``safetensors``.
Every broken input (a folder, an empty, cut-short, text or random file) is one ``UsageError`` line.
"""

import argparse
import json
import os
import pickle
import pickletools
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mokd_fast.core.errors import UsageError
from mokd_fast.core.settings import TRUST_FLAG

try:  # NumPy 2 moved the pickled helpers to numpy._core; files written under NumPy 1 name numpy.core
    from numpy._core import multiarray as _multiarray
except ImportError:  # NumPy 1.x
    from numpy.core import multiarray as _multiarray  # type: ignore[no-redef]

ZIP_MAGIC = b"PK\x03\x04"
PICKLE_PROTOCOL_OPCODE = 0x80  # the first byte of a protocol-2+ pickle (torch's legacy, non-zip format)

# What a legitimate file may ask the unpickler for beyond torch's own allowlist. NumPy's helpers are
# listed under both module names so that files pickled under NumPy 1 and NumPy 2 load alike.
ALLOWED_GLOBALS: list[Any] = [
    argparse.Namespace,
    np.ndarray,
    np.dtype,
    _multiarray._reconstruct,
    _multiarray.scalar,
    (_multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),
    (_multiarray.scalar, "numpy.core.multiarray.scalar"),
    *(getattr(np.dtypes, name) for name in dir(np.dtypes) if name.endswith("DType")),
]


class IncompleteFile(UsageError):
    """The file ends before its end: a copy or a save that did not finish."""


def _fail(flag: str, path: Path, problem: str, cls: type[UsageError] = UsageError) -> UsageError:
    return cls(f"{flag} {path}: {' '.join(problem.split())}")


def _kind(path: Path, flag: str) -> str:
    """``torch-zip``, ``torch-legacy`` or ``safetensors``, from the file's first bytes.

    Raises:
        UsageError: A folder, a missing, unreadable, empty, text or unknown file.
    """
    if path.is_dir():
        raise _fail(flag, path, "is a directory; give the checkpoint file inside it")
    if not path.exists():
        raise _fail(flag, path, "no such file")
    try:
        with open(path, "rb") as f:
            head = f.read(512)
        size = path.stat().st_size
    except OSError as err:
        raise _fail(flag, path, f"cannot be read ({err.strerror})") from err
    if size == 0:
        raise _fail(flag, path, "is empty (0 bytes); a save or copy that never wrote it?", IncompleteFile)
    if head.startswith(ZIP_MAGIC):
        return "torch-zip"
    if head[0] == PICKLE_PROTOCOL_OPCODE:
        return "torch-legacy"
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    if path.suffix == ".safetensors":
        raise _fail(flag, path, "is not a valid .safetensors file (its header is missing)")
    try:
        head.decode("utf-8")
        what = "is a text file"
    except UnicodeDecodeError:
        what = f"is not a file this project reads (it starts with bytes {head[:4].hex()})"
    raise _fail(flag, path, f"{what}, not a torch checkpoint (.pth) nor a .safetensors file")


def _load_safetensors(path: Path, flag: str, map_location: Any) -> dict[str, torch.Tensor]:
    """A ``.safetensors`` file's tensors, after checking that its data covers what its header declares."""
    from safetensors.torch import load_file as load_safetensors

    size = path.stat().st_size
    with open(path, "rb") as f:
        header_len = int.from_bytes(f.read(8), "little")
        if 8 + header_len > size:
            raise _fail(flag, path, f"is incomplete: its header declares {header_len} bytes but the file has {size}",
                        IncompleteFile)
        try:
            header = json.loads(f.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise _fail(flag, path, f"is not a valid .safetensors file (header: {err})") from err
    ends = [entry["data_offsets"][1] for name, entry in header.items()
            if name != "__metadata__" and isinstance(entry, dict) and "data_offsets" in entry]
    needed = 8 + header_len + max(ends, default=0)
    if size < needed:
        raise _fail(flag, path, f"is incomplete: {size} bytes of the {needed} its header declares", IncompleteFile)
    device = str(map_location) if map_location is not None else "cpu"
    try:
        return load_safetensors(str(path), device=device)
    except Exception as err:  # safetensors raises its own SafetensorError and others for a malformed file
        raise _fail(flag, path, f"is not a valid .safetensors file ({type(err).__name__}: {err})") from err


def _refusal(flag: str, path: Path, asked: list[str]) -> UsageError:
    return _fail(flag, path, f"refused without loading it: its pickle asks for {', '.join(sorted(asked))}, which a "
                             f"file of weights never needs and which could run code; if you trust this file, pass "
                             f"{TRUST_FLAG} (see docs/evaluation.md, 'Loading files from elsewhere')")


def _unpickling_problem(err: Exception) -> str:
    """The one informative line of torch's multi-paragraph weights-only error."""
    text = str(err)
    match = re.search(r"WeightsUnpickler error: (.*)|(Trying to load unsupported GLOBAL .*)", text)
    return (match.group(match.lastindex) if match else text.splitlines()[0] if text else type(err).__name__).strip()


def load_file(path: str | os.PathLike, flag: str, trust: bool = False, map_location: Any = "cpu") -> Any:
    """The object a torch checkpoint or a ``.safetensors`` file holds, read without running code from it.

    Args:
        path: The file.
        flag: The flag that named it (``--resume``, ``--teacher``...), for the messages.
        trust: Read a ``.pth`` with the full unpickler (``--trust_checkpoint``): only for files the user
            vouches for, since such a file can run any code.
        map_location: Where tensors go, as ``torch.load``'s argument.

    Raises:
        IncompleteFile: Empty or cut short.
        UsageError: A folder, a missing, unreadable, text or unknown file; a pickle that asks for
            anything beyond tensors, plain containers, ``argparse.Namespace`` and NumPy data (unless
            ``trust``). One line naming ``flag`` and the file.
    """
    path = Path(path)
    kind = _kind(path, flag)
    if kind == "safetensors":
        return _load_safetensors(path, flag, map_location)
    if kind == "torch-zip" and not is_complete(path):
        raise _fail(flag, path, "is incomplete: the end of the file is missing (a copy or save cut short?)",
                    IncompleteFile)
    if not trust:
        try:
            asked = unsafe_globals(path)
        except Exception as err:  # a zip archive that torch.save did not write, or damaged opcodes
            raise _fail(flag, path, f"is not a readable torch checkpoint ({type(err).__name__}: {err})") from err
        if asked:
            raise _refusal(flag, path, asked)
    with torch.serialization.safe_globals(ALLOWED_GLOBALS):
        try:
            return torch.load(path, map_location=map_location, weights_only=not trust)
        except pickle.UnpicklingError as err:
            problem = _unpickling_problem(err)
            if "truncated" in problem:
                raise _fail(flag, path, "is incomplete: its data ends early (a copy or save cut short?)",
                            IncompleteFile) from err
            asked = re.findall(r"GLOBAL ([\w.]+)", problem)
            if asked and not trust:
                raise _refusal(flag, path, asked) from err
            raise _fail(flag, path, f"is not a readable torch checkpoint ({problem})") from err
        except EOFError as err:
            raise _fail(flag, path, "is incomplete: its data ends early (a copy or save cut short?)",
                        IncompleteFile) from err
        except Exception as err:  # torch raises RuntimeError, ValueError, KeyError... for a damaged file
            raise _fail(flag, path, f"is not a readable torch checkpoint ({type(err).__name__}: "
                                    f"{_unpickling_problem(err)})") from err


def describe_contents(obj: Any) -> str:
    """A few words on what a loaded file holds, for messages."""
    if isinstance(obj, dict):
        return f"a dict with keys {sorted(map(str, obj))[:8]}"
    return f"a {type(obj).__name__}"


def is_complete(path: Path) -> bool:
    """Whether a torch zip checkpoint has its end (its central directory); cheap, reads no tensor."""
    try:
        with zipfile.ZipFile(path):
            return True
    except (OSError, zipfile.BadZipFile):
        return False


def _scan_pickle(stream: Any, found: set[str]) -> None:
    """Adds to ``found`` the ``module.name`` of every ``GLOBAL``/``STACK_GLOBAL`` of the one pickle at ``stream``.

    Static: the opcodes are read, nothing is built. ``STACK_GLOBAL`` takes the module and name strings
    pushed just before it, directly or from the memo.
    """
    strings: list[str] = []  # the strings pushed so far, in order
    memo: dict[int, Any] = {}
    top: str | None = None  # the string on top of the stack, if the last push was one
    for opcode, arg, _ in pickletools.genops(stream):
        if opcode.name == "GLOBAL":
            found.add(arg.replace(" ", "."))
        elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
            found.add(f"{strings[-2]}.{strings[-1]}")
        if opcode.name in ("BINPUT", "LONG_BINPUT", "PUT"):
            memo[int(arg)] = top
        elif opcode.name == "MEMOIZE":
            memo[len(memo)] = top
        elif opcode.name in ("BINGET", "LONG_BINGET", "GET"):
            top = memo.get(int(arg))
            if top is not None:
                strings.append(top)
        elif "UNICODE" in opcode.name or opcode.name in ("STRING", "BINSTRING", "SHORT_BINSTRING"):
            top = str(arg)
            strings.append(top)
        else:
            top = None


def pickle_globals(path: str | os.PathLike) -> set[str]:
    """Every ``module.name`` a torch checkpoint's pickles ask for, read from their opcodes (nothing runs).

    A zip checkpoint has one pickle (``data.pkl``); torch's legacy format and a plain ``pickle.dump``
    are pickles one after another, followed in the legacy format by raw storage bytes.
    """
    found: set[str] = set()
    with open(path, "rb") as f:
        if f.read(4) == ZIP_MAGIC:
            with zipfile.ZipFile(path) as archive:
                name = next((n for n in archive.namelist() if n.endswith("data.pkl")), None)
                if name is None:
                    raise ValueError("a zip archive without data.pkl")
                with archive.open(name) as stream:
                    _scan_pickle(stream, found)
            return found
        f.seek(0)
        while f.peek(1)[:1] == bytes([PICKLE_PROTOCOL_OPCODE]):  # another pickle follows
            try:
                _scan_pickle(f, found)
            except ValueError:  # opcodes that do not parse: the raw data after the last pickle, or damage
                break
    return found


def unsafe_globals(path: str | os.PathLike) -> list[str]:
    """The globals of ``path``'s pickles that the weights-only unpickler, with ``ALLOWED_GLOBALS``, refuses."""
    from torch import (
        _weights_only_unpickler as unpickler,  # the allowlist torch.load(weights_only=True) applies
    )

    with torch.serialization.safe_globals(ALLOWED_GLOBALS):
        allowed = set(unpickler._get_allowed_globals()) | set(unpickler._get_user_allowed_globals())
    return sorted(pickle_globals(path) - allowed)


def atomic_save(obj: Any, path: Path) -> None:
    """Writes ``obj`` so that ``path`` is either the old file or the complete new one, never a torn one.

    Temp file in the same directory, fsync, rename over the target, fsync the directory.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
