"""Start-up: a job without LoRA never imports transformers (nor peft), which Lightning's torchmetrics
and peft would otherwise load in every process (moirai_ft/imports.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from conftest import ROOT

# one process: a whole non-LoRA job (its function-level imports too), then LoRA, which must still work
SCRIPT = textwrap.dedent("""
    import json, sys, tempfile
    sys.path[:0] = [{root!r}, {tests!r}]
    from conftest import compose_cfg
    import moirai_ft.train.job as job
    seen = {{"after_import": sorted(m for m in ("transformers", "peft") if m in sys.modules)}}
    metrics = job.run(compose_cfg(["eval.num_samples=2", "eval.plot_windows=0", "steps_per_epoch=2"]),
                      tempfile.mkdtemp())
    seen["status"] = metrics["status"]
    seen["after_job"] = sorted(m for m in ("transformers", "peft") if m in sys.modules)
    from moirai_ft.model.load import random_module
    from moirai_ft.model.patterns import apply_pattern
    from moirai_ft.model.lora import has_lora
    cfg = compose_cfg(["pattern=lora"])
    seen["lora_works"] = has_lora(apply_pattern(random_module(cfg.model), cfg.pattern))
    seen["after_lora"] = sorted(m for m in ("transformers", "peft") if m in sys.modules)
    print(json.dumps(seen))
""")


def test_a_job_without_lora_does_not_import_transformers_and_lora_still_does() -> None:
    script = SCRIPT.format(root=str(ROOT), tests=str(ROOT / "tests"))
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["status"] == "completed"
    assert seen["after_import"] == [] and seen["after_job"] == []
    # the probe sees them when they are imported: a LoRA job loads peft, and peft the real transformers
    assert seen["lora_works"] and seen["after_lora"] == ["peft", "transformers"]
