"""The fused CPU kernels of ``native.cpp``: built on first use, called through ctypes.

Why C++: on the CPU a training step of these models is dozens of small tensor operations,
and at batch 128 each costs more in dispatch and OpenMP fork/join than in arithmetic. The
kernels in ``native.cpp`` do the hot chains (FM's lookups and interaction, FFM's pair dots,
their backward scatters, Adagrad's row update) in one pass each.

Why ctypes and not ``torch.utils.cpp_extension``: the kernels need no ATen, only pointers,
so the build is one ``g++`` call of a second or two (a torch extension compiles the torch
headers for a minute), and nothing is built at install time (a build-time torch dependency
would make pip fetch a CUDA torch into the build environment).

The library is compiled with ``-march=native`` into ``$AOAFFM_NATIVE_CACHE`` (default
``~/.cache/aoaffm/native``), under a name that hashes the source, the flags, the compiler's
version and this CPU's feature flags, so a shared home directory never hands one machine
another's binary. It is built into a temporary file and renamed, so an interrupted build
leaves nothing that loads. It links OpenMP's ``libgomp.so.1``, the library torch has already
loaded, so the kernels share torch's threads and use ``torch.get_num_threads()`` of them.

Without a C++ compiler, or with ``AOAFFM_NATIVE=0``, ``library()`` is None (with one warning
when a build failed), ``aoaffm.fast.select`` declines every run and the trainer uses the
reference models of ``aoaffm.models``: same results up to float rounding, slower.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("native.cpp")
FLAGS = [
    "-O3",
    "-march=native",
    "-ffp-contract=off",  # no silent fused multiply-adds: Adagrad rounds as torch's
    "-fno-math-errno",  # lets sqrt vectorize (errno is never read)
    "-fopenmp",
    "-fPIC",
    "-shared",
    "-std=c++17",
]
ABI = 1  # aoaffm_native_abi() of the source this module's signatures match

_state: dict = {"library": None, "tried": False, "enabled": os.environ.get("AOAFFM_NATIVE") != "0"}
_scratch = threading.local()  # per thread: n -> int32 marks, all -1 between calls

_P = ctypes.c_void_p
_I = ctypes.c_int64
_F = ctypes.c_float
_T = ctypes.c_int
_SIGNATURES = {
    "adagrad_rows": (_T, [_P, _P, _P, _P, _I, _I, _F, _F, _T]),
    "adagrad_dense_many": (None, [_I, _P, _P, _P, _P, _P, _P, _T]),
    "unique_ids": (_I, [_P, _I, _I, _P, _P, _P]),
    "dropout_mask": (None, [_P, _I, ctypes.c_uint64, _F, _T]),
    "fm_forward": (_I, [_P, _P, _P, _I, _I, _I, _I, _P, _P, _P, _T]),
    "fm_backward": (None, [_P, _P, _P, _P, _P, _P, _I, _I, _I, _I, _P, _P, _T]),
    "ffm_forward": (_I, [_P, _P, _P, _P, _I, _I, _I, _I, _I, _T, _P, _T]),
    "ffm_backward": (_I, [_P, _P, _P, _P, _I, _P, _P, _P, _I, _I, _I, _I, _I, _I, _P, _P, _T]),
    "linear_forward": (_I, [_P, _P, _I, _I, _I, _P]),
    "ffm_train_step": (_I, [_P] * 10 + [_I] * 5 + [_P] * 4 + [_T]),
    "pair_products": (_I, [_P, _P, _P, _P, _I, _I, _I, _I, _I, _T, _P, _T]),
    "attention_forward": (None, [_P, _P, _P, _P, _P, _I, _I, _I, _I, _P, _P, _P, _T]),
    "attention_backward": (None, [_P, _P, _P, _P, _P, _P, _P, _I, _I, _I, _I, _P, _P, _P, _T]),
    "pair_products_backward": (
        _I,
        [_P, _P, _P, _P, _I, _P, _P, _P, _P, _P, _I, _I, _I, _I, _T, _P, _P, _T],
    ),
    "linear_backward": (None, [_P, _P, _I, _I, _I, _P]),
    "flush_denormals": (_T, [_T]),
}


class NativeBuildError(RuntimeError):
    """The C++ kernels could not be compiled (the message carries the compiler's output)."""


def cache_dir() -> Path:
    env = os.environ.get("AOAFFM_NATIVE_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "aoaffm" / "native"


def _compiler() -> str:
    return os.environ.get("CXX") or "g++"


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _library_path(compiler: str) -> Path:
    version = subprocess.run(
        [compiler, "--version"], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    digest = hashlib.sha256()
    for part in (
        SOURCE.read_bytes(),
        " ".join(FLAGS).encode(),
        version.encode(),
        _cpu_flags().encode(),
    ):
        digest.update(part)
        digest.update(b"\0")
    return cache_dir() / f"aoaffm_native_{digest.hexdigest()[:16]}.so"


def build() -> Path:
    """Compile ``native.cpp`` unless this exact build is cached; the library's path."""
    compiler = _compiler()
    if shutil.which(compiler) is None:
        raise NativeBuildError(f"no C++ compiler: {compiler!r} is not on PATH (set CXX)")
    path = _library_path(compiler)
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        result = subprocess.run(
            [compiler, *FLAGS, str(SOURCE), "-o", tmp],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if result.returncode != 0:
            raise NativeBuildError(
                f"{compiler} failed to build {SOURCE} (exit {result.returncode}):\n"
                + result.stderr[-3000:]
            )
        os.replace(tmp, path)  # another process building the same file wins harmlessly
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def _load(path: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    if lib.aoaffm_native_abi() != ABI:
        raise NativeBuildError(f"{path} has ABI {lib.aoaffm_native_abi()}, expected {ABI}")
    for name, (restype, argtypes) in _SIGNATURES.items():
        function = getattr(lib, name)
        function.restype, function.argtypes = restype, argtypes
    return lib


def library() -> ctypes.CDLL | None:
    """The loaded kernels, built on first call; None when disabled or the build failed."""
    if not _state["enabled"]:
        return None
    if not _state["tried"]:
        _state["tried"] = True
        try:
            _state["library"] = _load(build())
        except (NativeBuildError, OSError, subprocess.SubprocessError) as error:
            warnings.warn(
                f"aoaffm: the fused CPU kernels are unavailable, using the PyTorch "
                f"compositions (slower, same results up to rounding): {error}",
                RuntimeWarning,
                stacklevel=2,
            )
    return _state["library"]


@contextlib.contextmanager
def enabled(on: bool):
    """Switch the kernels on or off inside a block (tests and the ablation benchmark)."""
    before = _state["enabled"]
    _state["enabled"] = on
    try:
        yield
    finally:
        _state["enabled"] = before


def usable(*tensors: torch.Tensor) -> bool:
    """True when the kernels can take these tensors: enabled and built, every tensor a CPU
    float32 one (pass the float tensors, not the ids), and autocast off."""
    if not _state["enabled"]:
        return False
    for tensor in tensors:
        if tensor.device.type != "cpu" or tensor.dtype != torch.float32:
            return False
    if torch.is_autocast_enabled("cpu"):
        return False
    return library() is not None


# ------------------------------------------------------------------ calls


def flush_denormals() -> bool:
    """Subnormal floats become zero in this thread and every OpenMP worker (see native.cpp):
    x86 multiplies them ~100x slower, and an attention W decaying under λ's L2 reaches them.
    False when the kernels are unavailable or the CPU has no such mode."""
    lib = library()
    return lib is not None and lib.flush_denormals(torch.get_num_threads()) > 0


def _ptr(tensor: torch.Tensor | None) -> int | None:
    if tensor is None:
        return None
    if not tensor.is_contiguous():
        raise ValueError("native kernels need contiguous tensors")
    return tensor.data_ptr()


def _ids(ids: torch.Tensor) -> torch.Tensor:
    return ids.to(torch.int64).contiguous()


def _check_ids(bad: int, ids: torch.Tensor, limit: int, what: str) -> None:
    if bad >= 0:
        row, column = divmod(bad, ids.shape[1])
        raise IndexError(
            f"feature id {int(ids.view(-1)[bad])} at batch row {row}, field {column} is outside "
            f"the {what} (ids 0..{limit - 1})"
        )


def adagrad_rows(weight, state_sum, rows, grad, lr: float, eps: float) -> bool:
    """Adagrad's sparse update of ``rows`` of ``weight`` with their ``grad``; False (and
    nothing changed) when the rows are not strictly increasing, i.e. not coalesced."""
    rows = _ids(rows)
    size = weight.shape[1] if weight.dim() > 1 else 1
    return bool(
        library().adagrad_rows(
            _ptr(weight),
            _ptr(state_sum),
            _ptr(rows.contiguous()),
            _ptr(grad.contiguous()),
            rows.numel(),
            size,
            -lr,
            eps,
            torch.get_num_threads(),
        )  # fmt: skip
    )


def adagrad_dense_many(weights, state_sums, grads, learning_rates, eps) -> None:
    """``adagrad_dense`` on each (weight, sum, grad, lr, eps) in one call."""
    n = len(weights)
    grads = [g.contiguous() for g in grads]
    pointers = [
        (ctypes.c_void_p * n)(*[_ptr(t) for t in ts]) for ts in (weights, state_sums, grads)
    ]
    library().adagrad_dense_many(
        n, *pointers, (ctypes.c_int64 * n)(*[w.numel() for w in weights]),
        (ctypes.c_float * n)(*[-lr for lr in learning_rates]), (ctypes.c_float * n)(*eps),
        torch.get_num_threads(),
    )  # fmt: skip


def dropout_mask(shape, keep: float) -> torch.Tensor:
    """A float32 mask of ``shape``: 1 / keep with probability ``keep``, else 0. Its seed is one
    number drawn from torch's default generator, so ``torch.manual_seed`` fixes the masks (and
    a checkpoint's RNG state resumes them)."""
    seed = int(torch.randint(0, 2**63 - 1, (), dtype=torch.int64))
    mask = torch.empty(shape)
    library().dropout_mask(_ptr(mask), mask.numel(), seed, keep, torch.get_num_threads())
    return mask


def _marks(n: int) -> torch.Tensor:
    marks = getattr(_scratch, "marks", None)
    if marks is None:
        marks = _scratch.marks = {}
    mark = marks.get(n)
    if mark is None:
        mark = marks[n] = torch.full((n,), -1, dtype=torch.int32)
    return mark


def unique_ids(ids: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.unique(ids, sorted=True, return_inverse=True)`` for ids in [0, n), without
    sorting every id: a scratch array of n marks (kept per thread) finds the distinct ones."""
    ids = _ids(ids)
    mark = _marks(n)
    features = torch.empty(ids.numel(), dtype=torch.int64)
    local = torch.empty(ids.shape, dtype=torch.int64)
    count = library().unique_ids(_ptr(ids), ids.numel(), n, _ptr(mark), _ptr(features), _ptr(local))
    if count < 0:
        position = -count - 1
        raise IndexError(f"feature id {int(ids.view(-1)[position])} is outside 0..{n - 1}")
    return features[:count], local


def fm_forward(table, linear_table, ids):
    """(Σ v [B, K], ½((Σ v)² - Σ v²) [B, K], Σ w [B]) for one-hot rows ``ids`` [B, F]."""
    ids = _ids(ids)
    batch, fields = ids.shape
    size = table.shape[1]
    total = table.new_empty(batch, size)
    interaction = table.new_empty(batch, size)
    linear = table.new_empty(batch)
    bad = library().fm_forward(
        _ptr(table), _ptr(linear_table), _ptr(ids), table.shape[0], batch, fields, size,
        _ptr(total), _ptr(interaction), _ptr(linear), torch.get_num_threads(),
    )  # fmt: skip
    _check_ids(bad, ids, table.shape[0], "embedding table")
    return total, interaction, linear


def fm_backward(table, ids, local, n_block, total, grad, grad_linear):
    """Gradient blocks [U, K] and [U, 1] of the U distinct features (``local``: each lookup's
    position among them)."""
    ids, local = _ids(ids), _ids(local)
    batch, fields = ids.shape
    size = table.shape[1]
    block = table.new_empty(n_block, size)
    linear_block = table.new_empty(n_block, 1)
    grad = None if grad is None else grad.contiguous()
    grad_linear = None if grad_linear is None else grad_linear.contiguous()
    library().fm_backward(
        _ptr(table), _ptr(ids), _ptr(local), _ptr(total), _ptr(grad), _ptr(grad_linear),
        batch, fields, size, n_block, _ptr(block), _ptr(linear_block), torch.get_num_threads(),
    )  # fmt: skip
    return block, linear_block


def ffm_forward(table, ids, left, right, *, sum_pairs: bool = False):
    """<v_{i_a, f_c}, v_{i_c, f_a}> [B, P] from the flat field-aware table [n * F, K], or
    with ``sum_pairs`` their sum over the pairs [B]."""
    ids = _ids(ids)
    batch, fields = ids.shape
    n_pairs = left.numel()
    out = table.new_empty(batch) if sum_pairs else table.new_empty(batch, n_pairs)
    bad = library().ffm_forward(
        _ptr(table), _ptr(ids), _ptr(_ids(left)), _ptr(_ids(right)), table.shape[0] // fields,
        batch, fields, n_pairs, table.shape[1], int(sum_pairs), _ptr(out),
        torch.get_num_threads(),
    )  # fmt: skip
    _check_ids(bad, ids, table.shape[0] // fields, "field-aware table")
    return out


def ffm_backward(table, ids, local, features, left, right, grad):
    """FFM's table gradient as (rows, block): the field-aware rows of the batch's distinct
    ``features`` that get a gradient (ascending) and their gradients [R, K]. ``grad`` is
    [B, P] (one per pair) or [B] (the same for all pairs of a sample)."""
    ids, local = _ids(ids), _ids(local)
    batch, fields = ids.shape
    size = table.shape[1]
    grad = grad.contiguous()
    strides = (grad.shape[1], 1) if grad.dim() == 2 else (1, 0)
    rows = torch.empty(features.numel() * fields, dtype=torch.int64)
    block = table.new_empty(features.numel() * fields, size)
    count = library().ffm_backward(
        _ptr(table), _ptr(ids), _ptr(local), _ptr(features.contiguous()), features.numel(),
        _ptr(_ids(left)), _ptr(_ids(right)), _ptr(grad), *strides, batch, fields,
        left.numel(), size, _ptr(rows), _ptr(block), torch.get_num_threads(),
    )  # fmt: skip
    return rows[:count], block[:count]


def linear_forward(weights, ids):
    """Σ_f w[ids[b, f]] [B] from the linear part's [n, 1] table."""
    ids = _ids(ids)
    out = weights.new_empty(ids.shape[0])
    bad = library().linear_forward(
        _ptr(weights), _ptr(ids), weights.shape[0], ids.shape[0], ids.shape[1], _ptr(out)
    )
    _check_ids(bad, ids, weights.shape[0], "linear table")
    return out


def linear_backward(local, n_unique: int, grad):
    """The linear table's gradient rows [U, 1]: each row sums the grad of its lookups."""
    local = _ids(local)
    block = grad.new_empty(n_unique, 1)
    library().linear_backward(
        _ptr(local), _ptr(grad.contiguous()), local.shape[0], local.shape[1], n_unique, _ptr(block)
    )
    return block


def ffm_train_step(tensors, states, ids, labels, left, right, learning_rates, eps) -> float:
    """One FFM training step (forward, ½ Σ (ŷ - y)² backward, Adagrad) in one call.

    ``tensors`` are the field-aware table [n * F, K], the linear table [n, 1] and the bias
    [1]; ``states`` their Adagrad sums; ``learning_rates`` and ``eps`` one per tensor.
    Returns the batch's loss."""
    ids = _ids(ids)
    batch, fields = ids.shape
    table = tensors[0]
    n_features = table.shape[0] // fields
    neg_lr = (ctypes.c_float * 3)(*[-lr for lr in learning_rates])
    loss = ctypes.c_float()
    bad = library().ffm_train_step(
        _ptr(table), _ptr(states[0]), _ptr(tensors[1]), _ptr(states[1]), _ptr(tensors[2]),
        _ptr(states[2]), _ptr(ids), _ptr(labels.contiguous()), _ptr(_ids(left)),
        _ptr(_ids(right)), n_features, batch, fields, left.numel(), table.shape[1],
        neg_lr, (ctypes.c_float * 3)(*eps), _ptr(_marks(n_features)), ctypes.byref(loss),
        torch.get_num_threads(),
    )  # fmt: skip
    _check_ids(bad, ids, n_features, "field-aware table")
    return loss.value


def pair_products(table, ids, left, right, field_aware: bool):
    """v_a ⊙ v_c for every sample and field pair, [B * P, K]: field-aware rows
    (v_{i_a, f_c} ⊙ v_{i_c, f_a}) from the flat [n * F, K] table, else feature rows."""
    ids = _ids(ids)
    batch, fields = ids.shape
    n_features = table.shape[0] // fields if field_aware else table.shape[0]
    out = table.new_empty(batch * left.numel(), table.shape[1])
    bad = library().pair_products(
        _ptr(table), _ptr(ids), _ptr(_ids(left)), _ptr(_ids(right)), n_features, batch, fields,
        left.numel(), table.shape[1], int(field_aware), _ptr(out), torch.get_num_threads(),
    )  # fmt: skip
    _check_ids(bad, ids, n_features, "field-aware table" if field_aware else "embedding table")
    return out


def attention_forward(hidden, bias, pairs, score, pair_weights, batch: int):
    """(α [B, P], q ⊙ α [B, P], pooled [B, K]) from the attention layer's product
    ``hidden`` = P Wᵀ [B * P, t] (bias not yet added) and the pair products [B * P, K]."""
    n_pairs, size, att = pairs.shape[0] // batch, pairs.shape[1], hidden.shape[1]
    alpha = pairs.new_empty(batch, n_pairs)
    weights = pairs.new_empty(batch, n_pairs)
    pooled = pairs.new_empty(batch, size)
    library().attention_forward(
        _ptr(hidden), _ptr(bias), _ptr(pairs), _ptr(score), _ptr(pair_weights), batch, n_pairs, size, att,
        _ptr(alpha), _ptr(weights), _ptr(pooled), torch.get_num_threads(),
    )  # fmt: skip
    return alpha, weights, pooled


def attention_backward(hidden, bias, pairs, score, pair_weights, alpha, grad):
    """Overwrites ``hidden`` (P Wᵀ) with ∂(W P + b) (ReLU's mask times h ∂s); returns (∂h, ∂b,
    ∂q or None)."""
    batch, size = grad.shape
    n_pairs, att = alpha.shape[1], hidden.shape[1]
    grad_score, grad_bias = hidden.new_empty(att), hidden.new_empty(att)
    grad_q = None if pair_weights is None else hidden.new_empty(n_pairs)
    library().attention_backward(
        _ptr(hidden), _ptr(bias), _ptr(pairs), _ptr(score), _ptr(pair_weights), _ptr(alpha),
        _ptr(grad.contiguous()), batch, n_pairs, size, att, _ptr(grad_score), _ptr(grad_bias),
        _ptr(grad_q), torch.get_num_threads(),
    )  # fmt: skip
    return grad_score, grad_bias, grad_q


def pair_products_backward(table, ids, local, features, left, right, grad_pairs, field_aware,
                           weights=None, grad=None):  # fmt: skip
    """The table gradient of ``pair_products`` as (rows ascending, block [R, K]) from the
    products' gradient [B * P, K]; for the attention models also the pooling's part
    ``weights`` [B, P] ⊗ ``grad`` [B, K]."""
    ids, local = _ids(ids), _ids(local)
    batch, fields = ids.shape
    size = table.shape[1]
    n_out = features.numel() * (fields if field_aware else 1)
    rows = torch.empty(n_out, dtype=torch.int64)
    block = table.new_empty(n_out, size)
    count = library().pair_products_backward(
        _ptr(table), _ptr(ids), _ptr(local), _ptr(features.contiguous()), features.numel(),
        _ptr(_ids(left)), _ptr(_ids(right)), _ptr(grad_pairs.contiguous()), _ptr(weights),
        _ptr(None if grad is None else grad.contiguous()), batch, fields, left.numel(), size,
        int(field_aware), _ptr(rows), _ptr(block), torch.get_num_threads(),
    )  # fmt: skip
    return rows[:count], block[:count]
