"""What a report records about the machine and software that produced it.

Its own module so that editing it re-runs only the evaluate stage, not the training runs.
"""

from __future__ import annotations


def _cpu_name() -> str | None:
    """The CPU's model name (Linux), which the attention runs' last bits depend on."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def environment(cfg: dict) -> dict:
    """Versions, device and git revision for the report."""
    import datetime
    import platform
    import subprocess

    import numpy
    import torch

    def _version(name: str) -> str | None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version(name)
        except PackageNotFoundError:
            return None

    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                capture_output=True,
                text=True,
            ).stdout.strip()
        )
        rev += " (uncommitted changes)" if dirty else ""
    except (OSError, subprocess.CalledProcessError):
        rev = None
    device = cfg["train"]["device"]
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    gpu = (
        torch.cuda.get_device_name(0)
        if device.startswith("cuda") and torch.cuda.is_available()
        else None
    )
    return {
        "profile": cfg["profile"],
        "git_revision": rev,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "dvc": _version("dvc"),
        "device": device if gpu is None else f"{device} ({gpu})",
        "cpu": _cpu_name() or platform.processor() or platform.machine(),
        # the kernels PyTorch dispatches to: float32 sums round differently across them
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
