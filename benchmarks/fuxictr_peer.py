"""FuxiCTR 2.3.10 (PyPI ``fuxictr``, the reczoo CTR benchmark library) as a peer of
``throughput.py``: its FM, FFM, HOFM, Wide&Deep, DeepCrossing and AFM, trained by its own
``BaseModel.train_step``.

The PyPI package holds the framework (``FeatureMap``, ``FeatureEmbedding``, ``BaseModel``,
the layers) but none of these six models: they live in the ``model_zoo`` folder of the
GitHub repository reczoo/FuxiCTR (``model_zoo/<Model>/src/<Model>.py``). Point
``--fuxictr-zoo`` (or ``$FUXICTR_MODEL_ZOO``) at a checkout's ``model_zoo``; each model file
is imported from there as it is, nothing is copied into this repository.

How it is run, and what had to be adapted (in this process only, nothing is patched on disk):

- Data: FuxiCTR's models take a dict of one int64 column of per-field ids per feature (what
  its data loaders yield) plus the label column; the batch is cut from per-field columns in
  memory by the same seeded index permutation as ours.
- ``FeatureMap`` is built in memory (one categorical feature per field, ``vocab_size`` the
  field's size) instead of from a ``feature_map.json`` written by its preprocessing.
- Task ``regression`` (identity output, ``mse_loss``) on the ±1 labels, the square loss ours
  trains on. FFM's constructor takes ``task`` itself and does not pass it on to ``BaseModel``,
  so FFM would end in a sigmoid whatever the task: ``output_activation`` is set to the
  regression one after construction, for every model.
- Optimizer ``"Adagrad"`` through its ``compile`` (``torch.optim.Adagrad``, its defaults), the
  step its ``fit`` takes: zero_grad, forward, loss + regularization (none), backward,
  ``clip_grad_norm_`` at its default ``max_gradient_norm`` 10, step. Its embeddings are
  ``nn.Embedding`` with dense gradients, one table per field.
- ``import fuxictr.pytorch`` imports its whole preprocessing package, hence polars, pyarrow,
  scikit-learn, h5py and ``ray[data]`` (the package's own dependencies; ``pip install
  fuxictr==2.3.10`` brings them).
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from collections import OrderedDict
from pathlib import Path

import torch
from harness import IndexBatches, Rows

VERSION = "2.3.10"
# Our model name -> (folder under model_zoo, class). FFM: FuxiCTR has two, FFM (F - 1
# embedding tables, a Python loop over the 45 pairs) and FFMv2 (one table of (F - 1) K
# columns, the pairs by masked_select); FFM was the faster here at K = 256 (171 against 256
# ms a step, one thread), so it is the peer.
ZOO = {
    "fm": ("FM", "FM"),
    "ffm": ("FFM", "FFM"),
    "hofm": ("HOFM", "HOFM"),
    "wide_deep": ("WideDeep/WideDeep_torch", "WideDeep"),
    "deepcross": ("DeepCrossing", "DeepCrossing"),
    "afm": ("AFM", "AFM"),
}
MAX_GRADIENT_NORM = 10.0  # BaseModel.fit's default


def zoo_path(path: str | os.PathLike | None) -> Path | None:
    path = path or os.environ.get("FUXICTR_MODEL_ZOO")
    return Path(path) if path else None


def unavailable(zoo: Path | None) -> str | None:
    """Why the FuxiCTR peer cannot run here, or None when it can."""
    try:
        import fuxictr
    except ImportError:
        return "fuxictr is not installed (pip install fuxictr==2.3.10)"
    if fuxictr.__version__ != VERSION:
        return f"fuxictr {fuxictr.__version__} is installed, this benchmark measures {VERSION}"
    try:
        import fuxictr.pytorch.models  # noqa: F401 (its dependencies: polars, ray, ...)
    except ImportError as error:
        return f"fuxictr cannot be imported ({error}); install its dependencies"
    if zoo is None:
        return (
            "no FuxiCTR model_zoo given: its FM, FFM, HOFM, WideDeep, DeepCrossing and AFM are "
            "not in the PyPI package; pass --fuxictr-zoo <checkout of reczoo/FuxiCTR>/model_zoo "
            "or set FUXICTR_MODEL_ZOO"
        )
    missing = [str(model_file(zoo, m)) for m in ZOO if not model_file(zoo, m).is_file()]
    if missing:
        return f"the FuxiCTR model_zoo lacks {', '.join(missing)}"
    return None


def model_file(zoo: Path, name: str) -> Path:
    folder, cls = ZOO[name]
    return zoo / folder / "src" / f"{cls}.py"


def model_class(zoo: Path, name: str):
    folder, cls = ZOO[name]
    spec = importlib.util.spec_from_file_location(f"fuxictr_zoo_{cls}", model_file(zoo, name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, cls)


def feature_map(field_sizes: list[int]):
    """One categorical feature per field, as FuxiCTR's preprocessing would describe Frappe."""
    from fuxictr.features import FeatureMap

    fmap = FeatureMap("frappe", data_dir=tempfile.gettempdir())
    fmap.features = OrderedDict(
        (f"field{i}", {"type": "categorical", "source": "", "vocab_size": int(size)})
        for i, size in enumerate(field_sizes)
    )
    fmap.labels = ["label"]
    fmap.num_fields = fmap.get_num_fields()
    fmap.set_column_index()
    return fmap


def build(
    name: str,
    field_sizes: list[int],
    k: int,
    *,
    attention_size: int,
    hidden_sizes: list[int] | None,
    learning_rate: float,
    zoo: Path,
):
    """FuxiCTR's model ``name`` with our model's shape: K, t, the deep models' layers, no
    dropout, no batch norm, no regularizer, Adagrad."""
    fmap = feature_map(field_sizes)
    shape = {}
    if name == "hofm":
        shape = {"order": 3}  # two K-wide tables (orders 2 and 3), as ours
    elif name == "wide_deep":
        shape = {"hidden_units": list(hidden_sizes)}
    elif name == "deepcross":
        shape = {"residual_blocks": list(hidden_sizes)}
    elif name == "afm":
        shape = {"attention_dim": attention_size, "attention_dropout": [0.0, 0.0]}
    model = model_class(zoo, name)(
        fmap,
        gpu=-1,
        task="regression",
        learning_rate=learning_rate,
        embedding_dim=k,
        optimizer="Adagrad",
        loss="mse_loss",
        metrics=["RMSE"],
        verbose=0,
        model_root=tempfile.gettempdir(),  # where its fit would save checkpoints: unused
        **shape,
    )
    model.output_activation = model.get_output_activation("regression")  # FFM drops `task`
    model._max_gradient_norm = MAX_GRADIENT_NORM  # set by its fit, read by its train_step
    return model


class FuxiStep:
    """One training step of a FuxiCTR model, its own ``train_step``, on a batch dict of
    per-field int64 id columns and the ±1 labels."""

    def __init__(self, model, rows: Rows, offsets, batch_size: int, seed: int = 0):
        self.model = model.train()
        local = rows.ids - torch.as_tensor(offsets, dtype=rows.ids.dtype)
        self.columns = local.long().t().contiguous()  # [F, N]: a batch is F contiguous rows
        self.names = list(model.feature_map.features)
        self.labels = rows.labels
        self.batches = IndexBatches(len(rows), batch_size, seed)

    def __call__(self) -> None:
        index = next(self.batches)
        batch = dict(zip(self.names, self.columns[:, index].unbind(0), strict=True))
        batch["label"] = self.labels[index]
        self.model.train_step(batch)
