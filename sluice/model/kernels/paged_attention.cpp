// Attention over the paged KV cache, read where it lies: no gathered copy of any context.
//
// Every query row (a decode, or one token of a prompt chunk) is one kind of work: it attends
// over the first `context_len` keys of its request, causally, with the query heads that share
// a KV head taken together so each key and value is read once for all of them. A work item is
// one (row, KV head); its arithmetic depends on nothing but its own row and keys, so a token
// gets the same bits alone, among other rows, decoding or inside a prompt chunk of any size.
//
// Numerics follow the reference backends: float32 scores (accumulated in float32 from the
// cache dtype), scaled, a float32 softmax, a float32 weighted sum of the values, then one
// rounding to the query dtype.

#include <ATen/ATen.h>
#include <ATen/Dispatch_v2.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <limits>
#include <utility>
#include <vector>

#include "vec.h"

namespace {

using sluice::ScalarVec;
using sluice::SimdVec;

struct Shapes {
  int64_t num_heads, num_kv_heads, group, head_dim, slots_per_head, max_blocks, block_size;
};

// A work item's float32 buffers, kept by each thread from item to item.
template <typename scalar_t>
struct Scratch {
  std::vector<float> queries, scores;  // [group, head_dim], [group, padded context]
  std::vector<const scalar_t*> keys, values;  // the context's rows in the cache
};

// Row `row`'s query heads of KV head `kv_head`, over the first `context_len` keys of the
// request whose block table is `block_table`.
template <typename Vec, typename scalar_t>
void attend(const scalar_t* q, const scalar_t* key_cache, const scalar_t* value_cache,
            const int32_t* block_table, int64_t context_len, const Shapes& s, float scale,
            int64_t row, int64_t kv_head, Scratch<scalar_t>& scratch, scalar_t* out) {
  const int64_t group = s.group, head_dim = s.head_dim, n = context_len;
  const int64_t padded = (n + Vec::size - 1) / Vec::size * Vec::size;
  scratch.queries.resize(group * head_dim);
  scratch.scores.resize(group * padded);
  scratch.keys.resize(n);
  scratch.values.resize(n);
  float* queries = scratch.queries.data();
  const int64_t first_head = kv_head * group;
  const scalar_t* row_q = q + (row * s.num_heads + first_head) * head_dim;
  for (int64_t i = 0; i < group * head_dim; ++i) queries[i] = static_cast<float>(row_q[i]);
  for (int64_t position = 0; position < n; ++position) {
    const int64_t block = block_table[position / s.block_size];
    const int64_t slot =
        kv_head * s.slots_per_head + block * s.block_size + position % s.block_size;
    scratch.keys[position] = key_cache + slot * head_dim;
    scratch.values[position] = value_cache + slot * head_dim;
  }

  // Scores: each key is read once for the group's heads.
  float* scores = scratch.scores.data();
  for (int64_t position = 0; position < n; ++position) {
    const scalar_t* key = scratch.keys[position];
    for (int64_t g = 0; g < group; ++g) {
      const float* query = queries + g * head_dim;
      Vec sum = Vec::load(query) * Vec::load(key);
      for (int64_t d = Vec::size; d < head_dim; d += Vec::size)
        sum = fma(Vec::load(query + d), Vec::load(key + d), sum);
      scores[g * padded + position] = sum.sum() * scale;
    }
  }

  // Softmax per head; the padding past the context is -inf going in and 0 coming out.
  for (int64_t g = 0; g < group; ++g) {
    float* head = scores + g * padded;
    std::fill(head + n, head + padded, -std::numeric_limits<float>::infinity());
    Vec max = Vec::load(head);
    for (int64_t i = Vec::size; i < padded; i += Vec::size) max = max.max(Vec::load(head + i));
    const Vec shift = Vec::splat(-max.max_lane());
    for (int64_t i = 0; i < padded; i += Vec::size)
      sluice::exp(Vec::load(head + i) + shift).store(head + i);
    std::fill(head + n, head + padded, 0.f);
    Vec total = Vec::splat(0.f);
    for (int64_t i = 0; i < padded; i += Vec::size) total = total + Vec::load(head + i);
    const Vec inverse = Vec::splat(1.f / total.sum());
    for (int64_t i = 0; i < padded; i += Vec::size)
      (Vec::load(head + i) * inverse).store(head + i);
  }

  // Weighted sum of the values, a head and a vector of its dims at a time, over four
  // interleaved accumulators so that consecutive keys do not wait on each other's adds.
  scalar_t* row_out = out + (row * s.num_heads + first_head) * head_dim;
  float sums[Vec::size];
  for (int64_t g = 0; g < group; ++g) {
    const float* probs = scores + g * padded;
    for (int64_t d = 0; d < head_dim; d += Vec::size) {
      Vec acc[4] = {Vec::splat(0.f), Vec::splat(0.f), Vec::splat(0.f), Vec::splat(0.f)};
      int64_t position = 0;
      for (; position + 4 <= n; position += 4)
        for (int k = 0; k < 4; ++k)
          acc[k] = fma(Vec::splat(probs[position + k]),
                       Vec::load(scratch.values[position + k] + d), acc[k]);
      for (; position < n; ++position)
        acc[0] =
            fma(Vec::splat(probs[position]), Vec::load(scratch.values[position] + d), acc[0]);
      ((acc[0] + acc[1]) + (acc[2] + acc[3])).store(sums);
      for (int64_t i = 0; i < Vec::size; ++i)
        row_out[g * head_dim + d + i] = static_cast<scalar_t>(sums[i]);
    }
  }
}

template <typename Vec, typename scalar_t>
void attend_all(const scalar_t* q, const scalar_t* keys, const scalar_t* values,
                const int32_t* tables, const int32_t* requests, const int32_t* lengths,
                const Shapes& shapes, float scale, int64_t num_rows, scalar_t* out) {
  const int64_t num_items = num_rows * shapes.num_kv_heads;
  // Rows differ in cost (a prompt's last token sees every key, its first one key), so each
  // thread takes the next item when it is done rather than a fixed share.
  std::atomic<int64_t> next{0};
  at::parallel_for(0, at::get_num_threads(), 1, [&](int64_t, int64_t) {
    Scratch<scalar_t> scratch;
    for (int64_t item = next++; item < num_items; item = next++) {
      const int64_t row = item / shapes.num_kv_heads, kv_head = item % shapes.num_kv_heads;
      const int32_t* table = tables + requests[row] * shapes.max_blocks;
      attend<Vec>(q, keys, values, table, lengths[row], shapes, scale, row, kv_head, scratch,
                  out);
    }
  });
}

}  // namespace

// q: [rows, heads, dim]; key_cache, value_cache: [kv_heads, slots, dim];
// block_tables: [requests, max_blocks] int32; row_requests, context_lens: [rows] int32, each
// row's request (its block table) and the number of keys it sees. Returns [rows, heads, dim].
at::Tensor paged_attention(const at::Tensor& q, const at::Tensor& key_cache,
                           const at::Tensor& value_cache, const at::Tensor& block_tables,
                           const at::Tensor& row_requests, const at::Tensor& context_lens,
                           int64_t block_size, double scale) {
  TORCH_CHECK(q.dim() == 3 && key_cache.dim() == 3 && key_cache.sizes() == value_cache.sizes(),
              "paged_attention: q must be [rows, heads, dim], the caches [kv_heads, slots, dim]");
  TORCH_CHECK(q.is_contiguous() && key_cache.is_contiguous() && value_cache.is_contiguous(),
              "paged_attention: q and the caches must be contiguous");
  TORCH_CHECK(key_cache.scalar_type() == q.scalar_type() &&
                  value_cache.scalar_type() == q.scalar_type(),
              "paged_attention: q and the caches must share a dtype");
  TORCH_CHECK(q.size(2) == key_cache.size(2) && q.size(1) % key_cache.size(0) == 0,
              "paged_attention: head sizes differ, or query heads are not a multiple of KV heads");
  TORCH_CHECK(block_tables.scalar_type() == at::kInt && row_requests.scalar_type() == at::kInt &&
                  context_lens.scalar_type() == at::kInt,
              "paged_attention: block tables, row requests and context lengths must be int32");
  TORCH_CHECK(row_requests.numel() == q.size(0) && context_lens.numel() == q.size(0),
              "paged_attention: one request and one context length per row");
  const Shapes shapes{q.size(1),         key_cache.size(0), q.size(1) / key_cache.size(0),
                      q.size(2),         key_cache.size(1), block_tables.size(1),
                      block_size};
  const int32_t* requests = row_requests.data_ptr<int32_t>();
  const int32_t* lengths = context_lens.data_ptr<int32_t>();
  for (int64_t row = 0; row < q.size(0); ++row)
    TORCH_CHECK(requests[row] >= 0 && requests[row] < block_tables.size(0) && lengths[row] > 0 &&
                    lengths[row] <= shapes.max_blocks * block_size,
                "paged_attention: row ", row, " names a request or context its table lacks");
  const auto tables = block_tables.contiguous();
  const int32_t* table_data = tables.data_ptr<int32_t>();
  const int64_t num_blocks = shapes.slots_per_head / block_size;
  for (int64_t i = 0; i < tables.numel(); ++i)
    TORCH_CHECK(table_data[i] >= 0 && table_data[i] < num_blocks,
                "paged_attention: block ", table_data[i], " is outside the cache");
  auto out = at::empty_like(q);
  AT_DISPATCH_V2(q.scalar_type(), "paged_attention", AT_WRAP([&] {
    const auto run = shapes.head_dim % SimdVec::size == 0 ? attend_all<SimdVec, scalar_t>
                                                          : attend_all<ScalarVec, scalar_t>;
    run(q.data_ptr<scalar_t>(), key_cache.data_ptr<scalar_t>(), value_cache.data_ptr<scalar_t>(),
        table_data, requests, lengths, shapes, static_cast<float>(scale), q.size(0),
        out.data_ptr<scalar_t>());
  }), at::kFloat, at::kBFloat16, at::kHalf);
  return out;
}

// k, v: [tokens, kv_heads, dim] (rows of any stride, dims contiguous); kv_cache: [2, kv_heads,
// slots, dim]; slot_mapping: [tokens] int64. Stores each token's key and value at its slot.
void write_kv(const at::Tensor& k, const at::Tensor& v, const at::Tensor& kv_cache,
              const at::Tensor& slot_mapping) {
  TORCH_CHECK(kv_cache.dim() == 4 && kv_cache.size(0) == 2 && kv_cache.is_contiguous(),
              "write_kv: the cache must be a contiguous [2, kv_heads, slots, dim] tensor");
  TORCH_CHECK(k.sizes() == v.sizes() && k.dim() == 3 && k.size(1) == kv_cache.size(1) &&
                  k.size(2) == kv_cache.size(3) && k.stride(2) == 1 && v.stride(2) == 1,
              "write_kv: k and v must be [tokens, kv_heads, dim] with contiguous dims");
  TORCH_CHECK(k.scalar_type() == kv_cache.scalar_type() &&
                  v.scalar_type() == kv_cache.scalar_type(),
              "write_kv: k, v and the cache must share a dtype");
  TORCH_CHECK(slot_mapping.dim() == 1 && slot_mapping.size(0) == k.size(0) &&
                  slot_mapping.scalar_type() == at::kLong,
              "write_kv: one int64 slot per token");
  const auto slots = slot_mapping.contiguous();
  const int64_t* slot_data = slots.data_ptr<int64_t>();
  const int64_t tokens = k.size(0), heads = k.size(1), num_slots = kv_cache.size(2);
  for (int64_t t = 0; t < tokens; ++t)
    TORCH_CHECK(slot_data[t] >= 0 && slot_data[t] < num_slots, "write_kv: slot ",
                slot_data[t], " is outside the cache");
  const int64_t row_bytes = k.size(2) * k.element_size();
  auto* cache = static_cast<char*>(kv_cache.data_ptr());
  const int64_t half_bytes = heads * num_slots * row_bytes;  // the keys, then the values
  for (const auto& [source, offset] : {std::pair{&k, int64_t{0}}, std::pair{&v, half_bytes}}) {
    const auto* rows = static_cast<const char*>(source->data_ptr());
    const int64_t token_stride = source->stride(0) * k.element_size();
    const int64_t head_stride = source->stride(1) * k.element_size();
    for (int64_t t = 0; t < tokens; ++t)
      for (int64_t h = 0; h < heads; ++h)
        std::memcpy(cache + offset + (h * num_slots + slot_data[t]) * row_bytes,
                    rows + t * token_stride + h * head_stride, row_bytes);
  }
}

// An operator in a namespace of the build's own name (builds for different instruction sets
// may share a process), so the profiler shows it by name.
TORCH_LIBRARY(TORCH_EXTENSION_NAME, m) {
  m.def(
      "paged_attention(Tensor q, Tensor key_cache, Tensor value_cache, Tensor block_tables, "
      "Tensor row_requests, Tensor context_lens, int block_size, float scale) -> Tensor");
  m.impl("paged_attention", c10::DispatchKey::CPU, &paged_attention);
  m.def("write_kv(Tensor k, Tensor v, Tensor(a!) kv_cache, Tensor slot_mapping) -> ()");
  m.impl("write_kv", c10::DispatchKey::CPU, &write_kv);
}
