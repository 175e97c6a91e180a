// Dense linear layers over weights packed once at load, one kernel for every row count.
//
// A packed weight is the [out_features, in_features] matrix cut into panels of kPanel output
// features (the last one padded with zeros), each panel laid out input feature by input
// feature, so a panel streams through memory in one pass: float32 as [panels, K, kPanel],
// bfloat16 as [panels, K / 2, kPanel, 2], pairs of inputs side by side as AVX-512 BF16's dot
// instruction reads them. (model/kernel_packing.py does the packing.)
//
// Every output is one accumulator summed over the inputs in order, whatever the number of rows
// or the rows beside it, so a token gets the same bits alone or in a batch of any size. Rows
// are taken kRows at a time so that a panel read from memory serves many rows; one row is a
// matrix-vector product that streams the weights at the memory's read bandwidth.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "vec.h"

namespace {

using sluice::SimdVec;

constexpr int64_t kPanel = 32;
constexpr int64_t kVecs = kPanel / SimdVec::size;  // vectors across a panel
// Rows per pass: as many accumulators as the registers hold beside a panel's vectors.
constexpr int64_t kRows = SimdVec::size == 16 ? 8 : (SimdVec::size == 8 ? 2 : 4);

// out[r][0:kPanel] = x[r] . panel, float32 weights and inputs.
template <int64_t Rows>
void panel_float(const float* x, int64_t x_stride, const float* panel, int64_t K, float* out) {
  SimdVec acc[Rows][kVecs];
  for (int64_t r = 0; r < Rows; ++r)
    for (int64_t v = 0; v < kVecs; ++v) acc[r][v] = SimdVec::splat(0.f);
  for (int64_t k = 0; k < K; ++k) {
    SimdVec w[kVecs];
    for (int64_t v = 0; v < kVecs; ++v)
      w[v] = SimdVec::load(panel + k * kPanel + v * SimdVec::size);
    for (int64_t r = 0; r < Rows; ++r) {
      const SimdVec input = SimdVec::splat(x[r * x_stride + k]);
      for (int64_t v = 0; v < kVecs; ++v) acc[r][v] = fma(w[v], input, acc[r][v]);
    }
  }
  for (int64_t r = 0; r < Rows; ++r)
    for (int64_t v = 0; v < kVecs; ++v) acc[r][v].store(out + r * kPanel + v * SimdVec::size);
}

// The same over bfloat16 weights widened to float32 (exactly), float32 inputs: the path of
// CPUs without bf16 dot instructions, and of float32 models whose weights are bfloat16.
template <int64_t Rows>
void panel_widened(const float* x, int64_t x_stride, const c10::BFloat16* panel, int64_t K,
                   float* out) {
  SimdVec acc[Rows][kVecs];
  for (int64_t r = 0; r < Rows; ++r)
    for (int64_t v = 0; v < kVecs; ++v) acc[r][v] = SimdVec::splat(0.f);
  for (int64_t k = 0; k < K; k += 2) {
    SimdVec even[kVecs], odd[kVecs];
    for (int64_t v = 0; v < kVecs; ++v)
      SimdVec::load_pairs(panel + (k * kPanel) + 2 * v * SimdVec::size, even[v], odd[v]);
    for (int64_t r = 0; r < Rows; ++r) {
      const SimdVec first = SimdVec::splat(x[r * x_stride + k]);
      const SimdVec second = SimdVec::splat(x[r * x_stride + k + 1]);
      for (int64_t v = 0; v < kVecs; ++v) {
        acc[r][v] = fma(even[v], first, acc[r][v]);
        acc[r][v] = fma(odd[v], second, acc[r][v]);
      }
    }
  }
  for (int64_t r = 0; r < Rows; ++r)
    for (int64_t v = 0; v < kVecs; ++v) acc[r][v].store(out + r * kPanel + v * SimdVec::size);
}

#if defined(__AVX512BF16__)
// bfloat16 weights and inputs through the bf16 dot instruction (each pair's two products,
// exact in float32, added to the accumulator), float32 accumulators.
template <int64_t Rows>
void panel_dot_bf16(const c10::BFloat16* x, int64_t x_stride, const c10::BFloat16* panel,
                    int64_t K, float* out) {
  __m512 acc[Rows][2];
  for (int64_t r = 0; r < Rows; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
  for (int64_t k = 0; k < K; k += 2) {
    const __m512bh w0 = (__m512bh)_mm512_loadu_si512(panel + k * kPanel);
    const __m512bh w1 = (__m512bh)_mm512_loadu_si512(panel + k * kPanel + 32);
    for (int64_t r = 0; r < Rows; ++r) {
      int32_t pair;
      std::memcpy(&pair, x + r * x_stride + k, sizeof(pair));
      const __m512bh input = (__m512bh)_mm512_set1_epi32(pair);
      acc[r][0] = _mm512_dpbf16_ps(acc[r][0], w0, input);
      acc[r][1] = _mm512_dpbf16_ps(acc[r][1], w1, input);
    }
  }
  for (int64_t r = 0; r < Rows; ++r) {
    _mm512_storeu_ps(out + r * kPanel, acc[r][0]);
    _mm512_storeu_ps(out + r * kPanel + 16, acc[r][1]);
  }
}
#endif

// Calls f with `rows` (1 to 8) as a compile-time constant.
template <typename F>
void with_rows(int64_t rows, F&& f) {
  switch (rows) {
    case 1: return f(std::integral_constant<int64_t, 1>{});
    case 2: return f(std::integral_constant<int64_t, 2>{});
    case 3: return f(std::integral_constant<int64_t, 3>{});
    case 4: return f(std::integral_constant<int64_t, 4>{});
    case 5: return f(std::integral_constant<int64_t, 5>{});
    case 6: return f(std::integral_constant<int64_t, 6>{});
    case 7: return f(std::integral_constant<int64_t, 7>{});
    case 8: return f(std::integral_constant<int64_t, 8>{});
  }
  TORCH_CHECK(false, "packed_linear: no kernel for ", rows, " rows");
}

// out = x . W^T (+ bias), the panels shared out among the threads, each panel computed for
// kRows rows at a time and written out (bias added, rounded to Out) from a float32 tile.
template <typename In, typename W, typename Out, typename PanelFn>
void linear(const In* x, const W* packed, const float* bias, int64_t rows, int64_t K,
            int64_t out_features, Out* out, PanelFn panel_fn) {
  const int64_t panels = (out_features + kPanel - 1) / kPanel;
  at::parallel_for(0, panels, 1, [&](int64_t begin, int64_t end) {
    float tile[kRows * kPanel];
    for (int64_t p = begin; p < end; ++p) {
      const W* panel = packed + p * K * kPanel;
      const int64_t first = p * kPanel, width = std::min(kPanel, out_features - first);
      for (int64_t row = 0; row < rows; row += kRows) {
        const int64_t count = std::min(kRows, rows - row);
        with_rows(count, [&](auto n) { panel_fn(n, x + row * K, K, panel, K, tile); });
        for (int64_t r = 0; r < count; ++r) {
          Out* out_row = out + (row + r) * out_features + first;
          const float* sums = tile + r * kPanel;
          for (int64_t j = 0; j < width; ++j)
            out_row[j] = static_cast<Out>(bias != nullptr ? sums[j] + bias[first + j] : sums[j]);
        }
      }
    }
  });
}

}  // namespace

// x: [rows, K], float32 or bfloat16, contiguous; packed: float32 [panels, K, kPanel] or
// bfloat16 [panels, K / 2, kPanel, 2]; bias: [out_features] or none. Returns [rows,
// out_features] in x's dtype. float32 inputs over float32 or bfloat16 weights compute in
// float32; bfloat16 inputs need bfloat16 weights.
at::Tensor packed_linear(const at::Tensor& x, const at::Tensor& packed, int64_t out_features,
                         const std::optional<at::Tensor>& bias) {
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous() && packed.is_contiguous(),
              "packed_linear: x must be a contiguous [rows, in_features] matrix");
  const int64_t K = x.size(1), panels = packed.size(0);
  const bool float_weights = packed.scalar_type() == at::kFloat;
  TORCH_CHECK(float_weights ? packed.dim() == 3 && packed.size(1) == K && packed.size(2) == kPanel
                            : packed.scalar_type() == at::kBFloat16 && packed.dim() == 4 &&
                                  packed.size(1) * 2 == K && packed.size(2) == kPanel &&
                                  packed.size(3) == 2,
              "packed_linear: the packed weight's layout does not fit ", K, " in_features");
  TORCH_CHECK(out_features > (panels - 1) * kPanel && out_features <= panels * kPanel,
              "packed_linear: ", panels, " panels cannot hold ", out_features, " out_features");
  TORCH_CHECK(x.scalar_type() == at::kFloat || (x.scalar_type() == at::kBFloat16 && !float_weights),
              "packed_linear: inputs must be float32, or bfloat16 over bfloat16 weights");
  at::Tensor bias_float;
  if (bias.has_value()) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == out_features,
                "packed_linear: bias must have out_features elements");
    bias_float = bias->to(at::kFloat).contiguous();
  }
  const float* bias_data = bias.has_value() ? bias_float.data_ptr<float>() : nullptr;
  auto out = at::empty({x.size(0), out_features}, x.options());
  const int64_t rows = x.size(0);
  if (rows == 0) return out;

  if (float_weights) {
    linear(x.data_ptr<float>(), packed.data_ptr<float>(), bias_data, rows, K, out_features,
           out.data_ptr<float>(), [](auto n, auto... args) { panel_float<n()>(args...); });
    return out;
  }
  const auto* weights = packed.data_ptr<c10::BFloat16>();
  if (x.scalar_type() == at::kFloat) {
    linear(x.data_ptr<float>(), weights, bias_data, rows, K, out_features, out.data_ptr<float>(),
           [](auto n, auto... args) { panel_widened<n()>(args...); });
    return out;
  }
#if defined(__AVX512BF16__)
  linear(x.data_ptr<c10::BFloat16>(), weights, bias_data, rows, K, out_features,
         out.data_ptr<c10::BFloat16>(), [](auto n, auto... args) { panel_dot_bf16<n()>(args...); });
#else
  const auto widened = x.to(at::kFloat);
  linear(widened.data_ptr<float>(), weights, bias_data, rows, K, out_features,
         out.data_ptr<c10::BFloat16>(), [](auto n, auto... args) { panel_widened<n()>(args...); });
#endif
  return out;
}

TORCH_LIBRARY_FRAGMENT(TORCH_EXTENSION_NAME, m) {
  m.def("packed_linear(Tensor x, Tensor packed, int out_features, Tensor? bias) -> Tensor");
  m.impl("packed_linear", c10::DispatchKey::CPU, &packed_linear);
}
