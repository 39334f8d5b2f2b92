"""Hand-written backward passes for the three hot spots of a training step.

Autograd's generic backward of these compositions moves more memory than the maths needs
(a zero-filled copy per slice of the gathered rows, an ``index_put`` per gather, a separate
sum of two gradient halves, an outer product before ReLU's mask, and Adagrad's sort of all
B * 2P looked-up rows). Each function here computes the same values and gradients, up to
float rounding, with fewer passes; the tests compare them with the reference compositions in
``aoaffm.models.layers`` and gradcheck them in float64.

- ``fm_interaction``: FM's ((Σ e)² - Σ e²) / 2 with the gradient Σ e - e_f in one pass;
  ``fm_terms`` adds the lookups of both FM tables and hands Adagrad coalesced gradients.
- ``pair_products``: v_a ⊙ v_b for every field pair (a, b) from [B, F, K] -> [B, P, K];
  the backward adds both halves into [B, F, K] with one ``index_add_``.
- ``field_aware_pair_products``: v_{i_a, f_b} ⊙ v_{i_b, f_a} from the flat field-aware table
  [n * F, K], both sides in one lookup; the backward writes both gradient halves into one
  buffer and, on the CPU, hands the table a sparse gradient that is already coalesced.
- ``field_aware_pair_dots``: <v_{i_a, f_b}, v_{i_b, f_a}> for every pair, [B, P], for FFM
  when nothing acts on the K components in between (no dropout active, no batch norm). On
  the CPU it gathers each distinct feature's block of F rows once and computes the dots as a
  sampled dense-dense product over those blocks (the pairs are a sparse pattern), and the
  backward as one sparse-dense product: no [B, 2P, K] tensor at all.
- ``attention_pooling``: eq. 4/5's Σ q α P with ReLU in place; its backward folds h into W,
  so the [B * P, t] hidden layer is masked in one pass instead of three.
- ``lookup_linear``: the deep models' first layer W [e_1, ..., e_F] + b as Σ_f W_f e_f over
  the batch's distinct (field, feature) pairs: a feature many samples share is projected
  once, and its gradient rows are summed before the products.

Where the C++ kernels of ``aoaffm.fast.native`` can take the tensors (CPU float32), the
functions here call them (FM's terms, FFM's dots and their gradient rows, the linear part,
and for the attention family ``attention_interaction``: pair products, scores, softmax,
pooling and the table's gradient rows in one autograd node around torch's matrix products,
whose two halves ``aoaffm.fast.steps`` also calls directly); otherwise (float64: the tests'
gradchecks) they compute the same in PyTorch. They assume one dtype throughout, so a run
under autocast (bf16) uses the reference models instead (``aoaffm.fast.select``).
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch.autograd import Function

from aoaffm.fast import native

# --------------------------------------------------------------------------- FM


class _FMInteraction(Function):
    @staticmethod
    def forward(ctx, vectors):
        total = vectors.sum(dim=1)
        ctx.save_for_backward(vectors, total)
        return 0.5 * (total * total - (vectors * vectors).sum(dim=1))

    @staticmethod
    def backward(ctx, grad):
        vectors, total = ctx.saved_tensors
        # ∂/∂e_f ½((Σ e)² - Σ e²) = Σ e - e_f: one pass instead of autograd's four
        return (total.unsqueeze(1) - vectors).mul_(grad.unsqueeze(1))


def fm_interaction(vectors: torch.Tensor) -> torch.Tensor:
    """Σ_{i<j} e_i ⊙ e_j = ((Σ e)² - Σ e²) / 2 over [B, F, K] -> [B, K]."""
    return _FMInteraction.apply(vectors)


class _FMTerms(Function):
    @staticmethod
    def forward(ctx, table, linear_table, ids):
        batch, n_fields = ids.shape
        flat = ids.reshape(-1).long()
        ctx.shapes = table.shape, linear_table.shape
        ctx.native = native.usable(table, linear_table)
        if ctx.native:  # one pass, and nothing [B, F, K] to keep
            total, interaction, linear = native.fm_forward(table, linear_table, ids)
            ctx.save_for_backward(table, total, ids)  # the table's version is checked
            return interaction, linear
        vectors = table.index_select(0, flat).view(batch, n_fields, -1)
        total = vectors.sum(dim=1)
        interaction = 0.5 * (total * total - (vectors * vectors).sum(dim=1))
        linear = linear_table.index_select(0, flat).view(batch, n_fields).sum(dim=1)
        ctx.save_for_backward(vectors, total, flat)
        return interaction, linear

    @staticmethod
    def backward(ctx, grad_interaction, grad_linear):
        saved, total, ids = ctx.saved_tensors
        table_shape, linear_shape = ctx.shapes
        if ctx.native:  # the forward kept the table itself, not the gathered rows
            features, local = native.unique_ids(ids, table_shape[0])
            block, linear_block = native.fm_backward(
                saved, ids, local, features.numel(), total, grad_interaction, grad_linear
            )
            return (
                _coalesced(features, block, table_shape),
                _coalesced(features, linear_block, linear_shape),
                None,
            )
        vectors = saved
        features, local = torch.unique(ids, sorted=True, return_inverse=True)
        block = vectors.new_zeros(features.numel(), table_shape[1])
        if grad_interaction is not None:  # ∂/∂e_f = Σ e - e_f
            grad_vectors = (total.unsqueeze(1) - vectors).mul_(grad_interaction.unsqueeze(1))
            block.index_add_(0, local, grad_vectors.view(-1, table_shape[1]))
        linear_block = vectors.new_zeros(features.numel(), 1)
        if grad_linear is not None:
            per_lookup = grad_linear.repeat_interleave(vectors.shape[1]).unsqueeze(1)
            linear_block.index_add_(0, local, per_lookup)
        return (
            _coalesced(features, block, table_shape),
            _coalesced(features, linear_block, linear_shape),
            None,
        )


class _LinearTerms(Function):
    @staticmethod
    def forward(ctx, weights, ids):
        ctx.save_for_backward(ids)
        ctx.shape = weights.shape
        return native.linear_forward(weights, ids)

    @staticmethod
    def backward(ctx, grad):
        (ids,) = ctx.saved_tensors
        features, local = native.unique_ids(ids, ctx.shape[0])
        block = native.linear_backward(local, features.numel(), grad)
        return _coalesced(features, block, ctx.shape), None


def linear_terms(weights: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Σ_f w[ids[b, f]] [B] from the [n, 1] linear table for one-hot rows, its gradient one
    coalesced row per distinct feature (C++ kernels: call only when ``native.usable``)."""
    return _LinearTerms.apply(weights, ids)


def _coalesced(rows: torch.Tensor, values: torch.Tensor, shape) -> torch.Tensor:
    return torch.sparse_coo_tensor(
        rows.unsqueeze(0), values, shape, is_coalesced=True, check_invariants=False
    )


def fm_terms(table: torch.Tensor, linear_table: torch.Tensor, ids: torch.Tensor):
    """FM's two sums from its tables for one-hot rows: the interaction vector
    ½((Σ v)² - Σ v²) [B, K] and Σ w [B], with one coalesced sparse gradient per table (rows of
    the batch's distinct features), so that Adagrad need not sort and sum duplicates."""
    return _FMTerms.apply(table, linear_table, ids)


# --------------------------------------------------------------------------- pair products


class _PairProducts(Function):
    @staticmethod
    def forward(ctx, vectors, left, right):
        lefts = vectors.index_select(1, left)
        rights = vectors.index_select(1, right)
        ctx.save_for_backward(lefts, rights, left, right)
        ctx.n_fields = vectors.shape[1]
        return lefts * rights

    @staticmethod
    def backward(ctx, grad):
        lefts, rights, left, right = ctx.saved_tensors
        batch = grad.shape[0]
        # Σ over the pairs each field belongs to, as products with the fixed [F, P] incidence
        # matrices of the pairs' left and right members (parallel, unlike index_add_ on dim 1)
        grad_vectors = torch.matmul(incidence(left, ctx.n_fields, grad), grad * rights)
        right_incidence = incidence(right, ctx.n_fields, grad).expand(batch, -1, -1)
        return grad_vectors.baddbmm_(right_incidence, grad * lefts), None, None


def incidence(members: torch.Tensor, n_fields: int, like: torch.Tensor) -> torch.Tensor:
    """[F, P] with a one at (members[p], p): which field each pair's member is."""
    matrix = like.new_zeros(n_fields, members.numel())
    matrix[members, torch.arange(members.numel(), device=members.device)] = 1
    return matrix


def pair_products(vectors: torch.Tensor, left: torch.Tensor, right: torch.Tensor):
    """v_a ⊙ v_b for the pairs (left[p], right[p]) of [B, F, K] vectors: [B, P, K]."""
    return _PairProducts.apply(vectors, left, right)


# --------------------------------------------------------------------------- field-aware


def field_aware_rows(ids: torch.Tensor, fields: torch.Tensor, partners: torch.Tensor):
    """Rows ``id * F + partner`` of the flat field-aware table, one per (sample, column)."""
    return ids[:, fields].long() * ids.shape[1] + partners


class _FieldAwarePairProducts(Function):
    @staticmethod
    def forward(ctx, table, ids, left, right, sparse):
        ctx.table_shape, ctx.sparse = table.shape, sparse
        ctx.native = native.usable(table)
        if ctx.native:  # FFM with dropout or batch norm: the C++ gather and gradient rows
            ctx.save_for_backward(table, ids, left, right)
            products = native.pair_products(table, ids, left, right, True)
            return products.view(ids.shape[0], left.numel(), table.shape[1])
        # both sides in one lookup: v_{i_a, f_b} (field a looks at b), then v_{i_b, f_a}
        rows = field_aware_rows(ids, torch.cat([left, right]), torch.cat([right, left]))
        gathered = table.index_select(0, rows.reshape(-1))
        gathered = gathered.view(ids.shape[0], 2, left.numel(), table.shape[1])
        ctx.save_for_backward(gathered, ids, left, right)
        return gathered[:, 0] * gathered[:, 1]

    @staticmethod
    def backward(ctx, grad):
        if ctx.native:
            table, ids, left, right = ctx.saved_tensors
            features, local = native.unique_ids(ids, ctx.table_shape[0] // ids.shape[1])
            rows, values = native.pair_products_backward(
                table, ids, local, features, left, right, grad.reshape(-1, grad.shape[-1]), True
            )
            if not ctx.sparse:
                return table.new_zeros(ctx.table_shape).index_copy_(0, rows, values), *[None] * 4
            return _coalesced(rows, values, ctx.table_shape), None, None, None, None
        gathered, ids, left, right = ctx.saved_tensors
        sides = ((left, right, grad * gathered[:, 1]), (right, left, grad * gathered[:, 0]))
        return table_gradient(sides, ids, ctx.table_shape, ctx.sparse), None, None, None, None


def field_aware_pair_products(
    table: torch.Tensor,
    ids: torch.Tensor,
    left: torch.Tensor,
    right: torch.Tensor,
    *,
    sparse: bool = True,
) -> torch.Tensor:
    """v_{i_a, f_b} ⊙ v_{i_b, f_a} for every pair (a, b) = (left[p], right[p]): [B, P, K]."""
    return _FieldAwarePairProducts.apply(table, ids, left, right, sparse)


def table_gradient(sides, ids: torch.Tensor, table_shape: torch.Size, sparse: bool):
    """The flat field-aware table's gradient from the gradient of each looked-up vector.

    ``sides`` holds (fields, partners, grad [B, P, K]): the gradient of v_{i_f, partner} for
    each sample and pair. Dense: a zero table with the rows added in. Sparse on the CPU:
    summed by ``index_add_`` into one block row per (feature, field) of the batch's distinct
    features, a coalesced tensor (rows of a feature's own field stay zero: Adagrad adds 0 to
    their state and moves them by 0). Sparse on other devices: uncoalesced, as
    ``F.embedding`` returns it, so that the device's deterministic coalesce sums it.
    """
    size = table_shape[1]
    if sparse and ids.device.type != "cpu":
        rows = torch.cat([field_aware_rows(ids, f, p).reshape(-1) for f, p, _ in sides])
        values = torch.cat([g.reshape(-1, size) for _, _, g in sides])
        return torch.sparse_coo_tensor(
            rows.unsqueeze(0), values, table_shape, check_invariants=False
        )
    if not sparse:
        grad_table = sides[0][2].new_zeros(table_shape)
        for fields, partners, grad in sides:
            rows = field_aware_rows(ids, fields, partners).reshape(-1)
            grad_table.index_add_(0, rows, grad.reshape(-1, size))
        return grad_table
    n_fields = ids.shape[1]
    features, local = torch.unique(ids.long(), sorted=True, return_inverse=True)
    block = sides[0][2].new_zeros(features.numel() * n_fields, size)
    for fields, partners, grad in sides:
        rows = field_aware_rows(local, fields, partners).reshape(-1)
        block.index_add_(0, rows, grad.reshape(-1, size))
    return block_gradient(block, features, n_fields, table_shape, sparse=True)


def block_gradient(block, features, n_fields, table_shape, *, sparse: bool) -> torch.Tensor:
    """The table's gradient from ``block`` [U * F, K]: the F rows of each distinct feature
    ``features`` (sorted) in order, so its row indices come out sorted and unique."""
    every_field = torch.arange(n_fields, device=features.device)
    indices = (features.unsqueeze(1) * n_fields + every_field).reshape(-1)
    if not sparse:
        return block.new_zeros(table_shape).index_copy_(0, indices, block)
    return torch.sparse_coo_tensor(
        indices.unsqueeze(0), block, table_shape, is_coalesced=True, check_invariants=False
    )


class _FieldAwarePairDots(Function):
    @staticmethod
    def forward(ctx, table, ids, left, right, sparse, sum_pairs=False):
        ctx.table_shape, ctx.sparse = table.shape, sparse
        ctx.native = native.usable(table)
        if ctx.native:  # one pass over the pairs' rows; the table's version is checked
            ctx.save_for_backward(table, ids, left, right)
            return native.ffm_forward(table, ids, left, right, sum_pairs=sum_pairs)
        if sum_pairs:
            raise ValueError("summed pair dots need the C++ kernels (native.usable)")
        n_fields, size = ids.shape[1], table.shape[1]
        features, local = torch.unique(ids.long(), sorted=True, return_inverse=True)
        # each distinct feature's F vectors, one contiguous block row each: [U * F, K]
        block = table.view(-1, n_fields * size).index_select(0, features).view(-1, size)
        lefts = (local[:, left] * n_fields + right).reshape(-1)  # v_{i_a, f_b} in the block
        rights = (local[:, right] * n_fields + left).reshape(-1)  # v_{i_b, f_a}
        ctx.save_for_backward(block, lefts, rights, features)
        return sampled_dots(block, lefts, rights).view(ids.shape[0], -1)

    @staticmethod
    def backward(ctx, grad):
        if ctx.native:  # only the rows that get a gradient, each computed whole
            table, ids, left, right = ctx.saved_tensors
            features, local = native.unique_ids(ids, ctx.table_shape[0] // ids.shape[1])
            rows, values = native.ffm_backward(table, ids, local, features, left, right, grad)
            if not ctx.sparse:
                return table.new_zeros(ctx.table_shape).index_copy_(0, rows, values), *[None] * 5
            return _coalesced(rows, values, ctx.table_shape), None, None, None, None, None
        block, lefts, rights, features = ctx.saved_tensors
        n_rows = block.shape[0]
        n_fields = n_rows // features.numel()
        coefficients = grad.reshape(-1)
        # ∂/∂v_left = g v_right and ∂/∂v_right = g v_left: one symmetric sparse [U F, U F]
        # matrix of the pairs times the block
        pairs = torch.sparse_coo_tensor(
            torch.stack([torch.cat([lefts, rights]), torch.cat([rights, lefts])]),
            torch.cat([coefficients, coefficients]),
            (n_rows, n_rows),
            check_invariants=False,
        )
        grad_block = torch.sparse.mm(pairs, block)
        grad_table = block_gradient(
            grad_block, features, n_fields, ctx.table_shape, sparse=ctx.sparse
        )
        return grad_table, None, None, None, None, None


def sampled_dots(block: torch.Tensor, lefts: torch.Tensor, rights: torch.Tensor):
    """<block[lefts[r]], block[rights[r]]> for every r, without gathering the rows: the dots
    are the entries of block blockᵀ at the (lefts, rights) pattern (``sampled_addmm`` wants
    it as CSR, rows sorted)."""
    n_rows = block.shape[0]
    order = torch.argsort(lefts)
    crow = torch.zeros(n_rows + 1, dtype=lefts.dtype, device=lefts.device)
    torch.cumsum(torch.bincount(lefts, minlength=n_rows), 0, out=crow[1:])
    with warnings.catch_warnings():  # torch calls CSR "beta"; this use is tested
        warnings.simplefilter("ignore")
        pattern = torch.sparse_csr_tensor(
            crow,
            rights[order],
            block.new_zeros(lefts.numel()),  # sampled_addmm scales these by beta = 0: 0 * NaN
            (n_rows, n_rows),
            check_invariants=False,
        )
    sorted_dots = torch.sparse.sampled_addmm(pattern, block, block.t(), beta=0.0).values()
    return torch.empty_like(sorted_dots).index_copy_(0, order, sorted_dots)


def field_aware_pair_dots(
    table: torch.Tensor,
    ids: torch.Tensor,
    left: torch.Tensor,
    right: torch.Tensor,
    *,
    sparse: bool = True,
) -> torch.Tensor:
    """<v_{i_a, f_b}, v_{i_b, f_a}> for every pair (a, b) = (left[p], right[p]): [B, P]."""
    return _FieldAwarePairDots.apply(table, ids, left, right, sparse)


def field_aware_interaction(table: torch.Tensor, ids: torch.Tensor, left, right):
    """FFM's Σ_pairs <v_{i_a, f_b}, v_{i_b, f_a}> [B] for one-hot rows in one C++ pass (call
    only when ``native.usable(table)``)."""
    return _FieldAwarePairDots.apply(table, ids, left, right, True, True)


# --------------------------------------------------------------------------- attention


class _AttentionPooling(Function):
    @staticmethod
    def forward(ctx, pairs, weight, bias, score, pair_weights):
        batch, n_pairs, size = pairs.shape
        flat = pairs.reshape(-1, size)
        hidden = torch.addmm(bias, flat, weight.t()).relu_()  # ReLU(W P + b): [B * P, t]
        alpha = torch.softmax(torch.mv(hidden, score).view(batch, n_pairs), dim=1)
        weights = alpha if pair_weights is None else alpha * pair_weights
        pooled = torch.bmm(weights.unsqueeze(1), pairs).squeeze(1)
        ctx.save_for_backward(pairs, weight, score, pair_weights, hidden, alpha, weights)
        return pooled

    @staticmethod
    def backward(ctx, grad):
        pairs, weight, score, pair_weights, hidden, alpha, weights = ctx.saved_tensors
        batch, n_pairs, size = pairs.shape
        grad = grad.contiguous()
        grad_weights = torch.bmm(pairs, grad.unsqueeze(2)).squeeze(2)  # [B, P]
        grad_q = None
        grad_alpha = grad_weights
        if pair_weights is not None:
            grad_alpha = grad_weights * pair_weights
            if ctx.needs_input_grad[4]:
                grad_q = (grad_weights * alpha).sum(0)
        # softmax: ∂s = α ⊙ (∂α - Σ α ∂α); s = h · hidden
        grad_scores = alpha * (grad_alpha - (alpha * grad_alpha).sum(1, keepdim=True))
        grad_scores = grad_scores.reshape(-1)
        grad_score = torch.mv(hidden.t(), grad_scores) if ctx.needs_input_grad[3] else None
        # ∂hidden_pre = mask ⊙ (∂s hᵀ) = (mask ⊙ ∂s 1ᵀ) diag(h): one masked pass; h goes into
        # the small [t, K] and [t] factors instead of the [B * P, t] one.
        masked = torch.ops.aten.threshold_backward(
            grad_scores.unsqueeze(1).expand_as(hidden), hidden, 0
        )
        flat = pairs.reshape(-1, size)
        grad_w = grad_b = grad_pairs = None
        if ctx.needs_input_grad[1]:
            grad_w = (masked.t() @ flat).mul_(score.unsqueeze(1))
        if ctx.needs_input_grad[2]:
            grad_b = masked.sum(0).mul_(score)
        if ctx.needs_input_grad[0]:
            grad_pairs = (masked @ (score.unsqueeze(1) * weight)).view(batch, n_pairs, size)
            grad_pairs.baddbmm_(weights.unsqueeze(2), grad.unsqueeze(1))  # + (q α) ⊗ ∂pooled
        return grad_pairs, grad_w, grad_b, grad_score, grad_q


def attention_pooling(
    pairs: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    score: torch.Tensor,
    pair_weights: torch.Tensor | None,
) -> torch.Tensor:
    """Σ_r q_r α_r P_r over [B, P, K] pair rows, α = softmax(hᵀ ReLU(W P_r + b)): [B, K]."""
    return _AttentionPooling.apply(pairs.contiguous(), weight, bias, score, pair_weights)


# --------------------------------------------------------------------------- dense products
#
# The dense matrix products are the floor of the attention and deep models' steps. Under
# ``bf16_products()`` the backend computes them from bf16 copies of both factors (oneDNN
# accumulates in float32; the product is rounded to bf16 and widened back): on a CPU with
# bf16 instructions about 2-2.5x faster, everything else staying float32 (train.bf16_products).

# process-wide, not per thread: autograd may run a backward pass on a thread of its own
_precision = {"bf16": False}


@contextmanager
def bf16_products(enabled: bool = True):
    """Within this block ``matmul``, ``linear`` and ``lookup_linear`` multiply in bf16."""
    before = _precision["bf16"]
    _precision["bf16"] = bool(enabled)
    try:
        yield
    finally:
        _precision["bf16"] = before


def products_in_bf16() -> bool:
    return _precision["bf16"]


def _mm16(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The product of two bf16 matrices, as float32 (every bf16 product goes through here)."""
    return torch.mm(a, b).float()


def _bf16_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return _mm16(a.to(torch.bfloat16), b.to(torch.bfloat16))


def matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b for 2-d float32 factors, in bf16 under ``bf16_products``: the attention's three
    products (W P forward, ∂W and ∂P backward) go through here."""
    return _bf16_mm(a, b) if products_in_bf16() else a @ b


def _factors(*tensors: torch.Tensor) -> list[torch.Tensor]:
    """The tensors as a product's factors: bf16 copies under ``bf16_products``, else as they
    are (cast once, then sliced into many small products)."""
    return [t.to(torch.bfloat16) if products_in_bf16() else t for t in tensors]


def _mm_into(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> None:
    """out = a @ b, from factors made by ``_factors``."""
    if a.dtype == torch.bfloat16:
        out.copy_(_mm16(a, b))
    else:
        torch.mm(a, b, out=out)


class _BF16Linear(Function):
    @staticmethod
    def forward(ctx, x, weight, bias):
        x16, weight16 = x.to(torch.bfloat16), weight.to(torch.bfloat16)
        ctx.save_for_backward(x16, weight16)
        out = _mm16(x16, weight16.t())
        return out if bias is None else out.add_(bias)

    @staticmethod
    def backward(ctx, grad):
        x16, weight16 = ctx.saved_tensors
        grad16 = grad.to(torch.bfloat16)
        grad_x = _mm16(grad16, weight16) if ctx.needs_input_grad[0] else None
        grad_weight = _mm16(grad16.t(), x16)
        grad_bias = grad.sum(dim=0) if ctx.needs_input_grad[2] else None
        return grad_x, grad_weight, grad_bias


def linear(layer: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)`` for [B, in] inputs; under ``bf16_products`` its three products (x Wᵀ,
    ∂x = G W, ∂W = Gᵀ x) in bf16, the bias and everything around them in float32."""
    if not products_in_bf16() or x.dim() != 2:
        return layer(x)
    return _BF16Linear.apply(x, layer.weight, layer.bias)


@dataclass
class AttentionInteraction:
    """What ``attention_interaction``'s backward needs from its forward: the inputs, the pair
    products [B * P, K], the hidden layer P Wᵀ [B * P, t] (overwritten by the backward) and
    α, q ⊙ α [B, P]."""

    table: torch.Tensor
    ids: torch.Tensor
    left: torch.Tensor
    right: torch.Tensor
    field_aware: bool
    weight: torch.Tensor
    bias: torch.Tensor
    score: torch.Tensor
    pair_weights: torch.Tensor | None
    pairs: torch.Tensor
    hidden: torch.Tensor
    alpha: torch.Tensor
    weights: torch.Tensor


def attention_interaction_forward(
    table, ids, left, right, field_aware: bool, weight, bias, score, pair_weights
) -> tuple[torch.Tensor, AttentionInteraction]:
    """The pooled vector Σ_r q_r α_r P_r [B, K] and what its backward needs (no autograd:
    ``attention_interaction`` wraps this, ``aoaffm.fast.steps`` calls it directly)."""
    pairs = native.pair_products(table, ids, left, right, field_aware)  # [B * P, K]
    hidden = matmul(pairs, weight.t())  # W P: [B * P, t]; the kernels add b
    alpha, weights, pooled = native.attention_forward(
        hidden, bias, pairs, score, pair_weights, ids.shape[0]
    )
    saved = AttentionInteraction(
        table, ids, left, right, field_aware, weight, bias, score, pair_weights,
        pairs, hidden, alpha, weights,
    )  # fmt: skip
    return pooled, saved


def attention_interaction_backward(saved: AttentionInteraction, grad, distinct=None):
    """Gradients of the pooled vector given ∂pooled [B, K]: (table rows ascending, their
    gradient block [R, K], ∂W, ∂b, ∂h, ∂q or None). ``distinct`` = ``native.unique_ids`` of
    the ids, when the caller has it already. Consumes ``saved.hidden``."""
    grad = grad.contiguous()
    grad_score, grad_bias, grad_q = native.attention_backward(
        saved.hidden, saved.bias, saved.pairs, saved.score, saved.pair_weights, saved.alpha, grad
    )
    masked = saved.hidden  # now ∂(W P + b), with h folded in
    grad_weight = matmul(masked.t(), saved.pairs)  # [t, K]
    grad_pairs = matmul(masked, saved.weight)  # [B * P, K]
    table, ids = saved.table, saved.ids
    if distinct is None:
        n_features = table.shape[0] // ids.shape[1] if saved.field_aware else table.shape[0]
        distinct = native.unique_ids(ids, n_features)
    features, local = distinct
    rows, block = native.pair_products_backward(
        table, ids, local, features, saved.left, saved.right, grad_pairs, saved.field_aware,
        saved.weights, grad,
    )  # fmt: skip
    return rows, block, grad_weight, grad_bias, grad_score, grad_q


class _AttentionInteraction(Function):
    @staticmethod
    def forward(ctx, table, weight, bias, score, pair_weights, ids, left, right, field_aware):
        pooled, ctx.saved = attention_interaction_forward(
            table, ids, left, right, field_aware, weight, bias, score, pair_weights
        )
        ctx.save_for_backward(table, weight, bias, score, pair_weights)
        return pooled

    @staticmethod
    def backward(ctx, grad):
        if ctx.saved is None:
            raise RuntimeError("attention_interaction's backward runs once (no retain_graph)")
        ctx.saved_tensors  # noqa: B018 - autograd's check that no input was changed in place
        saved, ctx.saved = ctx.saved, None
        rows, block, grad_weight, grad_bias, grad_score, grad_q = attention_interaction_backward(
            saved, grad
        )
        grad_table = _coalesced(rows, block, saved.table.shape)
        return grad_table, grad_weight, grad_bias, grad_score, grad_q, None, None, None, None


def attention_interaction(
    table, ids, left, right, field_aware: bool, weight, bias, score, pair_weights
) -> torch.Tensor:
    """Eq. 5's pooled vector Σ_r q_r α_r P_r [B, K] straight from the embedding table for one-hot
    rows (the pair products and the attention pooling in one autograd node): C++ passes for
    the products, the attention scores, softmax and pooling and the table's gradient rows,
    torch's matrix products for the attention layer (call only when ``native.usable``)."""
    return _AttentionInteraction.apply(
        table, weight, bias, score, pair_weights, ids, left, right, field_aware
    )


# --------------------------------------------------------------------------- deep models


class _LookupLinear(Function):
    @staticmethod
    def forward(ctx, table, weight, bias, ids, with_inputs):
        n, size = table.shape
        batch, n_fields = ids.shape
        # a key per (field, feature), field-major: each field's distinct features are one
        # contiguous, sorted segment of ``keys``
        keys = ids.long() + torch.arange(n_fields, device=ids.device) * n
        if native.usable(table, weight):
            keys, local = native.unique_ids(keys, n * n_fields)
        else:
            keys, local = torch.unique(keys, sorted=True, return_inverse=True)
        fields = keys.div(n, rounding_mode="floor")
        rows = keys - fields * n
        bounds = [0, *torch.bincount(fields, minlength=n_fields).cumsum(0).tolist()]
        vectors = table.index_select(0, rows)  # [U, K]: each distinct (field, feature) once
        vector_factors, weight_factors = _factors(vectors, weight)
        # z_u = W_f v_u for every distinct u of field f: U rows instead of B * F
        projected = vectors.new_empty(rows.numel(), weight.shape[0])
        for field in range(n_fields):
            start, end = bounds[field], bounds[field + 1]
            block = weight_factors[:, field * size : (field + 1) * size]
            _mm_into(vector_factors[start:end], block.t(), out=projected[start:end])
        # Σ_f z_{u(b, f)} + b: one bag of F rows per sample
        hidden = torch.nn.functional.embedding_bag(local, projected, mode="sum") + bias
        ctx.save_for_backward(vector_factors, weight_factors, rows, local)
        ctx.bounds, ctx.table_shape = bounds, table.shape
        if not with_inputs:
            return hidden
        inputs = vectors.index_select(0, local.reshape(-1)).view(batch, n_fields * size)
        return hidden, inputs

    @staticmethod
    def backward(ctx, grad_hidden, grad_inputs=None):
        vectors, weight, rows, local = ctx.saved_tensors  # as the forward's factors
        bounds, (n, size) = ctx.bounds, ctx.table_shape
        n_fields = local.shape[1]
        grad_hidden = grad_hidden.contiguous()
        # S_u = Σ over the samples b whose field f holds u of ∂L/∂h_b
        summed = grad_hidden.new_zeros(rows.numel(), grad_hidden.shape[1])
        for field in range(n_fields):
            summed.index_add_(0, local[:, field], grad_hidden)
        summed = summed.to(vectors.dtype)
        grad_weight = grad_hidden.new_empty(weight.shape)
        grad_vectors = grad_hidden.new_empty(vectors.shape)
        for field in range(n_fields):
            start, end = bounds[field], bounds[field + 1]
            columns = slice(field * size, (field + 1) * size)
            _mm_into(summed[start:end].t(), vectors[start:end], out=grad_weight[:, columns])
            _mm_into(summed[start:end], weight[:, columns], out=grad_vectors[start:end])
        if grad_inputs is not None:  # the inputs' own gradient (DeepCross's skip connection)
            grad_inputs = grad_inputs.reshape(-1, size)
            grad_vectors.index_add_(0, local.reshape(-1), grad_inputs)
        grad_bias = grad_hidden.sum(dim=0)
        shape = torch.Size((n, size))
        if rows.numel() < 2 or bool((rows[1:] > rows[:-1]).all()):  # fields hold distinct ids
            grad_table = _coalesced(rows, grad_vectors, shape)
        else:  # one feature in two fields: its rows are summed
            grad_table = torch.sparse_coo_tensor(rows.unsqueeze(0), grad_vectors, shape)
            grad_table = grad_table.coalesce()
        return grad_table, grad_weight, grad_bias, None, None


def lookup_linear(table, weight, bias, ids, *, with_inputs: bool = False):
    """``linear(table[ids].flatten(1))`` for one-hot rows [B, F] -> [B, H], the deep models'
    first layer, computed per distinct (field, feature) of the batch instead of per sample:
    W [e_1, ..., e_F] = Σ_f W_f e_f, and a feature met by many samples of a batch is projected
    once (Frappe at B = 128: ~320 distinct of 1,280 lookups, so all three products of the
    layer shrink ~4x). The backward sums each distinct row's gradient before its products and
    hands the table a coalesced sparse gradient. ``with_inputs``: also return the
    concatenated embeddings [B, F*K] (DeepCross adds them back in its residual unit)."""
    return _LookupLinear.apply(table, weight, bias, ids, with_inputs)
