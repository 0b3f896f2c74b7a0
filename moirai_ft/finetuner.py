"""The LightningModule: uni2ts's fine-tuning objective (packed NLL of the Moirai mixture on the
forecast horizon) over windows built on the training device."""

from __future__ import annotations

import lightning as L
import torch
from torch import Tensor
from torch.distributions import Distribution
from uni2ts.loss.packed import PackedNLLLoss
from uni2ts.model.moirai import MoiraiModule

from moirai_ft.model import param_groups
from moirai_ft.schedulers import build_scheduler
from moirai_ft.windows import Batch, Windows

MODEL_FIELDS = ("target", "observed_mask", "sample_id", "time_id", "variate_id", "prediction_mask", "patch_size")
LOSS_FIELDS = ("target", "prediction_mask", "observed_mask", "sample_id", "variate_id")


class MoiraiFineTuner(L.LightningModule):
    def __init__(
        self,
        module: MoiraiModule,
        train_windows: Windows,
        val_windows: Windows,
        lr: float,
        weight_decay: float,
        scheduler: str,
        warmup_steps: int,
        total_steps: int,
        min_lr_ratio: float,
    ):
        super().__init__()
        self.module = module
        self.train_windows = train_windows
        self.val_windows = val_windows
        self.lr = lr
        self.weight_decay = weight_decay
        self.scheduler_name = scheduler
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.min_lr_ratio = min_lr_ratio
        self.loss_func = PackedNLLLoss()
        # running sums kept on the device: read only at validation checks (no per-step host sync)
        self.register_buffer("_train_sum", torch.zeros(()), persistent=False)
        self.register_buffer("_train_count", torch.zeros(()), persistent=False)
        self.register_buffer("_val_sum", torch.zeros(()), persistent=False)
        self.register_buffer("_val_count", torch.zeros(()), persistent=False)
        self.register_buffer("_nonfinite", torch.zeros((), dtype=torch.bool), persistent=False)

    def _place_windows(self) -> None:
        if self.train_windows.series.device != self.device:
            self.train_windows = self.train_windows.to(self.device)
            self.val_windows = self.val_windows.to(self.device)

    def on_fit_start(self) -> None:
        self._place_windows()

    def on_validation_start(self) -> None:
        self._place_windows()

    def forward(self, batch: Batch) -> Distribution:
        return self.module(**{k: batch[k] for k in MODEL_FIELDS})

    def loss(self, batch: Batch) -> Tensor:
        return self.loss_func(pred=self(batch), **{k: batch[k] for k in LOSS_FIELDS})

    def training_step(self, idx: Tensor, batch_idx: int) -> Tensor:
        loss = self.loss(self.train_windows.batch(idx))
        self._train_sum += loss.detach()
        self._train_count += 1
        self._nonfinite |= ~torch.isfinite(loss.detach())
        self.log("train/loss", loss.detach(), on_step=True, on_epoch=False, prog_bar=True, batch_size=len(idx))
        return loss

    def validation_step(self, idx: Tensor, batch_idx: int) -> None:
        loss = self.loss(self.val_windows.batch(idx))
        # the packed loss is a mean over the batch's samples: weight by size for an exact mean over windows
        self._val_sum += loss.detach() * len(idx)
        self._val_count += len(idx)

    def on_validation_epoch_start(self) -> None:
        self._val_sum.zero_()
        self._val_count.zero_()

    def on_validation_epoch_end(self) -> None:
        val_loss = self._val_sum / self._val_count.clamp_min(1)
        self.log("val/loss", val_loss, prog_bar=True, sync_dist=True)

    def pop_train_loss(self) -> float:
        """Mean training loss since the last call (NaN if no step was taken)."""
        n = float(self._train_count)
        mean = float(self._train_sum) / n if n else float("nan")
        self._train_sum.zero_()
        self._train_count.zero_()
        return mean

    def diverged(self) -> bool:
        return bool(self._nonfinite)

    def configure_optimizers(self) -> dict:
        optimizer = torch.optim.AdamW(
            param_groups(self.module, self.weight_decay),
            lr=self.lr,
            betas=(0.9, 0.98),
            eps=1e-6,
        )
        scheduler = build_scheduler(
            optimizer, self.scheduler_name, self.warmup_steps, self.total_steps, self.min_lr_ratio
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
