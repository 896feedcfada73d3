"""``tools/convert_dataset.py``: flags, the run, the verification, the last summary line and exit status."""

import argparse
import sys
from pathlib import Path

from mokd_fast.convert.output import REPORT
from mokd_fast.convert.run import convert
from mokd_fast.convert.verify import verify
from mokd_fast.core.errors import UsageError

WRITE_MODES = ("jpg", "raw", "proportion", "smart")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="convert_dataset.py", allow_abbrev=False,
        description="Convert an ImageFolder tree (or a '<path> <label>' list) to an FFCV .beton or DALI "
                    "webdataset shards, reporting every fixed and skipped file.",
    )
    parser.add_argument("src", help="ImageFolder root (class sub-folders) or a text file of '<path> <label>' lines")
    parser.add_argument("out", help="output folder (created; must be new or empty unless --resume)")
    parser.add_argument("--format", required=True, choices=("ffcv", "dali"))
    parser.add_argument("--max-resolution", type=int, default=512, help="longer side limit; larger images are resized")
    parser.add_argument("--jpeg-quality", type=int, default=90, help="quality of re-encoded JPEGs")
    parser.add_argument("--write-mode", choices=WRITE_MODES, default="jpg", help="ffcv: how images are stored")
    parser.add_argument("--compress-probability", type=float, default=0.5, help="ffcv: JPEG share with --write-mode proportion")
    parser.add_argument("--shard-size", type=int, default=1000, help="dali: images per shard")
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument("--resume", action="store_true", help="finish a killed conversion in OUT")
    parser.add_argument("--verify", nargs="?", const="sample", choices=("sample", "all"),
                        help="re-open the output and check it (decode a sample, or all)")
    parser.add_argument("--limit", type=int, default=None, help="convert only the first N source files")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Returns 0 when the output is usable (and verifies, if asked), 1 when not, 2 on bad usage."""
    parser = build_parser()
    args = parser.parse_args(argv)
    out = Path(args.out)
    for name, low, high in (("max_resolution", 16, 1 << 16), ("jpeg_quality", 1, 100), ("shard_size", 1, 1 << 30),
                            ("workers", 1, 1024)):
        value = getattr(args, name)
        if not low <= value <= high:
            parser.error(f"--{name.replace('_', '-')} {value} must lie in [{low}, {high}]")
    if not 0.0 <= args.compress_probability <= 1.0:
        parser.error("--compress-probability must lie in [0, 1]")
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be >= 1")
    options = {"max_resolution": args.max_resolution, "jpeg_quality": args.jpeg_quality}
    if args.format == "ffcv":
        options |= {"write_mode": args.write_mode, "compress_probability": args.compress_probability}
    else:
        options |= {"shard_size": args.shard_size}
    if args.verify and (out / REPORT).exists():  # a finished output: check it again, convert nothing
        return _report_verify(out, args.verify)
    try:
        report = convert(args.src, out, args.format, options, args.workers, args.resume, args.limit)
    except UsageError as err:
        print(f"convert_dataset.py: error: {err}", file=sys.stderr)
        return 2
    for entry in report["skipped"]:
        print(f"skipped {entry['path']}: {entry['reason']}")
    for entry in report["fixed"]:
        print(f"fixed   {entry['path']}: {entry['what']}")
    rate = (report["converted"] + len(report["skipped"])) / max(report["seconds"], 1e-9)
    print(f"converted {report['converted']}, fixed {len(report['fixed'])}, skipped {len(report['skipped'])} -> {out} "
          f"({report['bytes'] / 1e6:.1f} MB, {report['seconds']} s, {rate:.0f} images/s)")
    if not report["converted"]:
        print("no image could be converted: the output is not usable", file=sys.stderr)
        return 1
    return _report_verify(out, args.verify) if args.verify else 0


def _report_verify(out: Path, mode: str) -> int:
    problems = verify(out, mode)
    for problem in problems:
        print(f"verify: {problem}", file=sys.stderr)
    print(f"verify ({mode}): {'FAILED, ' + str(len(problems)) + ' problems' if problems else 'ok'}")
    return 1 if problems else 0
