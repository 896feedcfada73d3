"""A short MOKD pre-training on CPU over real photographs: builds the method, steps, prints terms.

Run with ``python -m mokd_fast.demo`` (or ``./run.sh demo``, which also sets up the environment).
"""

import argparse
import time

import torch

from mokd_fast import LOSS_TERMS, MOKD, MOKDConfig
from mokd_fast.sample_images import random_multicrop, sample_photos
from mokd_fast.schedules import cosine_schedule


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps")
    parser.add_argument("--batch_size", type=int, default=8, help="images per step")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    photos = list(sample_photos().values())
    cfg = MOKDConfig(
        arch_cnn="resnet18", arch_vit="vit_tiny", out_dim=1024, local_crops_number=2,
        global_size=64, local_size=32, epochs=1, warmup_teacher_temp_epochs_cnn=0,
        warmup_teacher_temp_epochs_vit=0,
    )
    model = MOKD(cfg)
    n_params = sum(p.numel() for p in model.students.parameters())
    print(f"MOKD {cfg.arch_cnn} + {cfg.arch_vit}: {n_params / 1e6:.1f}M student parameters, "
          f"{len(photos)} photographs, batch {args.batch_size}, crops 2x{cfg.global_size} + "
          f"{cfg.local_crops_number}x{cfg.local_size}, {torch.get_num_threads()} CPU threads")
    opt = torch.optim.AdamW([p for p in model.students.parameters() if p.requires_grad], lr=3e-4, weight_decay=0.04)
    momentum = cosine_schedule(cfg.momentum_teacher, 1.0, 1, args.steps)
    print("step " + " ".join(f"{name:>10}" for name in LOSS_TERMS) + "   L_cnn   L_vit  samples/s")
    start = time.perf_counter()
    for step in range(args.steps):
        tick = time.perf_counter()
        batch = [photos[(step * args.batch_size + i) % len(photos)] for i in range(args.batch_size)]
        crops = random_multicrop(batch, cfg.local_crops_number, cfg.global_size, cfg.local_size)
        terms = model.loss_terms(crops, epoch=0)
        opt.zero_grad(set_to_none=True)
        cnn, vit = model.backward(terms)
        opt.step()
        model.update_teachers(float(momentum[step]))
        rate = args.batch_size / (time.perf_counter() - tick)
        values = " ".join(f"{terms[name].item():10.3f}" for name in LOSS_TERMS)  # sync: logging only
        print(f"{step:4d} {values} {cnn.item():7.2f} {vit.item():7.2f} {rate:10.1f}")
    elapsed = time.perf_counter() - start
    print(f"done: {args.steps} steps, {args.steps * args.batch_size / elapsed:.1f} samples/s overall")


if __name__ == "__main__":
    main()
