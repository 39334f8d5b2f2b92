// Fused CPU kernels for the training hot path: float32 tables, int64 ids, OpenMP threads.
//
// Built and loaded by aoaffm/models/native.py (plain C ABI, called through ctypes); each
// kernel replaces a chain of PyTorch operations in aoaffm/models/kernels.py, and the tests
// compare it with that chain (tests/test_models_native.py). Why it pays: on the CPU a
// training step of these models is dozens of small operations, each a dispatch plus an
// OpenMP fork/join and a pass over memory; here one call makes one pass.
//
// Compiled with -ffp-contract=off: a * b + c rounds twice unless written as std::fma, so
// that the Adagrad update rounds exactly as torch.optim.Adagrad does (bit-for-bit equal).
// Gradient rows of the embedding tables are computed whole by one thread each (or, for FM,
// each thread owns a slice of K of every row), summing in sample order: no two threads
// write the same float, and these results do not depend on the thread count. (Dense
// gradients of the attention layer are per-thread partial sums, added in thread order.)

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <omp.h>
#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#endif

#include <vector>

using idx = int64_t;

namespace {

// The slice [begin, end) of the K components that thread `thread` of `threads` owns: whole
// cache lines (16 floats) each, so threads never share a line.
inline void slice_of(idx size, int thread, int threads, idx& begin, idx& end) {
  idx chunk = ((size + threads - 1) / threads + 15) / 16 * 16;
  begin = std::min(size, chunk * thread);
  end = std::min(size, begin + chunk);
}

// Ask for a row's cache lines ahead of use: rows are 1 KB jumps through tables of tens of
// MB, too far apart for the hardware prefetcher to guess.
inline void prefetch_row(const float* row, idx size, bool for_write = false) {
  for (idx k = 0; k < size; k += 16) {
    if (for_write) {
      __builtin_prefetch(row + k, 1);
    } else {
      __builtin_prefetch(row + k, 0);
    }
  }
}

// The field-aware row of the sample's feature in field a for interactions with field c
// (v_{i_a, f_c}), in the flat [n * F, K] table.
inline const float* field_aware_row(const float* table, const idx* id, idx a, idx c, idx fields,
                                    idx size) {
  return table + (id[a] * fields + c) * size;
}

// Prefetch both field-aware rows of the sample's pair (a, c), the next pair's while this one is
// computed: those rows are random 1 KB jumps through the table.
inline void prefetch_pair(const float* table, const idx* id, idx a, idx c, idx fields, idx size) {
  prefetch_row(field_aware_row(table, id, a, c, fields, size), size);
  prefetch_row(field_aware_row(table, id, c, a, fields, size), size);
}

// Index of the first id outside [0, limit), or -1.
idx first_bad_id(const idx* ids, idx count, idx limit) {
  for (idx i = 0; i < count; ++i) {
    if (ids[i] < 0 || ids[i] >= limit) return i;
  }
  return -1;
}

// Σ_k a[k] · b[k] (relu: Σ_k a[k] · max(b[k], 0)) in 16 interleaved partial sums: a fixed
// order of additions that the compiler turns into vector instructions.
template <bool relu>
inline float dot_impl(const float* __restrict__ a, const float* __restrict__ b, idx size) {
  float lanes[16] = {0.0f};
  idx k = 0;
  for (; k + 16 <= size; k += 16) {
    for (int j = 0; j < 16; ++j) {
      const float x = relu ? (b[k + j] > 0.0f ? b[k + j] : 0.0f) : b[k + j];
      lanes[j] += a[k + j] * x;
    }
  }
  float sum = 0.0f;
  for (; k < size; ++k) sum += a[k] * (relu ? (b[k] > 0.0f ? b[k] : 0.0f) : b[k]);
  for (int j = 0; j < 16; ++j) sum += lanes[j];
  return sum;
}

inline float dot(const float* a, const float* b, idx size) { return dot_impl<false>(a, b, size); }

// Σ_t h[t] · max(x[t] + c[t], 0) in 16 interleaved partial sums (the attention score).
inline float relu_score(const float* __restrict__ h, const float* __restrict__ x,
                        const float* __restrict__ c, idx size) {
  float lanes[16] = {0.0f};
  idx t = 0;
  for (; t + 16 <= size; t += 16) {
    for (int j = 0; j < 16; ++j) {
      const float pre = x[t + j] + c[t + j];
      lanes[j] += h[t + j] * (pre > 0.0f ? pre : 0.0f);
    }
  }
  float sum = 0.0f;
  for (; t < size; ++t) {
    const float pre = x[t] + c[t];
    sum += h[t] * (pre > 0.0f ? pre : 0.0f);
  }
  for (int j = 0; j < 16; ++j) sum += lanes[j];
  return sum;
}

// What both table-gradient kernels need to compute each gradient row whole: the pair index
// of every field pair (a, f), the occurrences (b * F + a) of each distinct feature in sample
// order (a counting sort of `local`), and where each feature's rows start in the output.
// Field-aware, feature u has a row (u, f) for every field f at which some occurrence of u is
// NOT (a one-hot feature's own field gets no row); otherwise one row (when F > 1).
struct RowPlan {
  std::vector<idx> pair_of, start, occurrences, first_row;
  std::vector<idx> sample_of, field_of;  // occurrence o is field field_of[o] of sample_of[o]

  RowPlan(const idx* local, idx n_unique, idx batch, idx fields, const idx* left,
          const idx* right, idx pairs, bool field_aware)
      : pair_of(fields * fields, -1),
        start(n_unique + 1, 0),
        occurrences(batch * fields),
        first_row(n_unique + 1, 0) {
    for (idx p = 0; p < pairs; ++p) {
      pair_of[left[p] * fields + right[p]] = p;
      pair_of[right[p] * fields + left[p]] = p;
    }
    const idx count = batch * fields;
    for (idx i = 0; i < count; ++i) ++start[local[i] + 1];
    for (idx u = 0; u < n_unique; ++u) start[u + 1] += start[u];
    std::vector<idx> next(start.begin(), start.end() - 1);
    for (idx i = 0; i < count; ++i) occurrences[next[local[i]]++] = i;
    sample_of.resize(count);  // integer division once here, not in the kernels' inner loops
    field_of.resize(count);
    for (idx o = 0; o < count; ++o) {
      sample_of[o] = occurrences[o] / fields;
      field_of[o] = occurrences[o] % fields;
    }
    std::vector<uint8_t> seen(fields);
    for (idx u = 0; u < n_unique; ++u) {
      idx rows = fields > 1 ? 1 : 0;
      if (field_aware) {
        std::fill(seen.begin(), seen.end(), 0);
        idx distinct = 0;
        for (idx o = start[u]; o < start[u + 1]; ++o) {
          uint8_t& c = seen[field_of[o]];
          distinct += (c == 0);
          c = 1;
        }
        rows = 0;
        for (idx f = 0; f < fields; ++f) rows += (distinct > 1 || (distinct == 1 && !seen[f]));
      }
      first_row[u + 1] = first_row[u] + rows;
    }
  }
};

}  // namespace

extern "C" {

int aoaffm_native_abi() { return 1; }

// Flush subnormal floats to zero (FTZ and DAZ in MXCSR) in the calling thread and in each
// thread of its OpenMP team, the pool torch's own parallel products run on. MXCSR is per
// thread and torch.set_flush_denormal sets only the caller's. Returns 0 where unsupported.
int flush_denormals(int threads) {
#if defined(__x86_64__) || defined(__i386__)
  int done = 0;
#pragma omp parallel num_threads(threads) reduction(+ : done)
  {
    _mm_setcsr(_mm_getcsr() | 0x8040);
    done += 1;
  }
  _mm_setcsr(_mm_getcsr() | 0x8040);
  return done;
#else
  (void)threads;
  return 0;
#endif
}

// --------------------------------------------------------------------------- Adagrad

// For each of the n unique rows r[i]: sum += g², w += -lr · g / (√sum + eps). The roundings
// of torch.optim.Adagrad's sparse step: g² rounded, sum + g², √ then + eps, the quotient,
// and the weight update as one fused multiply-add (torch's add with alpha).
// Returns 0, having changed nothing, when the rows are not strictly increasing (a
// gradient that still needs coalescing), else 1.
int adagrad_rows(float* weight, float* sum, const idx* rows, const float* grad, idx n,
                 idx size, float neg_lr, float eps, int threads) {
  for (idx i = 1; i < n; ++i) {
    if (rows[i] <= rows[i - 1]) return 0;
  }
#pragma omp parallel for num_threads(threads) schedule(static) if (n * size >= 8192)
  for (idx i = 0; i < n; ++i) {
    float* w = weight + rows[i] * size;
    float* s = sum + rows[i] * size;
    const float* g = grad + i * size;
    if (i + 1 < n) {
      prefetch_row(weight + rows[i + 1] * size, size, true);
      prefetch_row(sum + rows[i + 1] * size, size, true);
    }
    for (idx k = 0; k < size; ++k) {
      const float square = g[k] * g[k];
      const float total = s[k] + square;
      s[k] = total;
      w[k] = std::fma(g[k] / (std::sqrt(total) + eps), neg_lr, w[k]);
    }
  }
  return 1;
}

// Dense Adagrad over `count` contiguous floats: the same arithmetic as adagrad_rows.
void adagrad_dense(float* weight, float* sum, const float* grad, idx count, float neg_lr,
                   float eps, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static) if (count >= 65536)
  for (idx k = 0; k < count; ++k) {
    const float square = grad[k] * grad[k];
    const float total = sum[k] + square;
    sum[k] = total;
    weight[k] = std::fma(grad[k] / (std::sqrt(total) + eps), neg_lr, weight[k]);
  }
}

// adagrad_dense on n tensors in one call (the attention layer's W, b, h, p, Q and the bias).
void adagrad_dense_many(idx n, float* const* weights, float* const* sums,
                        const float* const* grads, const idx* counts, const float* neg_lr,
                        const float* eps, int threads) {
  for (idx i = 0; i < n; ++i) {
    adagrad_dense(weights[i], sums[i], grads[i], counts[i], neg_lr[i], eps[i], threads);
  }
}

// --------------------------------------------------------------------------- dropout

// Dropout's mask: out[i] = 1 / keep with probability keep, else 0. The uniform number of
// element i is a splitmix64 hash of (seed, i) — a counter-based generator, so the mask depends
// on the seed alone, not on the thread count, and costs ~1 ns an element (torch's CPU
// bernoulli_ draws from a sequential Mersenne twister at ~20 ns).
void dropout_mask(float* out, idx n, uint64_t seed, float keep, int threads) {
  const float scale = 1.0f / keep;
#pragma omp parallel for num_threads(threads) schedule(static) if (n >= 65536)
  for (idx i = 0; i < n; ++i) {
    uint64_t z = seed + 0x9E3779B97F4A7C15ull * static_cast<uint64_t>(i + 1);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    const float uniform = static_cast<float>(z >> 40) * (1.0f / 16777216.0f);  // 24 bits
    out[i] = uniform < keep ? scale : 0.0f;
  }
}

// --------------------------------------------------------------------------- distinct ids

// The distinct values of ids[0..count) in ascending order (into `features`, their number
// returned) and each id's position among them (into `local`). `mark` holds n ints, all -1
// on entry and again on exit. O(count + U log U) instead of a sort of all ids. Returns
// -(i + 1) when ids[i] is outside [0, n).
idx unique_ids(const idx* ids, idx count, idx n, int32_t* mark, idx* features, idx* local) {
  idx n_unique = 0;
  for (idx i = 0; i < count; ++i) {
    const idx id = ids[i];
    if (id < 0 || id >= n) {
      for (idx u = 0; u < n_unique; ++u) mark[features[u]] = -1;
      return -(i + 1);
    }
    if (mark[id] < 0) {
      mark[id] = 0;
      features[n_unique++] = id;
    }
  }
  std::sort(features, features + n_unique);
  for (idx u = 0; u < n_unique; ++u) mark[features[u]] = static_cast<int32_t>(u);
  for (idx i = 0; i < count; ++i) local[i] = mark[ids[i]];
  for (idx u = 0; u < n_unique; ++u) mark[features[u]] = -1;
  return n_unique;
}

// --------------------------------------------------------------------------- linear part

// linear[b] = Σ_f w[ids[b, f]]; -1 or the first bad id's position.
idx linear_forward(const float* weights, const idx* ids, idx n_rows, idx batch, idx fields,
                   float* linear) {
  const idx bad = first_bad_id(ids, batch * fields, n_rows);
  if (bad >= 0) return bad;
  for (idx b = 0; b < batch; ++b) {
    float sum = weights[ids[b * fields]];
    for (idx f = 1; f < fields; ++f) sum += weights[ids[b * fields + f]];
    linear[b] = sum;
  }
  return -1;
}

// block[local[b, f]] += grad[b] over a zeroed block of n_unique rows.
void linear_backward(const idx* local, const float* grad, idx batch, idx fields, idx n_unique,
                     float* block) {
  std::fill(block, block + n_unique, 0.0f);
  for (idx i = 0; i < batch * fields; ++i) block[local[i]] += grad[i / fields];
}

// --------------------------------------------------------------------------- FM

// total[b] = Σ_f v[ids[b, f]], interaction[b] = ½(total² - Σ_f v²), linear[b] = Σ_f w[ids].
// Returns -1, or the position of the first id outside the table (nothing written then).
idx fm_forward(const float* table, const float* linear_table, const idx* ids, idx n_rows,
               idx batch, idx fields, idx size, float* total, float* interaction, float* linear,
               int threads) {
  const idx bad = first_bad_id(ids, batch * fields, n_rows);
  if (bad >= 0) return bad;
#pragma omp parallel for num_threads(threads) schedule(static) if (batch * fields * size >= 16384)
  for (idx b = 0; b < batch; ++b) {
    const idx* id = ids + b * fields;
    float* t = total + b * size;
    float* q = interaction + b * size;
    const float* v = table + id[0] * size;
    for (idx k = 0; k < size; ++k) {
      t[k] = v[k];
      q[k] = v[k] * v[k];
    }
    float lin = linear_table[id[0]];
    for (idx f = 1; f < fields; ++f) {
      v = table + id[f] * size;
      for (idx k = 0; k < size; ++k) {
        t[k] += v[k];
        q[k] += v[k] * v[k];
      }
      lin += linear_table[id[f]];
    }
    for (idx k = 0; k < size; ++k) q[k] = 0.5f * (t[k] * t[k] - q[k]);
    linear[b] = lin;
  }
  return -1;
}

// block[local[b, f]] += (total[b] - v[ids[b, f]]) ⊙ grad[b] for every lookup (∂ of FM's
// interaction is Σ e - e_f), and linear_block[local[b, f]] += grad_linear[b]; both blocks
// are set to zero first. grad or grad_linear may be null (no gradient reached them).
void fm_backward(const float* table, const idx* ids, const idx* local, const float* total,
                 const float* grad, const float* grad_linear, idx batch, idx fields, idx size,
                 idx n_block, float* block, float* linear_block, int threads) {
  if (grad_linear != nullptr) {
    linear_backward(local, grad_linear, batch, fields, n_block, linear_block);
  } else {
    std::fill(linear_block, linear_block + n_block, 0.0f);
  }
#pragma omp parallel num_threads(threads) if (size >= 32)
  {
    idx begin, end;
    slice_of(size, omp_get_thread_num(), omp_get_num_threads(), begin, end);
    for (idx u = 0; u < n_block; ++u) std::fill(block + u * size + begin, block + u * size + end, 0.0f);
    if (grad != nullptr) {
      for (idx i = 0; i < batch * fields; ++i) {
        const idx b = i / fields;
        const float* v = table + ids[i] * size;
        const float* t = total + b * size;
        const float* g = grad + b * size;
        float* dst = block + local[i] * size;
        for (idx k = begin; k < end; ++k) dst[k] += (t[k] - v[k]) * g[k];
      }
    }
  }
}

// --------------------------------------------------------------------------- FFM

// dots[b, p] = <v_{i_a, f_c}, v_{i_c, f_a}> for the pairs (a, c) = (left[p], right[p]), from
// the flat field-aware table (row id * F + f); with sum_pairs, out[b] = Σ_p dots[b, p] (in
// pair order) instead. Returns -1 or the first bad id's position.
idx ffm_forward(const float* table, const idx* ids, const idx* left, const idx* right,
                idx n_features, idx batch, idx fields, idx pairs, idx size, int sum_pairs,
                float* out, int threads) {
  const idx bad = first_bad_id(ids, batch * fields, n_features);
  if (bad >= 0) return bad;
#pragma omp parallel for num_threads(threads) schedule(static) if (batch * pairs * size >= 16384)
  for (idx b = 0; b < batch; ++b) {
    const idx* id = ids + b * fields;
    float sum = 0.0f;
    for (idx p = 0; p < pairs; ++p) {
      const idx a = left[p], c = right[p];
      if (p + 1 < pairs) prefetch_pair(table, id, left[p + 1], right[p + 1], fields, size);
      const float d = dot(field_aware_row(table, id, a, c, fields, size),
                          field_aware_row(table, id, c, a, fields, size), size);
      if (sum_pairs) {
        sum += d;
      } else {
        out[b * pairs + p] = d;
      }
    }
    if (sum_pairs) out[b] = sum;
  }
  return -1;
}

// FFM's table gradient, one row at a time. Row (u, f) of distinct feature u (id features[u])
// gets, from every occurrence of u at a field a != f in sample b, g[b, pair(a, f)] times the
// partner v_{ids[b, f], a}. Rows are computed whole in one thread (a feature's occurrences
// listed in sample order, so the sum's order is fixed) and written once, without a zeroed
// block to add into; rows with no occurrence at another field (a feature's own field in
// one-hot data) get no entry. Writes rows_out (table rows, ascending) and block [R, K];
// returns R. `local` holds each id's position among the distinct features. The pair
// (b, p)'s gradient is grad[b * grad_sample + p * grad_pair] (grad_pair = 0: one per sample).
idx ffm_backward(const float* table, const idx* ids, const idx* local, const idx* features,
                 idx n_unique, const idx* left, const idx* right, const float* grad,
                 idx grad_sample, idx grad_pair, idx batch, idx fields, idx pairs, idx size,
                 idx* rows_out, float* block, int threads) {
  const RowPlan plan(local, n_unique, batch, fields, left, right, pairs, true);
  const idx *start = plan.start.data(), *sample_of = plan.sample_of.data();
  const idx *field_of = plan.field_of.data(), *pair_of = plan.pair_of.data();
  const idx* first_row = plan.first_row.data();
#pragma omp parallel for num_threads(threads) schedule(dynamic, 8) if (n_unique * size >= 4096)
  for (idx u = 0; u < n_unique; ++u) {
    idx r = first_row[u];
    for (idx f = 0; f < fields; ++f) {
      float* __restrict__ out = block + r * size;
      bool any = false;
      if (f + 1 < fields) {  // the next row's partners, while this one is summed
        for (idx o = start[u]; o < start[u + 1]; ++o) {
          const idx b = sample_of[o], a = field_of[o];
          prefetch_row(table + (ids[b * fields + f + 1] * fields + a) * size, size);
        }
      }
      for (idx o = start[u]; o < start[u + 1]; ++o) {
        const idx b = sample_of[o], a = field_of[o];
        if (a == f) continue;
        const float g = grad[b * grad_sample + pair_of[a * fields + f] * grad_pair];
        const float* __restrict__ partner = table + (ids[b * fields + f] * fields + a) * size;
        if (!any) {
          for (idx k = 0; k < size; ++k) out[k] = g * partner[k];
          any = true;
        } else {
          for (idx k = 0; k < size; ++k) out[k] += g * partner[k];
        }
      }
      if (any) rows_out[r++] = features[u] * fields + f;
    }
  }
  return first_row[n_unique];
}

// --------------------------------------------------------------------------- attention

// pairs[b * P + p] = v_a ⊙ v_c for the pairs (a, c) = (left[p], right[p]): with field_aware,
// v_a = v_{i_a, f_c} and v_c = v_{i_c, f_a} from the flat field-aware table (row id * F + f),
// else the feature vectors v_{i_a}, v_{i_c}. Returns -1 or the first bad id's position.
idx pair_products(const float* table, const idx* ids, const idx* left, const idx* right,
                  idx n_features, idx batch, idx fields, idx pairs, idx size, int field_aware,
                  float* out, int threads) {
  const idx bad = first_bad_id(ids, batch * fields, n_features);
  if (bad >= 0) return bad;
#pragma omp parallel for num_threads(threads) schedule(static) if (batch * pairs * size >= 16384)
  for (idx b = 0; b < batch; ++b) {
    const idx* id = ids + b * fields;
    for (idx p = 0; p < pairs; ++p) {
      const idx a = left[p], c = right[p];
      if (field_aware && p + 1 < pairs) {  // feature rows repeat within a sample; these don't
        prefetch_pair(table, id, left[p + 1], right[p + 1], fields, size);
      }
      const float* __restrict__ va =
          field_aware ? field_aware_row(table, id, a, c, fields, size) : table + id[a] * size;
      const float* __restrict__ vc =
          field_aware ? field_aware_row(table, id, c, a, fields, size) : table + id[c] * size;
      float* __restrict__ o = out + (b * pairs + p) * size;
      for (idx k = 0; k < size; ++k) o[k] = va[k] * vc[k];
    }
  }
  return -1;
}

// Eq. 4/5 after the attention layer's matrix product: hidden = W P_r [B * P, t] (its bias b
// is added here, sparing the matrix product a pass that copies b into its output). Per
// sample: s_r = h · ReLU(hidden_r + b), α = softmax(s), weights = q ⊙ α (or α),
// pooled = Σ_r weights_r P_r.
void attention_forward(const float* hidden, const float* bias, const float* pairs,
                       const float* score, const float* pair_weights, idx batch, idx n_pairs,
                       idx size, idx att, float* alpha, float* weights, float* pooled,
                       int threads) {
#pragma omp parallel num_threads(threads) if (batch * n_pairs * (size + att) >= 32768)
  {
    std::vector<float> s(n_pairs);
#pragma omp for schedule(static)
    for (idx b = 0; b < batch; ++b) {
      float top = -INFINITY;
      for (idx p = 0; p < n_pairs; ++p) {
        const float sum = relu_score(score, hidden + (b * n_pairs + p) * att, bias, att);
        s[p] = sum;
        top = std::max(top, sum);
      }
      float total = 0.0f;
      for (idx p = 0; p < n_pairs; ++p) {
        s[p] = std::exp(s[p] - top);
        total += s[p];
      }
      float* __restrict__ out = pooled + b * size;
      std::fill(out, out + size, 0.0f);
      for (idx p = 0; p < n_pairs; ++p) {
        // A weight below the smallest normal float is set to 0: denormal arithmetic costs
        // ~100 cycles an operation on x86, and such a pair changes nothing visible.
        const float a = s[p] / total;
        const float w = pair_weights != nullptr ? a * pair_weights[p] : a;
        const bool visible = a >= FLT_MIN && std::fabs(w) >= FLT_MIN;
        alpha[b * n_pairs + p] = visible ? a : 0.0f;
        weights[b * n_pairs + p] = visible ? w : 0.0f;
        if (!visible) continue;
        const float* __restrict__ x = pairs + (b * n_pairs + p) * size;
        for (idx k = 0; k < size; ++k) out[k] += w * x[k];
      }
    }
  }
}

// The backward of attention_forward given g = ∂pooled [B, K]: overwrites hidden with
// ∂(W P_r + b) = 1[hidden + b > 0] ⊙ h ∂s_r (the factor both remaining products need), and
// writes ∂h, ∂b ([t]) and ∂q ([P], when pair_weights is not null). With
// ∂weights_r = P_r · g_b: ∂q_r = Σ_b ∂weights_r α_r, ∂α_r = q_r ∂weights_r, and softmax's
// ∂s_r = α_r (∂α_r - Σ α ∂α). Per-thread partial sums of ∂h, ∂b, ∂q are added in thread order.
void attention_backward(float* hidden, const float* bias, const float* pairs,
                        const float* score, const float* pair_weights, const float* alpha,
                        const float* grad,
                        idx batch, idx n_pairs, idx size, idx att, float* grad_score,
                        float* grad_bias, float* grad_pair_weights, int threads) {
  const int team = (batch * n_pairs * (size + att) >= 32768) ? threads : 1;
  std::vector<float> partial(static_cast<size_t>(team) * (2 * att + n_pairs), 0.0f);
#pragma omp parallel num_threads(team)
  {
    float* const mine = partial.data() + omp_get_thread_num() * (2 * att + n_pairs);
    float* const d_score = mine;
    float* const d_bias = mine + att;
    float* const d_q = mine + 2 * att;
    std::vector<float> d_alpha(n_pairs), d_s(n_pairs);
#pragma omp for schedule(static)
    for (idx b = 0; b < batch; ++b) {
      const float* __restrict__ g = grad + b * size;
      float weighted = 0.0f;
      for (idx p = 0; p < n_pairs; ++p) {
        const float d_w = dot(pairs + (b * n_pairs + p) * size, g, size);
        const float a = alpha[b * n_pairs + p];
        if (pair_weights != nullptr) {
          d_q[p] += d_w * a;
          d_alpha[p] = d_w * pair_weights[p];
        } else {
          d_alpha[p] = d_w;
        }
        weighted += a * d_alpha[p];
      }
      for (idx p = 0; p < n_pairs; ++p) {
        const float a = alpha[b * n_pairs + p];
        d_s[p] = a * (d_alpha[p] - weighted);
      }
      for (idx p = 0; p < n_pairs; ++p) {
        float* __restrict__ x = hidden + (b * n_pairs + p) * att;
        const float ds = std::fabs(d_s[p]) >= FLT_MIN ? d_s[p] : 0.0f;  // no denormals
        for (idx t = 0; t < att; ++t) {
          const float pre = x[t] + bias[t];
          const bool on = pre > 0.0f;
          d_score[t] += on ? ds * pre : 0.0f;
          const float m = on ? ds * score[t] : 0.0f;
          d_bias[t] += m;
          x[t] = m;
        }
      }
    }
  }
  const idx width = 2 * att + n_pairs;
  for (idx j = 0; j < att; ++j) {
    grad_score[j] = 0.0f;
    grad_bias[j] = 0.0f;
  }
  if (grad_pair_weights != nullptr) std::fill(grad_pair_weights, grad_pair_weights + n_pairs, 0.0f);
  for (int thread = 0; thread < team; ++thread) {
    const float* part = partial.data() + thread * width;
    for (idx j = 0; j < att; ++j) {
      grad_score[j] += part[j];
      grad_bias[j] += part[att + j];
    }
    if (grad_pair_weights != nullptr) {
      for (idx p = 0; p < n_pairs; ++p) grad_pair_weights[p] += part[2 * att + p];
    }
  }
}

// The embedding table's gradient of the pair products (pair_products' backward), one row at a
// time (as ffm_backward). The gradient of pair (b, p)'s product is d = grad_pairs[b, p], plus
// weights[b, p] g_b for the attention models (the pooling's part; weights and grad null
// otherwise). Field-aware: row (u, f) sums, over the occurrences (b, a) of u with a != f,
// d(b, pair(a, f)) ⊙ v_{ids[b, f], a}. Plain: row u sums, over its occurrences (b, a) and every
// other field f, d(b, pair(a, f)) ⊙ v_{ids[b, f]}. Writes rows_out (ascending) and block
// [R, K]; returns R.
idx pair_products_backward(const float* table, const idx* ids, const idx* local,
                           const idx* features, idx n_unique, const idx* left, const idx* right,
                           const float* grad_pairs, const float* weights, const float* grad,
                           idx batch, idx fields, idx pairs, idx size, int field_aware,
                           idx* rows_out, float* block, int threads) {
  const RowPlan plan(local, n_unique, batch, fields, left, right, pairs, field_aware);
  const bool pooled = weights != nullptr && grad != nullptr;
  const idx *start = plan.start.data(), *sample_of = plan.sample_of.data();
  const idx *field_of = plan.field_of.data(), *pair_of = plan.pair_of.data();
  const idx* first_row = plan.first_row.data();
#pragma omp parallel for num_threads(threads) schedule(dynamic, 8) if (n_unique * size >= 4096)
  for (idx u = 0; u < n_unique; ++u) {
    idx r = first_row[u];
    const idx n_out = field_aware ? fields : 1;
    for (idx f_out = 0; f_out < n_out; ++f_out) {
      float* __restrict__ out = block + r * size;
      bool any = false;
      if (field_aware && f_out + 1 < fields) {  // the next row's partners (as ffm_backward)
        for (idx o = start[u]; o < start[u + 1]; ++o) {
          const idx b = sample_of[o], a = field_of[o];
          prefetch_row(table + (ids[b * fields + f_out + 1] * fields + a) * size, size);
        }
      }
      for (idx o = start[u]; o < start[u + 1]; ++o) {
        const idx b = sample_of[o], a = field_of[o];
        for (idx f = field_aware ? f_out : 0; f < (field_aware ? f_out + 1 : fields); ++f) {
          if (f == a) continue;
          const idx p = pair_of[a * fields + f];
          const float* __restrict__ d = grad_pairs + (b * pairs + p) * size;
          const float* __restrict__ partner =
              table + (field_aware ? ids[b * fields + f] * fields + a : ids[b * fields + f]) * size;
          if (pooled) {
            const float w = weights[b * pairs + p];
            const float* __restrict__ g = grad + b * size;
            if (!any) {
              for (idx k = 0; k < size; ++k) out[k] = (d[k] + w * g[k]) * partner[k];
            } else {
              for (idx k = 0; k < size; ++k) out[k] += (d[k] + w * g[k]) * partner[k];
            }
          } else if (!any) {
            for (idx k = 0; k < size; ++k) out[k] = d[k] * partner[k];
          } else {
            for (idx k = 0; k < size; ++k) out[k] += d[k] * partner[k];
          }
          any = true;
        }
      }
      if (any) rows_out[r++] = field_aware ? features[u] * fields + f_out : features[u];
    }
  }
  return first_row[n_unique];
}

// --------------------------------------------------------------------------- FFM step

// One whole training step of FFM (no dropout, no batch norm, one-hot rows) with Adagrad:
// ŷ = (bias + Σ w) + Σ_pairs <v, v>, g = ŷ - y (the gradient of ½ Σ (ŷ - y)²), the table's
// and the linear part's gradient rows and the bias gradient Σ g, then Adagrad on each. The
// same kernels as the separate forward / backward / optimizer calls, so the same numbers
// (the bias gradient is summed in sample order, torch's sum may add in another order);
// what it saves is the framework between them, most of a step at batch 128. `mark` is the
// n_features marks unique_ids needs. Returns -1 or the first bad id's position; *loss gets
// ½ Σ (ŷ - y)².
idx ffm_train_step(float* table, float* table_sum, float* linear, float* linear_sum, float* bias,
                   float* bias_sum, const idx* ids, const float* labels, const idx* left,
                   const idx* right, idx n_features, idx batch, idx fields, idx pairs, idx size,
                   const float* neg_lr, const float* eps, int32_t* mark, float* loss,
                   int threads) {
  const idx bad = first_bad_id(ids, batch * fields, n_features);
  if (bad >= 0) return bad;
  static thread_local std::vector<float> pred, lin, grad, block, linear_block;
  static thread_local std::vector<idx> features, local, rows;
  pred.resize(batch);
  lin.resize(batch);
  grad.resize(batch);
  ffm_forward(table, ids, left, right, n_features, batch, fields, pairs, size, 1, pred.data(),
              threads);
  linear_forward(linear, ids, n_features, batch, fields, lin.data());
  float half_sse = 0.0f, bias_grad = 0.0f;
  for (idx b = 0; b < batch; ++b) {
    grad[b] = ((bias[0] + lin[b]) + pred[b]) - labels[b];
    half_sse += grad[b] * grad[b];
    bias_grad += grad[b];
  }
  *loss = 0.5f * half_sse;
  features.resize(batch * fields);
  local.resize(batch * fields);
  const idx n_unique = unique_ids(ids, batch * fields, n_features, mark, features.data(),
                                  local.data());
  rows.resize(n_unique * fields);
  block.resize(n_unique * fields * size);
  linear_block.resize(n_unique);
  const idx n_rows = ffm_backward(table, ids, local.data(), features.data(), n_unique, left,
                                  right, grad.data(), 1, 0, batch, fields, pairs, size,
                                  rows.data(), block.data(), threads);
  linear_backward(local.data(), grad.data(), batch, fields, n_unique, linear_block.data());
  adagrad_rows(table, table_sum, rows.data(), block.data(), n_rows, size, neg_lr[0], eps[0],
               threads);
  adagrad_rows(linear, linear_sum, features.data(), linear_block.data(), n_unique, 1,
               neg_lr[1], eps[1], threads);
  adagrad_dense(bias, bias_sum, &bias_grad, 1, neg_lr[2], eps[2], threads);
  return -1;
}

}  // extern "C"
