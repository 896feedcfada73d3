"""k-NN of a method's eval backbones during pre-training (``train.py --knn_every EPOCHS --knn_data PATH``)."""

from typing import TYPE_CHECKING, Any

import torch.nn.functional as F

from mokd_fast.core.distributed import DistContext
from mokd_fast.eval.bn_refresh import with_fresh_batchnorm
from mokd_fast.eval.data import default_resize, open_splits
from mokd_fast.eval.extract import ExtractSettings, extract_features
from mokd_fast.eval.features import FeatureNet
from mokd_fast.eval.knn import knn_classify
from mokd_fast.models.weights import LoadedBackbone

if TYPE_CHECKING:
    from mokd_fast.methods.base import Method

TEMPERATURE = 0.07  # DINO's voting temperature


class PeriodicKNN:
    """Weighted k-NN (CNN pooled feature, ViT CLS token) of each eval backbone on a labelled dataset.

    MOKD's eval backbones are its two teachers; DoGo's are its peers' encoders.

    The splits are opened when the run starts, so a bad ``--knn_data`` fails before any training.

    Args:
        data_path: Folder with train and val splits (as ``tools/eval_knn.py --data_path``).
        every: Epochs between evaluations.
        k: Neighbours.
        input_size: Centre-crop side.
        batch_size: Images per batch and rank.
        num_workers: Loader workers.
        ctx: This process.
        bn: ``running``: BatchNorm reads the backbone's running statistics (as the evaluation tools);
            ``refresh``: statistics recomputed on the k-NN train split first (``bn_refresh``).
    """

    def __init__(self, data_path: str, every: int, k: int, input_size: int, batch_size: int, num_workers: int,
                 ctx: DistContext, bn: str = "running") -> None:
        self.train, self.val, val_to_train = open_splits(data_path)
        self.bn = bn
        self.val_labels = val_to_train[self.val.labels]
        self.every, self.k, self.ctx = every, min(k, len(self.train)), ctx
        cuda = ctx.device.type == "cuda"
        self.settings = ExtractSettings(input_size, default_resize(input_size), batch_size, num_workers,
                                        bf16=cuda, channels_last=False)

    def due(self, finished_epoch: int) -> bool:
        """Whether the epoch that just ended is one to evaluate after."""
        return (finished_epoch + 1) % self.every == 0

    def __call__(self, model: "Method") -> dict[str, Any]:
        """``{knn_<name>_top1, knn_<name>_top5}`` per eval backbone (MOKD: cnn, vit) on rank 0, ``{}`` elsewhere.

        Each backbone runs in eval mode (BatchNorm running statistics, as the evaluation tools, or
        refreshed ones on a copy) and goes back to the mode it was in.
        """
        out: dict[str, Any] = {}
        for name, (backbone, kind) in model.eval_backbones().items():
            was_training = backbone.training
            backbone.eval()
            net = FeatureNet(LoadedBackbone(backbone, name, kind, 0, None), knn=True)
            if self.bn == "refresh":
                net = with_fresh_batchnorm(net, self.train, self.settings, self.ctx.device)
            feats = [extract_features(net, split, self.settings, self.ctx.rank, self.ctx.world_size,
                                      self.ctx.device)[0] for split in (self.train, self.val)]
            backbone.train(was_training)
            if self.ctx.is_main:
                train_f, val_f = (F.normalize(f, dim=1) for f in feats)
                top1, top5 = knn_classify(train_f, self.train.labels, val_f, self.val_labels, [self.k], TEMPERATURE,
                                          len(self.train.classes))[self.k]
                out.update({f"knn_{name}_top1": top1, f"knn_{name}_top5": top5})
        return out
