"""``tools/learning_proof.py``: evidence that pre-training learns, on generated data where learning must show.

It writes the shapes dataset (``mokd_fast.sample_data.shapes``: the class is the outline, colour and
placement are nuisance), measures how far raw pixels get by weighted k-NN, then runs two gates
before any pre-training (``proof_gates``): the randomly initialised eval backbones' k-NN must be at
most ``--gate_knn_max`` (the data are hard for random features), and a plain supervised run of
each eval backbone architecture (MOKD: the CNN and the ViT; two peers of one architecture: the first)
from the same initialisation must reach ``--gate_top1`` held-out top-1 within ``--gate_samples``
images (the data and pipeline can be learnt by that architecture). A failed gate stops the proof and
says which. Then it pre-trains with ``train.py`` (the real pipelines, engine and method, with the
periodic k-NN on the same splits) and writes ``OUT/learning.json``. The exit status is 1 when a gate
fails, an eval backbone gains fewer than ``--min_gain`` k-NN points over its random initialisation,
a supervised method's (L-MCL's) aggregated classifiers reach less than ``--min_top1`` held-out top-1,
or the run showed collapse, so the proof can gate a release.
"""

import argparse
import json
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from mokd_fast.core.errors import UsageError
from mokd_fast.methods import METHODS
from mokd_fast.sample_data.shapes import CLASSES, DIFFICULTIES, write_split

# What a failed gate says about the proof: gate 1 (``random_init``) and gate 2 (``supervised``, ``supervised_<name>``).
GATE_MEANING = {
    "random_init": "random features already tell these images apart, so a gain over them would prove little: "
                   "the data or the pipeline is broken, not the method",
    "supervised": "labels cannot teach this architecture these data within the budget, so pre-training cannot be "
                  "expected to: the data, the pipeline or the choice of backbone is the problem, not the method",
}
RECIPES = Path(__file__).resolve().parents[2] / "configs"  # mokd_fast/bench/ -> the repository
MONITOR_SUFFIXES = ("_mean_entropy", "_sample_entropy", "_distinct", "_spread")


def recipe_path(method: str, device: str) -> Path:
    """The shipped recipe of ``method`` on ``device``: ``configs/proof_<method>_<device>.yaml``."""
    return RECIPES / f"proof_{method}_{device}.yaml"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        "learning_proof", description="Generates the shapes dataset, pre-trains on it and compares the k-NN "
        "accuracy of each eval backbone after training with its random initialisation and with raw pixels. "
        "Flags after -- go to train.py and override the recipe.")
    parser.add_argument("--method", default="mokd", choices=tuple(METHODS), help="Training method.")
    parser.add_argument("--out", required=True, help="Output folder (data/, run/, learning.json); a proof killed "
                        "part-way resumes from run/checkpoint.pth.")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="Training and evaluation device.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the data and the run.")
    parser.add_argument("--train_per_class", type=int, default=300, help="Training images per class.")
    parser.add_argument("--val_per_class", type=int, default=60, help="Validation images per class.")
    parser.add_argument("--image_size", type=int, default=64, help="Side of the generated images.")
    parser.add_argument("--difficulty", type=int, default=0, choices=DIFFICULTIES,
                        help="Nuisance of the shapes data: 0 solid colours, 1 textures, 2 textures and clutter.")
    parser.add_argument("--gate_knn_max", type=float, default=30.0,
                        help="Gate 1: highest k-NN top-1 an eval backbone may have at its random initialisation.")
    parser.add_argument("--gate_samples", type=int, default=20_000,
                        help="Gate 2: training images the supervised run may see.")
    parser.add_argument("--gate_top1", type=float, default=90.0,
                        help="Gate 2: held-out top-1 the supervised run must reach.")
    parser.add_argument("--knn_k", type=int, default=20, help="Neighbours of every k-NN.")
    parser.add_argument("--knn_every", type=int, default=0,
                        help="Epochs between the k-NN evaluations; 0: about six over the run.")
    parser.add_argument("--min_gain", type=float, default=15.0,
                        help="k-NN points each eval backbone must gain over its random initialisation.")
    parser.add_argument("--min_top1", type=float, default=85.0,
                        help="Held-out top-1 each aggregated classifier of a supervised method (L-MCL) must reach.")
    parser.add_argument("--config", default=None, help="train.py recipe; default configs/proof_<method>_<device>.yaml.")
    parser.add_argument("--json", default=None, help="Also write the record here (tools/gpu_suite.py collects it).")
    return parser


def write_data(folder: Path, seed: int, train_per_class: int, val_per_class: int, size: int,
               difficulty: int = 0) -> Path:
    """``folder/train`` and ``folder/val`` ImageFolders; val is drawn from another seed, so no image repeats."""
    marker = folder / "settings.json"
    settings = {"seed": seed, "train_per_class": train_per_class, "val_per_class": val_per_class, "size": size,
                "classes": list(CLASSES), "difficulty": difficulty}
    if marker.is_file() and json.loads(marker.read_text()) == settings:
        return folder  # already written with these settings
    write_split(folder / "train", train_per_class, 2 * seed, size, difficulty=difficulty)
    write_split(folder / "val", val_per_class, 2 * seed + 1, size, difficulty=difficulty)
    marker.write_text(json.dumps(settings))
    return folder


def summarise(run: Path) -> dict[str, Any]:
    """Random-init and trained k-NN per eval backbone, the curve, and the last log line's monitors."""
    log = run / "log.jsonl"
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    evals = [r for r in lines if any(key.startswith("knn_") for key in r)]
    if len(evals) < 2 or evals[0]["step"] != 0:
        raise UsageError(f"{log}: expected the random-initialisation k-NN at step 0 and at least one after training")
    names = sorted(k.removeprefix("knn_").removesuffix("_top1") for k in evals[0] if k.endswith("_top1"))
    last_losses = [r for r in lines if r not in evals][-1]
    return {
        "random_init_knn": {n: evals[0][f"knn_{n}_top1"] for n in names},
        "trained_knn": {n: evals[-1][f"knn_{n}_top1"] for n in names},
        "knn_curve": [{"step": r["step"], **{n: r[f"knn_{n}_top1"] for n in names}} for r in evals],
        "final_monitors": {k: v for k, v in last_losses.items() if k.endswith(MONITOR_SUFFIXES)},
        "final_losses": {k: v for k, v in last_losses.items() if k.startswith("loss_")},
    }


TEACHER_PROOF, TEACHER_KEY = "dogo", "peer_1"  # SEED's default teacher: the first peer of the DoGo proof


def _seed_teacher(args: argparse.Namespace, out: Path) -> tuple[Path, dict[str, Any]]:
    """SEED's default teacher: the DoGo proof's trained checkpoint in ``out/dogo``, run first when it is missing.

    DoGo, because it is the proof that learns on this CPU (MOKD's does not); returns the checkpoint and what the
    SEED record reports of the teacher (its proof, model and k-NN beside the student's).
    """
    folder = out / TEACHER_PROOF
    teacher, record = folder / "run" / "checkpoint.pth", folder / "learning.json"
    if not record.is_file():
        print(f"SEED distils a trained teacher: running the {TEACHER_PROOF} proof first into {folder} "
              "(pass train.py's --teacher after -- to give another)")
        main(["--method", TEACHER_PROOF, "--out", str(folder), "--device", args.device, "--seed", str(args.seed),
              "--train_per_class", str(args.train_per_class), "--val_per_class", str(args.val_per_class),
              "--image_size", str(args.image_size), "--difficulty", str(args.difficulty), "--knn_k",
              str(args.knn_k), "--min_gain", str(args.min_gain)])
    proof = json.loads(record.read_text()) if record.is_file() else {"learned": False}
    if not proof["learned"]:
        raise UsageError(f"the {TEACHER_PROOF} proof in {folder} did not learn, so its teacher proves nothing for "
                         "SEED; pass a trained --teacher after --")
    return teacher, {"proof": str(folder), "key": TEACHER_KEY, "checkpoint": str(teacher),
                     "random_init_knn": proof["random_init_knn"][TEACHER_KEY],
                     "trained_knn": proof["trained_knn"][TEACHER_KEY]}


def main(argv: list[str] | None = None) -> int:
    """Runs the proof; 0 when every eval backbone gained ``--min_gain`` points without collapse, 1 when not, 2 on bad usage."""
    argv = sys.argv[1:] if argv is None else argv
    own, train_flags = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    args = build_parser().parse_args(own)
    try:
        return _run(args, train_flags)
    except UsageError as err:
        print(f"learning_proof: error: {err}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, train_flags: list[str]) -> int:
    from mokd_fast.cli import main as train_main
    from mokd_fast.cli import parse_config

    recipe = Path(args.config) if args.config else recipe_path(args.method, args.device)
    if not recipe.is_file():
        raise UsageError(f"--config {recipe}: no such recipe; pass --config FILE.yaml for --method {args.method} "
                         f"on --device {args.device}")
    out = Path(args.out)
    start = time.perf_counter()
    teacher: dict[str, Any] = {}
    if args.method == "seed" and "--teacher" not in train_flags:
        path, teacher = _seed_teacher(args, out)
        train_flags = ["--teacher", str(path), "--teacher_key", TEACHER_KEY, *train_flags]
    tick = time.perf_counter()
    data = write_data(out / "data", args.seed, args.train_per_class, args.val_per_class, args.image_size,
                      args.difficulty)
    data_seconds = time.perf_counter() - tick
    from mokd_fast.bench.pixel_knn import (
        pixel_knn,  # torch: only once the flags are good
    )

    pixels = pixel_knn(data, args.knn_k)
    print(f"shapes data: {len(CLASSES)} classes, {args.train_per_class} train and {args.val_per_class} val images "
          f"per class in {data}; raw-pixel {args.knn_k}-NN top-1 {pixels:.2f}%")
    run = out / "run"
    flags = ["--method", args.method, "--config", str(recipe), "--data_path", str(data / "train"),
             "--output_dir", str(run), "--knn_data", str(data), "--knn_k", str(args.knn_k),
             "--seed", str(args.seed), "--device", args.device, *train_flags]
    method_cfg, run_cfg = parse_config([*flags, "--knn_every", "1"])
    flags += ["--knn_every", str(args.knn_every or max(1, method_cfg.epochs // 6))]
    common = {"method": args.method, "device": args.device, "seed": args.seed, "recipe": str(recipe),
              "train_flags": train_flags, "classes": list(CLASSES), "train_per_class": args.train_per_class,
              "val_per_class": args.val_per_class, "image_size": args.image_size, "difficulty": args.difficulty,
              "knn_k": args.knn_k, "knn_bn": run_cfg.knn_bn, "pixel_knn": pixels,
              **({"teacher": teacher} if teacher else {})}
    gates = run_gates(args, method_cfg, run_cfg, data)
    failed = {name: g for name, g in gates.items() if not g["passed"]}
    if failed:
        record = {**common, "gates": gates, "learned": False, "date": time.strftime("%Y-%m-%d"),
                  "seconds": round(time.perf_counter() - start, 1)}
        _write_record(record, out, args)
        for name, gate in failed.items():
            meaning = GATE_MEANING["random_init" if name == "random_init" else "supervised"]
            print(f"GATE FAILED: {gate['what']}: {meaning}; no pre-training was run; wrote {out / 'learning.json'}")
        return 1
    if (run / "checkpoint.pth").exists():
        flags += ["--resume", str(run / "checkpoint.pth")]
    tick = time.perf_counter()
    status = train_main(flags)
    if status:
        return status
    train_seconds = time.perf_counter() - tick
    result = summarise(run)
    summary = json.loads((run / "summary.json").read_text())
    gains = {n: result["trained_knn"][n] - result["random_init_knn"][n] for n in result["trained_knn"]}
    learned = all(g >= args.min_gain for g in gains.values()) and not summary.get("collapse_warning")
    classifiers = {}
    if args.method == "lmcl":
        classifiers = classifier_top1(run, data, eval_size(method_cfg, run_cfg), args.device, run_cfg.num_workers)
        learned = learned and all(net["aggregated"]["top1"] >= args.min_top1 for net in _nets(classifiers))
        classifiers["min_top1"] = args.min_top1
    record = {
        **common, "gates": gates, **result, "gain": gains, "min_gain": args.min_gain,
        **({"classifiers": classifiers} if classifiers else {}), "learned": learned,
        "collapse_warning": summary.get("collapse_warning"), "steps": summary["steps"],
        "data_seconds": round(data_seconds, 1), "train_seconds": round(train_seconds, 1),
        "seconds": round(time.perf_counter() - start, 1),
        "settings": yaml.safe_load((run / "config.yaml").read_text()),
        "torch": metadata.version("torch"), "date": time.strftime("%Y-%m-%d"),
    }
    _write_record(record, out, args)
    for name in gains:
        print(f"{name}: k-NN top-1 {result['random_init_knn'][name]:.2f}% at random init -> "
              f"{result['trained_knn'][name]:.2f}% trained ({gains[name]:+.2f} points; needed {args.min_gain:+.1f})")
    for name, net in classifiers.items():
        if name.startswith("net_"):
            print(f"{name}: aggregated classifier held-out top-1 {net['aggregated']['top1']:.2f}% (needed "
                  f"{args.min_top1:.1f}); final stage {net['final']['top1']:.2f}%")
    print(f"{'LEARNED' if learned else 'NOT LEARNED'} in {record['seconds']:.0f} s; wrote {out / 'learning.json'}")
    return 0 if learned else 1


def _nets(classifiers: dict[str, Any]) -> list[dict[str, Any]]:
    """The per-network entries of ``classifier_top1``'s result."""
    return [v for k, v in classifiers.items() if k.startswith("net_")]


def eval_size(method_cfg: Any, run_cfg: Any) -> int:
    """The side at which the k-NN (and the classifiers) read the validation images: the first global view's."""
    from mokd_fast.methods import entry_for_config

    method_class = entry_for_config(method_cfg)[1].method_class()
    return run_cfg.knn_input_size or method_class.views(method_cfg, run_cfg).global_views[0].size


def classifier_top1(run: Path, data: Path, size: int, device: str, num_workers: int) -> dict[str, Any]:
    """Held-out top-1/top-5 of every classifier of the trained L-MCL checkpoint (``tools/eval_classifiers.py``'s
    evaluation: the k-NN's resize and centre crop), ``{net_i: {stage_s | final | aggregated: {top1, top5}}}``."""
    import torch

    from mokd_fast.eval.classify import evaluate, load_classifiers
    from mokd_fast.eval.data import default_resize, open_split, split_batches

    nets, aggregator, _ = load_classifiers(run / "checkpoint.pth")
    dev = torch.device(device)
    batches = split_batches(open_split(data / "val"), size, default_resize(size), False, 64, 0, 1, dev, num_workers)
    return evaluate(nets, aggregator, batches, dev)


def _write_record(record: dict[str, Any], out: Path, args: argparse.Namespace) -> None:
    """``out/learning.json``, and ``--json`` when given."""
    for path in (out / "learning.json", *([Path(args.json)] if args.json else [])):
        path.write_text(json.dumps(record, indent=2) + "\n")


def run_gates(args: argparse.Namespace, method_cfg: Any, run_cfg: Any, data: Path) -> dict[str, dict[str, Any]]:
    """Both gates on the method built exactly as ``train.py`` builds it (same seed, so the same initial weights).

    Returns:
        ``{"random_init": {...}, "supervised": {...}, "supervised_<name>": {...}}``, each with ``passed`` and
        ``what`` (one line): gate 2 for the first eval backbone, then for each further architecture
        (``distinct_architectures``); the gates stop at the first that fails.
    """
    import torch

    from mokd_fast.bench.proof_gates import SupervisedGate, supervised_run
    from mokd_fast.core.distributed import DistContext
    from mokd_fast.engine.trainer import seed_everything
    from mokd_fast.eval.data import open_splits
    from mokd_fast.eval.periodic import PeriodicKNN
    from mokd_fast.methods import build_method, entry_for_config

    device = torch.device(args.device)
    method_class = entry_for_config(method_cfg)[1].method_class()
    train_split, val_split, _ = open_splits(data)
    seed_everything(run_cfg.seed)
    model = build_method(method_cfg, run_cfg, train_split.labels if method_class.needs_labels else None).to(device)
    size = eval_size(method_cfg, run_cfg)
    knn = PeriodicKNN(str(data), 1, args.knn_k, size, run_cfg.batch_size_per_gpu, run_cfg.num_workers,
                      DistContext(0, 1, 0, device), run_cfg.knn_bn)(model)
    top1 = {k.removeprefix("knn_").removesuffix("_top1"): v for k, v in knn.items() if k.endswith("_top1")}
    worst = max(top1, key=top1.get)
    random_init = {"passed": top1[worst] <= args.gate_knn_max, "knn_top1": top1, "max": args.gate_knn_max,
                   "what": f"gate 1: {worst}'s k-NN top-1 at random initialisation is {top1[worst]:.1f}% "
                           f"(at most {args.gate_knn_max:g}% passes)"}
    print(random_init["what"])
    if not random_init["passed"]:
        return {"random_init": random_init}
    gates = {"random_init": random_init}
    gate = SupervisedGate(samples=args.gate_samples, target=args.gate_top1)
    for i, (name, (backbone, kind)) in enumerate(distinct_architectures(model.eval_backbones()).items()):
        supervised = supervised_run(backbone, kind, train_split, val_split, len(CLASSES), size, device,
                                    run_cfg.num_workers, gate, seed=args.seed)
        supervised |= {"backbone": name, "what": f"gate 2: supervised {name} reached {supervised['top1']:.1f}% "
                       f"held-out top-1 in {supervised['samples']} images (at least {args.gate_top1:g}% within "
                       f"{args.gate_samples} passes)"}
        print(supervised["what"])
        gates["supervised" if i == 0 else f"supervised_{name}"] = supervised
        if not supervised["passed"]:
            break
    return gates


def distinct_architectures(backbones: dict[str, tuple[Any, str]]) -> dict[str, tuple[Any, str]]:
    """The first eval backbone of each architecture, in order.

    Gate 2 asks whether the data can be learnt by an architecture, so two peers of one architecture
    (DoGo's, MCL's) need one supervised run, while MOKD's CNN and ViT need one each: a teacher whose
    architecture cannot learn the data with labels cannot be expected to gain without them. The
    architecture is the module class and its parameter shapes.
    """
    seen: set[tuple[Any, ...]] = set()
    out = {}
    for name, (backbone, kind) in backbones.items():
        key = (kind, type(backbone).__name__, *(tuple(p.shape) for p in backbone.parameters()))
        if key not in seen:
            seen.add(key)
            out[name] = (backbone, kind)
    return out
