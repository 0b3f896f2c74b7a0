"""`hydra/launcher=slurm`: hydra-submitit-launcher's SLURM launcher, sized by the job's hardware, with sbatch's
refusals as one line and job states from squeue where the cluster has no accounting (see launcher.py).

Registers the `moirai_if_gpu` resolver conf/hydra/launcher/slurm.yaml sizes a job with: Hydra imports this
package when it discovers its plugins, before it composes any config."""

from moirai_ft.sweep.naming import register_resolver


def if_gpu(on_gpu, on_cpu, *, _root_):  # noqa: ANN001 - any config value
    """`on_gpu` for a job whose hardware uses GPUs (hardware=gpu, ddp, auto), `on_cpu` for hardware=cpu."""
    return on_cpu if str(_root_.hardware.accelerator) == "cpu" else on_gpu


register_resolver("moirai_if_gpu", if_gpu, replace=True)
