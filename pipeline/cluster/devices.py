"""The GPUs a process may use, told without importing an inference runtime (TensorFlow takes seconds to import):
what the cluster factories plan workers by and what a worker checks its backend against (`worker_setup`).
"""

from __future__ import annotations

import os
import shutil
import subprocess


def visible_gpus() -> list[str]:
    """GPU ids visible to this process, without importing TensorFlow: CUDA_VISIBLE_DEVICES when set (as a batch
    system or the user restricts them), otherwise every GPU that nvidia-smi lists."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [device.strip() for device in visible.split(",") if device.strip() and device.strip() != "-1"]
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        listing = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(line for line in listing.splitlines() if line.startswith("GPU "))]
