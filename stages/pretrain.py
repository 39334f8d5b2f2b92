"""Stage: pre-train FM and FFM (no dropout) at every embedding size the attention runs need.

    python stages/pretrain.py frappe

AFM and AoAFM start from the FM embeddings, AFFM and AoAFFM from the FFM ones (the paper's
protocol); the runs land in runs/pretrain/<dataset>/.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train import main, run_stage  # noqa: E402

if __name__ == "__main__":
    run_stage(lambda: main(default_group="pretrain"), "pretrain")
