"""The LightningModule: the model family's fine-tuning objective (for Moirai 1.x uni2ts's packed NLL of
the mixture on the forecast horizon; see moirai_ft/model/families) over windows built on the training
device."""

from __future__ import annotations

import lightning as L
import torch
from jaxtyping import Float
from torch import Tensor
from torch import nn

from moirai_ft.config.schema import CompileMode
from moirai_ft.model.families import family_of_module
from moirai_ft.model.family import ModelFamily
from moirai_ft.model.fast_path import adamw_options
from moirai_ft.model.load import param_groups
from moirai_ft.train.progress import TRAIN_LOSS
from moirai_ft.train.schedulers import build_scheduler
from moirai_ft.data.windows import Batch, IndexBatches, Windows
from moirai_ft.values import plain


class MoiraiFineTuner(L.LightningModule):
    def __init__(
        self,
        module: nn.Module,
        train_windows: Windows,
        val_windows: Windows,
        train_order: IndexBatches,
        lr: float,
        weight_decay: float,
        scheduler: str,
        warmup_steps: int,
        total_steps: int,
        min_lr_ratio: float,
        compile: CompileMode | str = CompileMode.off,
        family: ModelFamily | None = None,
    ):
        super().__init__()
        self.family = family or family_of_module(module)  # the objective and the batch layout
        # same values; no host sync in the step; fp32 head under bf16
        self.module = self.family.prepare_module(module)
        self.compile_mode = CompileMode(plain(compile))
        # training only: validation runs eager (other shapes, inference mode), so one graph serves the run
        self._train_loss = self.family.train_loss(self.module, self.compile_mode)
        self.train_windows = train_windows
        self.val_windows = val_windows
        self.train_order = train_order
        self.lr = lr
        self.weight_decay = weight_decay
        self.scheduler_name = scheduler
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.min_lr_ratio = min_lr_ratio
        # running sums kept on the device: read only at validation checks (no per-step host sync). Plain
        # tensors, not buffers: DDP copies rank 0's buffers to every rank before a forward pass, which would
        # overwrite the other ranks' sums. _place_windows moves them to the training device.
        self._train_sum, self._train_count = torch.zeros(()), torch.zeros(())
        self._val_sum, self._val_count = torch.zeros(()), torch.zeros(())
        self._nonfinite = torch.zeros((), dtype=torch.bool)
        # the validation loss of this validation, known already (the zero-shot check another job of the
        # sweep computed: moirai_ft/train/zero_shot.py): logged as computed, the windows not run again
        self.replayed_val_loss: float | None = None

    def _place_windows(self) -> None:
        if self.train_windows.series.device != self.device:
            self.train_windows = self.train_windows.to(self.device)
            self.val_windows = self.val_windows.to(self.device)
        if self._train_sum.device != self.device:
            for name in ("_train_sum", "_train_count", "_val_sum", "_val_count", "_nonfinite"):
                setattr(self, name, getattr(self, name).to(self.device))

    def on_fit_start(self) -> None:
        self._place_windows()

    def on_validation_start(self) -> None:
        self._place_windows()

    def loss(self, batch: Batch) -> Tensor:
        """The family's objective on a batch laid out by `self.family.batch`."""
        return self.family.loss(self.module, batch)

    def training_step(self, step: Tensor, batch_idx: int) -> Tensor:
        # the ids come from (epoch, batch_idx), which Lightning restores on resume; the loader's item
        # (the step number it paced) restarts from 0 after a resume and is not used
        idx = self.train_order.batch(self.current_epoch, batch_idx, self.device)
        loss = self._train_loss(self.family.batch(self.train_windows, idx))
        self._train_sum += loss.detach()
        self._train_count += 1
        self._nonfinite |= ~torch.isfinite(loss.detach())
        # not prog_bar: Lightning would read it back every step; SparseProgressBar reads it per refresh
        self.log(TRAIN_LOSS, loss.detach(), on_step=True, on_epoch=False, batch_size=len(idx))
        return loss

    def validation_step(self, idx: Tensor, batch_idx: int) -> None:
        if self.replayed_val_loss is not None:
            return
        loss = self.loss(self.family.batch(self.val_windows, idx))
        # the packed loss is a mean over the batch's samples: weight by size for an exact mean over windows
        self._val_sum += loss.detach() * len(idx)
        self._val_count += len(idx)

    def on_validation_epoch_start(self) -> None:
        self._val_sum.zero_()
        self._val_count.zero_()

    def _sum_over_ranks(self, *values: Tensor) -> Float[Tensor, "n"]:
        """The values summed over all ranks of a multi-device job (unchanged on one device)."""
        return self.trainer.strategy.reduce(torch.stack(values), reduce_op="sum")

    def on_validation_epoch_end(self) -> None:
        # ranks hold different numbers of windows: the mean over all windows is (sum of sums) / (sum of
        # counts), not a mean of the ranks' means
        total, count = self._sum_over_ranks(self._val_sum, self._val_count)
        val_loss = total / count.clamp_min(1)
        if self.replayed_val_loss is not None:  # the float32 value the computation gave: the same log
            val_loss = torch.tensor(self.replayed_val_loss, dtype=val_loss.dtype, device=val_loss.device)
        # already the global mean, identical on every rank; sync_dist averages those identical values (and
        # keeps Lightning's "use sync_dist" check quiet)
        self.log("val/loss", val_loss, prog_bar=True, sync_dist=True)

    def pop_train_loss(self) -> float:
        """Mean training loss over all ranks since the last call (NaN if no step was taken). A collective
        under DDP: every rank calls it at the same validation check."""
        total, count = self._sum_over_ranks(self._train_sum, self._train_count)
        n = float(count)
        mean = float(total) / n if n else float("nan")
        self._train_sum.zero_()
        self._train_count.zero_()
        return mean

    def diverged(self) -> bool:
        return bool(self._nonfinite)

    def _grad_scaler(self) -> object | None:
        trainer = self._trainer
        return getattr(trainer.precision_plugin, "scaler", None) if trainer is not None else None

    def configure_optimizers(self) -> dict:
        # fused AdamW where the device has it, unless a GradScaler (16-mixed) must unscale before clipping
        fast = adamw_options(self.device) if self._grad_scaler() is None else {"foreach": True}
        optimizer = torch.optim.AdamW(
            param_groups(self.module, self.weight_decay),
            lr=self.lr,
            betas=(0.9, 0.98),
            eps=1e-6,
            **fast,
        )
        scheduler = build_scheduler(
            optimizer, self.scheduler_name, self.warmup_steps, self.total_steps, self.min_lr_ratio
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def configure_gradient_clipping(
        self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        # Lightning refuses to clip for a fused optimizer, in case it unscales fp16 gradients itself. With
        # no GradScaler the gradients are unscaled, and this is Lightning's own norm clipping, line for line.
        if optimizer.defaults.get("fused") and gradient_clip_val and gradient_clip_algorithm in (None, "norm"):
            params = self.trainer.precision_plugin.main_params(optimizer)
            torch.nn.utils.clip_grad_norm_(params, gradient_clip_val)
            return
        self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)
