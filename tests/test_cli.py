"""train.py's flags: the official README command, YAML recipes, overrides and rejected input."""

import shlex
from pathlib import Path

import pytest

from mokd_fast.cli import build_parser, flat_config, parse_config
from mokd_fast.core.errors import UsageError
from mokd_fast.methods.mokd.config import MOKDConfig
from mokd_fast.methods.mokd.train_config import TrainConfig

REPO = Path(__file__).resolve().parents[1]

# The official README's pre-training command, with torchrun's launcher flags and main_mokd.py removed.
OFFICIAL_README_FLAGS = """
--arch_cnn resnet50 --arch_vit vit_small
--out_dim 65536 --norm_last_layer False
--clip_grad_cnn 3 --clip_grad_vit 3 --freeze_last_layer 1
--optimizer sgd
--lr_cnn 0.1 --lr_vit 0.0003 --warmup_epochs 10
--use_fp16 True
--warmup_teacher_temp 0.04 --teacher_temp 0.07
--warmup_teacher_temp_epochs_cnn 50 --warmup_teacher_temp_epochs_vit 30
--patch_size 16 --drop_path_rate 0.1
--local_crops_number 8 --global_crops_scale 0.25 1 --local_crops_scale 0.05 0.25
--momentum_teacher 0.996
--num_workers 10
--batch_size_per_gpu 16 --epochs 100
--lamda_t 0.1 --lamda_c 1.0
--data_path /data/imagenet/train
--output_dir output/
"""


def test_official_readme_command_parses_to_the_intended_config():
    method, cfg = parse_config(shlex.split(OFFICIAL_README_FLAGS))
    assert method == MOKDConfig(
        arch_cnn="resnet50", arch_vit="vit_small", out_dim=65536, norm_last_layer=False, patch_size=16,
        drop_path_rate=0.1, local_crops_number=8, momentum_teacher=0.996, warmup_teacher_temp=0.04,
        teacher_temp=0.07, warmup_teacher_temp_epochs_cnn=50, warmup_teacher_temp_epochs_vit=30, epochs=100,
        lamda_t=0.1, lamda_c=1.0,
    )
    assert (cfg.clip_grad_cnn, cfg.clip_grad_vit, cfg.freeze_last_layer) == (3.0, 3.0, 1)
    assert (cfg.optimizer, cfg.lr_cnn, cfg.lr_vit, cfg.warmup_epochs) == ("sgd", 0.1, 0.0003, 10)
    assert cfg.resolved_precision == "fp16"
    assert cfg.global_crops_scale == (0.25, 1.0) and cfg.local_crops_scale == (0.05, 0.25)
    assert (cfg.batch_size_per_gpu, cfg.num_workers) == (16, 10)
    assert (cfg.data_path, cfg.output_dir) == ("/data/imagenet/train", "output/")
    # Values the official code hard-codes (ignoring its flags) are our defaults.
    assert (cfg.final_lr_cnn, cfg.final_lr_vit) == (0.0048, 1e-5)
    assert (cfg.weight_decay_cnn, cfg.weight_decay_end_cnn, cfg.weight_decay, cfg.weight_decay_end) == (1e-4, 1e-4, 0.04, 0.4)


def test_shipped_recipe_is_the_official_command_with_the_official_head_gains():
    """configs/mokd_r50_vits16_in1k.yaml reproduces what the official code ran for that command."""
    method, cfg = parse_config(["--config", str(REPO / "configs/mokd_r50_vits16_in1k.yaml"), "--data_path", "/d"])
    readme_method, readme_cfg = parse_config(shlex.split(OFFICIAL_README_FLAGS))
    # The official code ignores --norm_last_layer False: CNN gain frozen, ViT gain trainable (our None).
    assert method == MOKDConfig(**{**readme_method.__dict__, "norm_last_layer": None})
    differ = {k for k, v in flat_config(method, cfg).items() if v != flat_config(readme_method, readme_cfg)[k]}
    assert differ == {"norm_last_layer", "data_path", "output_dir", "use_fp16", "precision"}
    assert cfg.resolved_precision == "fp16"


def test_every_shipped_recipe_loads():
    recipes = sorted((REPO / "configs").glob("*.yaml"))
    assert len(recipes) >= 2
    for recipe in recipes:
        parse_config(["--config", str(recipe)])


def test_adamw_at_an_sgd_learning_rate_warns_and_the_recipes_do_not():
    """The official defaults put AdamW on the CNN at lr 0.3; the run must say so, naming the flags."""
    _, defaults = parse_config(["--data_path", "/d"])
    assert defaults.optimizer == "adamw" and "--optimizer sgd" in defaults.optimizer_warning
    _, adamw_rate = parse_config(["--data_path", "/d", "--lr_cnn", "0.0005"])
    assert adamw_rate.optimizer_warning is None
    _, readme = parse_config(shlex.split(OFFICIAL_README_FLAGS))
    assert readme.optimizer_warning is None
    for recipe in sorted((REPO / "configs").glob("*.yaml")):
        assert parse_config(["--config", str(recipe)])[1].warnings == [], recipe.name  # every method's recipe


def test_command_line_overrides_the_recipe(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("lr_cnn: 0.2\nepochs: 70\nlocal_crops_scale: [0.1, 0.3]\n")
    method, cfg = parse_config(["--config", str(recipe), "--lr_cnn", "0.5"])
    assert (cfg.lr_cnn, method.epochs, cfg.local_crops_scale) == (0.5, 70, (0.1, 0.3))


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--lr", "0.1"], "unrecognized arguments: --lr"),
        (["--optimizer", "adam"], "invalid choice: 'adam'"),
        (["--use_fp16", "maybe"], "invalid boolean 'maybe'"),
        (["--use_fp16", "True", "--precision", "bf16"], "contradicts --precision bf16"),
        (["--global_crops_scale", "0.5", "0.2"], "--global_crops_scale 0.5 0.2"),
        (["--batch_size_per_gpu", "0"], "--batch_size_per_gpu must be >= 1"),
        (["--warmup_teacher_temp_epochs_vit", "300"], "cannot outlast training"),
    ],
)
def test_bad_flags_are_errors_that_name_the_flag(argv, needle):
    with pytest.raises(UsageError, match=None) as err:
        parse_config(argv)
    assert needle in str(err.value)


def test_unknown_recipe_key_is_an_error(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("lr_cnn: 0.2\nlearning_rate: 1\n")
    with pytest.raises(UsageError, match=r"unknown keys \['learning_rate'\]"):
        parse_config(["--config", str(recipe)])


def test_every_setting_is_a_flag_with_help():
    actions = {a.dest: a for a in build_parser()._actions}
    for cls in (MOKDConfig, TrainConfig):
        for name in cls.__dataclass_fields__:
            assert name in actions and actions[name].help, name
