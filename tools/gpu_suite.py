#!/usr/bin/env python
"""Everything we need to know about a GPU machine, from one command: ``python tools/gpu_suite.py --out DIR``.

GPU time comes in short windows, so one run takes every figure: the machine (devices, driver,
versions, matmul rates), the GPU tests, dataset conversion, every pipeline's delivered rate, the
step (ours, the official-style baseline, the parts bound, the ablation), the step fed by each GPU
pipeline, and a profile of where the step's time goes. Each part runs in its own process (a crash
or a hang costs that part only) and its figures are merged into ``DIR/summary.json`` and
``DIR/summary.md`` the moment it ends, so a run cut short keeps everything measured so far.
``--budget_s`` skips the parts that no longer fit (saying so); ``--quick`` is the subset for about
4 minutes on one H100/H200; ``--smoke`` runs the same parts on the CPU at toy sizes (the test suite
runs it, so the suite cannot rot between GPU windows). Data and part records go to ``--work``
(a temporary folder by default), never to DIR: the device tool returns at most 8 files from it.
"""

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

GPU_PIPELINES = ("dali", "ffcv", "nvjpeg")


@dataclass(frozen=True)
class Sizes:
    """Models, crops and run lengths of one suite mode."""

    device: str
    arch_cnn: str
    arch_vit: str
    out_dim: int
    batch: int
    global_size: int
    local_size: int
    local_crops: int
    images: int
    steps: int
    warmup: int
    data_steps: int
    profile_steps: int
    workers: int
    dogo_size: int
    dogo_batch: int
    seed_teacher: str
    seed_size: int
    seed_batch: int

    def dogo_flags(self) -> list[str]:
        """DoGo's official template: two ResNet-18 peers on 32-px views, batch 256."""
        return ["--method", "dogo", "--arch_1", "resnet18", "--arch_2", "resnet18", "--global_size",
                str(self.dogo_size), "--batch_size_per_gpu", str(self.dogo_batch), "--device", self.device]

    def seed_flags(self) -> list[str]:
        """SEED's common setting: a (random) MoCo-v2 ResNet-50 teacher distilled into a ResNet-18, 224 px, batch 256."""
        return ["--method", "seed", "--teacher_arch", self.seed_teacher, "--student_arch", "resnet18", "--global_size",
                str(self.seed_size), "--batch_size_per_gpu", str(self.seed_batch), "--device", self.device]

    def model_flags(self) -> list[str]:
        return ["--arch_cnn", self.arch_cnn, "--arch_vit", self.arch_vit, "--out_dim", str(self.out_dim),
                *self.crop_flags()]

    def crop_flags(self) -> list[str]:
        return ["--batch_size_per_gpu", str(self.batch), "--global_size", str(self.global_size),
                "--local_size", str(self.local_size), "--local_crops_number", str(self.local_crops),
                "--device", self.device]


def sizes_for(args: argparse.Namespace) -> Sizes:
    """The issue's figure: resnet50 + vit_small/16, 2x224 + 8x96, batch 64; toy sizes on the CPU for --smoke."""
    cpus = os.cpu_count() or 1
    if args.smoke:
        return Sizes("cpu", "resnet18", "vit_tiny", 256, 4, 64, 32, 2, 24, 2, 1, 3, 2, 1, 16, 4, "resnet18", 32, 4)
    steps, warmup = (15, 5) if args.quick else (30, 10)
    return Sizes("cuda", "resnet50", "vit_small", 65536, 64, 224, 96, 8, args.images, steps, warmup,
                 30 if args.quick else 50, 5, cpus, 32, 256, "resnet50", 224, 256)


@dataclass(frozen=True)
class Part:
    """One measurement, run as its own process.

    Attributes:
        name: Key in summary.json.
        estimate_s: Expected seconds on one H100/H200 (full, quick); a part is skipped when the
            budget left is smaller. Compile-bound parts dominate (the first compiled step of ours
            took minutes on an H100; later processes reuse Inductor's on-disk cache).
        in_quick: Part of ``--quick``.
        command: ``(suite, sizes) -> argv`` of the part's process, or a string saying why it cannot run.
    """

    name: str
    estimate_s: tuple[float, float]
    in_quick: bool
    command: Callable[["Suite", Sizes], list[str] | str]


def _benchmark(suite: "Suite", name: str, *flags: str) -> list[str]:
    return [sys.executable, str(REPO / "tools" / "benchmark.py"), *flags, "--json", str(suite.record_path(name))]


def _data_source(suite: "Suite", pipeline: str) -> str | Path:
    """The converted data a pipeline reads, or why there is none."""
    dataset = suite.records.get("dataset") or {}
    if pipeline == "torchvision":
        return suite.work / "data" / "images" if dataset.get("images") else "no generated images"
    version = (suite.records.get("env") or {}).get(pipeline, "") if pipeline in ("dali", "ffcv") else ""
    if version.startswith("missing"):
        return f"{pipeline.upper()} {version}"
    fmt = "ffcv" if pipeline == "ffcv" else "dali"  # nvjpeg reads the DALI shards
    if not (dataset.get("convert") or {}).get(fmt, {}).get("ok"):
        return f"no {fmt} conversion"
    return suite.work / "data" / "ffcv" / "train.beton" if fmt == "ffcv" else suite.work / "data" / "dali"


def _pipeline_part(mode: str, pipeline: str) -> Part:
    """``benchmark.py --mode data`` (the pipeline alone) or ``--mode e2e`` (our step fed by it) for one pipeline."""
    def command(suite: "Suite", sz: Sizes) -> list[str] | str:
        data = _data_source(suite, pipeline)
        if isinstance(data, str):
            return data
        sized = (*sz.crop_flags(), "--steps", str(sz.data_steps), "--warmup", "3") if mode == "data" else \
            (*sz.model_flags(), "--steps", str(sz.steps), "--warmup", str(sz.warmup))
        return _benchmark(suite, f"{mode}_{pipeline}", "--mode", mode, "--pipeline", pipeline, "--data", str(data),
                          *sized, "--num_workers", str(sz.workers))
    in_quick = pipeline != "torchvision" if mode == "data" else pipeline == "dali"
    return Part(f"{mode}_{pipeline}", (40, 30) if mode == "data" else (90, 60), in_quick, command)


def _probe(name: str) -> Callable[["Suite", Sizes], list[str]]:
    def command(suite: "Suite", sz: Sizes) -> list[str]:
        return [sys.executable, str(Path(__file__).resolve()), "--probe", name, "--out", str(suite.out),
                "--work", str(suite.work), "--images", str(sz.images), "--device", sz.device]
    return command


def _pytest(suite: "Suite", sz: Sizes) -> list[str]:
    # --smoke: the GPU test file only (every test skips on the CPU); the parsing is what is exercised.
    target = "tests/test_gpu.py" if suite.smoke else "tests"
    return [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", "-rfE",
            "--junitxml", str(suite.work / "parts" / "pytest.xml"), target]


def _learning(suite: "Suite", sz: Sizes) -> list[str] | str:
    if suite.smoke:
        return "the learning proof's mechanics are tested at CI size (tests/test_learning_proof.py)"
    # Gate 2's budget scaled with the run (ten times the CPU proof's samples, issue 29 part 9): on the CPU
    # budget of 20,000 images labels do not teach the ViT these shapes (docs/learning-health.md).
    return [sys.executable, str(REPO / "tools" / "learning_proof.py"), "--method", "mokd", "--device", sz.device,
            "--gate_samples", "200000",
            "--out", str(suite.work / "learning_mokd"), "--json", str(suite.record_path("learning_mokd"))]


PARTS = (
    Part("env", (20, 20), True, _probe("env")),
    Part("dataset", (60, 60), True, _probe("dataset")),
    *(_pipeline_part("data", p) for p in (*GPU_PIPELINES, "torchvision")),
    Part("step", (300, 240), True, lambda s, sz: _benchmark(
        s, "step", "--mode", "step", *sz.model_flags(), "--steps", str(sz.steps), "--warmup", str(sz.warmup),
        "--baseline", "--parts")),
    *(_pipeline_part("e2e", p) for p in GPU_PIPELINES),
    Part("profile", (60, 60), True, lambda s, sz: _benchmark(
        s, "profile", "--mode", "profile", *sz.model_flags(), "--steps", str(sz.profile_steps),
        "--warmup", str(sz.warmup))),
    Part("step_dogo", (150, 150), False, lambda s, sz: _benchmark(
        s, "step_dogo", "--mode", "step", *sz.dogo_flags(), "--steps", str(sz.steps), "--warmup", str(sz.warmup),
        "--baseline")),
    Part("step_seed", (180, 180), False, lambda s, sz: _benchmark(
        s, "step_seed", "--mode", "step", *sz.seed_flags(), "--steps", str(sz.steps), "--warmup", str(sz.warmup),
        "--baseline", "--parts")),
    Part("gpu_tests", (240, 240), False, _pytest),
    Part("step_ablate", (420, 420), False, lambda s, sz: _benchmark(
        s, "step_ablate", "--mode", "step", *sz.model_flags(), "--steps", str(sz.steps), "--warmup", str(sz.warmup),
        "--ablate")),
    Part("learning_mokd", (360, 360), False, _learning),
)


class Suite:
    """Runs the parts in order within the budget and keeps summary.json / summary.md current."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.out, self.smoke, self.quick, self.budget = args.out, args.smoke, args.quick, args.budget_s
        self.work = args.work or Path(tempfile.mkdtemp(prefix="gpu_suite_"))
        self.keep_work = args.work is not None
        (self.work / "parts").mkdir(parents=True, exist_ok=True)
        self.out.mkdir(parents=True, exist_ok=True)
        self.sizes = sizes_for(args)
        self.records: dict[str, dict] = {}
        self.status: dict[str, dict] = {}
        self.start = time.monotonic()
        self.header = {"command": "python tools/gpu_suite.py " + " ".join(args.argv), "date": date.today().isoformat(),
                       "budget_s": self.budget if math.isfinite(self.budget) else None, "quick": self.quick,
                       "smoke": self.smoke, "sizes": vars(self.sizes)}
        self.log = open(self.out / "suite.log", "a")  # noqa: SIM115 (held for the run, closed in run())

    def record_path(self, name: str) -> Path:
        return self.work / "parts" / f"{name}.json"

    def left(self) -> float:
        return self.budget - (time.monotonic() - self.start)

    def run(self) -> int:
        try:
            for part in PARTS:
                if self.quick and not part.in_quick:
                    self._skip(part, "not in --quick")
                    continue
                estimate = 0.0 if self.smoke else part.estimate_s[1 if self.quick else 0]
                if self.left() <= max(estimate, 1.0):
                    self._skip(part, f"needs about {estimate:.0f} s, {max(0.0, self.left()):.0f} s of --budget_s left")
                    continue
                command = part.command(self, self.sizes)
                if isinstance(command, str):
                    self._skip(part, command)
                    continue
                self._run(part, command)
        finally:
            self.log.close()
            if not self.keep_work:
                shutil.rmtree(self.work, ignore_errors=True)
        failed = [n for n, s in self.status.items() if s["status"] in ("failed", "cut by budget")]
        print(f"gpu_suite: {len(self.status) - len(failed)} parts ok or skipped, failed: {failed or 'none'}; "
              f"see {self.out / 'summary.md'}", flush=True)
        return 1 if failed else 0

    def _skip(self, part: Part, why: str) -> None:
        self.status[part.name] = {"status": "skipped", "reason": why}
        self._write()

    def _run(self, part: Part, command: list[str]) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if self.smoke:
            env["TORCH_COMPILE_DISABLE"] = "1"  # toy sizes test the code path; compiling on 2 cores takes minutes
        self.log.write(f"\n=== {part.name}: {' '.join(command)}\n")
        self.log.flush()
        left = f"{self.left():.0f} s of budget left" if math.isfinite(self.budget) else "no budget"
        print(f"gpu_suite: {part.name} ({left})", flush=True)
        started = time.monotonic()
        try:
            # --smoke never cuts a part: on a loaded CPU the clock says nothing about the code.
            proc = subprocess.run(command, cwd=REPO, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                  timeout=None if self.smoke else max(1.0, self.left()))
            status = "ok" if proc.returncode == 0 else "failed"
            reason = None if proc.returncode == 0 else f"exit status {proc.returncode}; see suite.log"
        except subprocess.TimeoutExpired:
            status, reason = "cut by budget", "killed when --budget_s ran out; its figures so far are kept"
        seconds = round(time.monotonic() - started, 1)
        record = self._read_record(part.name)
        if part.name == "gpu_tests" and record is not None and status == "failed" and not record.get("errors"):
            reason = f"{record['failed']} GPU test(s) failed"
        if record is not None:
            self.records[part.name] = record
        self.status[part.name] = {"status": status, "seconds": seconds, **({"reason": reason} if reason else {})}
        self._write()

    def _read_record(self, name: str) -> dict | None:
        if name == "gpu_tests":
            return junit_summary(self.work / "parts" / "pytest.xml")
        path = self.record_path(name)
        return json.loads(path.read_text()) if path.is_file() else None

    def _write(self) -> None:
        summary = {"suite": {**self.header, "elapsed_s": round(time.monotonic() - self.start, 1)},
                   "status": self.status, "records": self.records}
        for name, text in (("summary.json", json.dumps(summary, indent=1) + "\n"), ("summary.md", markdown(summary))):
            tmp = self.out / f".{name}.tmp"
            tmp.write_text(text)
            os.replace(tmp, self.out / name)


def junit_summary(path: Path) -> dict | None:
    """Counts and failures of a pytest junit XML file (None if pytest wrote none)."""
    if not path.is_file():
        return None
    root = ET.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    failures = []
    for case in suite.iter("testcase"):
        for kind in ("failure", "error"):
            found = case.find(kind)
            if found is not None:
                message = (found.get("message") or "").splitlines()
                failures.append({"test": f"{case.get('classname')}::{case.get('name')}", "kind": kind,
                                 "message": message[0][:300] if message else ""})
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    return {**counts, "passed": counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"],
            "failed": counts["failures"] + counts["errors"], "seconds": float(suite.get("time", 0)), "failing": failures}


def markdown(summary: dict) -> str:
    """summary.json as tables a person reads."""
    from benchmark import step_table

    from mokd_fast.bench.profile import markdown as profile_markdown

    suite, status, records = summary["suite"], summary["status"], summary["records"]
    lines = [f"# GPU suite, {suite['date']}", "", f"`{suite['command']}`: {suite['elapsed_s']} s of "
             f"{'no' if suite['budget_s'] is None else str(suite['budget_s']) + ' s'} "
             f"budget{' (quick)' if suite['quick'] else ''}{' (smoke: CPU, toy sizes)' if suite['smoke'] else ''}.",
             "", "| part | status | seconds | note |", "|---|---|---|---|"]
    lines += [f"| {name} | {s['status']} | {s.get('seconds', '')} | {s.get('reason', '')} |" for name, s in status.items()]
    if env := records.get("env"):
        lines += ["", "## Machine", "", "| what | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in env.items()]
    if dataset := records.get("dataset"):
        lines += ["", "## Dataset", "", f"{dataset['images']} JPEGs generated in {dataset['generate_s']} s "
                  f"({dataset['workers']} processes).", "", "| format | ok | seconds | images/s | bytes |",
                  "|---|---|---|---|---|"]
        lines += [f"| {fmt} | {c['ok']} | {c.get('seconds', '')} | {c.get('images_per_s', '')} | {c.get('bytes', '')} |"
                  for fmt, c in dataset["convert"].items()]
    data = {n[5:]: r for n, r in records.items() if n.startswith("data_")}
    if data:
        lines += ["", "## Data pipelines (delivered on the device)", "",
                  "| pipeline | samples/s | crops/s | workers | batches timed |", "|---|---|---|---|---|"]
        lines += [f"| {p} | {r['samples_per_s']} | {r['crops_per_s']} | {r['num_workers']} | {r['steps']} |"
                  for p, r in data.items()]
    for name, title in (("step", "Step (synthetic batches)"), ("step_ablate", "Step ablation"),
                        ("step_dogo", "DoGo step (two ResNet-18 peers, 4 x 32 px)"),
                        ("step_seed", "SEED step (a random MoCo-v2 teacher distilled into a ResNet-18)")):
        if (record := records.get(name)) and record.get("runs"):
            lines += ["", f"## {title}", "", step_table(record)]
    step_rate = (records.get("step", {}).get("runs") or [{}])[0].get("samples_per_s")
    e2e = {n[4:]: r for n, r in records.items() if n.startswith("e2e_") and r.get("runs")}
    if e2e:
        lines += ["", "## End to end (our step fed by each pipeline)", "",
                  "| pipeline | samples/s | data wait | e2e / step-only | step ms median | p90 |", "|---|---|---|---|---|---|"]
        for p, r in e2e.items():
            run = r["runs"][0]
            ratio = f"{run['samples_per_s'] / step_rate:.3f}" if step_rate else "n/a"
            lines.append(f"| {p} | {run['samples_per_s']} | {run['data_wait']:.1%} | {ratio} | "
                         f"{run['step_ms_median']} | {run['step_ms_p90']} |")
    if profile := records.get("profile"):
        lines += ["", "## Profile of our step", "", profile_markdown(profile["profile"])]
    if (learning := records.get("learning_mokd")) and "steps" not in learning:  # stopped at a gate
        lines += ["", "## Learning proof (MOKD on the shapes data)", "", "Stopped before pre-training:", ""]
        lines += [f"- {gate['what']}" for gate in learning["gates"].values() if not gate["passed"]]
    elif learning:
        lines += ["", "## Learning proof (MOKD on the shapes data)", "",
                  f"{learning['steps']} steps in {learning['train_seconds']} s; raw-pixel k-NN {learning['pixel_knn']:.2f}; "
                  f"learned: {learning['learned']}; collapse warning: {learning['collapse_warning'] or 'none'}.", "",
                  "| eval backbone | random init | trained | gain |", "|---|---|---|---|"]
        lines += [f"| {n} | {learning['random_init_knn'][n]:.2f} | {learning['trained_knn'][n]:.2f} | "
                  f"{learning['gain'][n]:+.2f} |" for n in learning["gain"]]
    if tests := records.get("gpu_tests"):
        lines += ["", "## GPU tests", "", f"{tests['passed']} passed, {tests['failed']} failed, {tests['skipped']} "
                  f"skipped in {tests['seconds']:.0f} s."]
        lines += [f"- `{f['test']}` ({f['kind']}): {f['message']}" for f in tests["failing"]]
    return "\n".join(lines) + "\n"


def probe_env(args: argparse.Namespace) -> dict:
    import torch

    from mokd_fast.bench.machine import machine_report

    return machine_report(torch.device(args.device))


def probe_dataset(args: argparse.Namespace) -> dict:
    """Writes ImageNet-like JPEGs with every core, then converts them to DALI shards and to a .beton (timed)."""
    from benchmark import imagenet_like_folder

    from mokd_fast.convert.cli import main as convert_main

    workers = os.cpu_count() or 1
    root = args.work / "data"
    start = time.perf_counter()
    imagenet_like_folder(root / "images", args.images, workers=workers)
    record = {"images": args.images, "workers": workers, "generate_s": round(time.perf_counter() - start, 2),
              "convert": {}}
    for fmt in ("dali", "ffcv"):
        start = time.perf_counter()
        try:
            status = convert_main([str(root / "images"), str(root / fmt), "--format", fmt, "--workers", str(workers)])
        except SystemExit as err:  # a missing library is reported by the converter as a usage error
            status = err.code
        seconds = time.perf_counter() - start
        report = root / fmt / "report.json"
        ok = status == 0 and report.is_file()
        record["convert"][fmt] = {"ok": ok, "status": status, "seconds": round(seconds, 2),
                                  **({"images_per_s": round(args.images / seconds, 1),
                                      "bytes": json.loads(report.read_text())["bytes"]} if ok else {})}
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpu_suite.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="summary.json, summary.md and suite.log go here")
    parser.add_argument("--budget_s", type=float, default=None,
                        help="wall-clock seconds for the whole run (default 420; --smoke: none): parts that no longer "
                        "fit are skipped, and a part still running when it ends is cut, which counts as a failure. "
                        "Under --smoke nothing is cut: a part fails only on an error, never on a busy machine's clock")
    parser.add_argument("--quick", action="store_true", help="the subset for about 4 minutes on one H100/H200")
    parser.add_argument("--smoke", action="store_true", help="the same parts on the CPU at toy sizes (tests)")
    parser.add_argument("--work", type=Path, default=None,
                        help="where data and part records go (kept); default: a temporary folder, removed at the end")
    parser.add_argument("--images", type=int, default=5000, help="ImageNet-like JPEGs to generate (smoke: 24)")
    parser.add_argument("--probe", choices=["env", "dataset"], default=None, help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)
    if args.probe:
        record = {"env": probe_env, "dataset": probe_dataset}[args.probe](args)
        (args.work / "parts" / f"{args.probe}.json").write_text(json.dumps(record, indent=1) + "\n")
        print(json.dumps(record, indent=1))
        return 0
    if args.budget_s is None:
        args.budget_s = math.inf if args.smoke else 420.0
    if args.smoke:
        args.images = min(args.images, 24)
    else:
        import torch

        if not torch.cuda.is_available():
            parser.error("no CUDA device here; --smoke runs the suite's code path on the CPU")
    return Suite(args).run()


if __name__ == "__main__":
    sys.exit(main())
