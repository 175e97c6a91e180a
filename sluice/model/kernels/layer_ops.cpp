// The small operators of a decoder layer, each one pass over its rows instead of the several
// torch operators (and intermediate tensors) that spell it out: at a single decode those cost
// more than the layer's attention.
//
// Each computes in float32 and rounds once to the tensor's dtype (the torch spelling rounds a
// bfloat16 result after every operator), and works a row at a time, so a row's result does not
// depend on the other rows. In float32 the rotary embedding and the SiLU product are the same
// bits as the torch spelling; RMSNorm sums its squares in another order.

#include <ATen/ATen.h>
#include <ATen/Dispatch_v2.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>
#include <tuple>

#include "vec.h"

namespace {

using sluice::ScalarVec;
using sluice::SimdVec;

constexpr int64_t kRowsPerTask = 16;  // rows a thread takes at a time: a row is ~1 us of work

// Apply f(vec, i) to i = 0, V::size, ... over [0, n): SIMD vectors, then one lane at a time.
template <typename F>
void for_each_lane_block(int64_t n, F&& f) {
  int64_t i = 0;
  for (; i + SimdVec::size <= n; i += SimdVec::size) f(SimdVec{}, i);
  for (; i < n; ++i) f(ScalarVec{}, i);
}

template <typename scalar_t>
void add_rms_norm_rows(const scalar_t* x, const scalar_t* residual, const scalar_t* weight,
                       float eps, int64_t rows, int64_t n, scalar_t* normed, scalar_t* sum) {
  at::parallel_for(0, rows, kRowsPerTask, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const scalar_t* in = x + row * n;
      if (residual != nullptr) {  // the new residual, rounded as the model's dtype holds it
        scalar_t* out = sum + row * n;
        for_each_lane_block(n, [&](auto vec, int64_t i) {
          using V = decltype(vec);
          (V::load(in + i) + V::load(residual + row * n + i)).store(out + i);
        });
        in = out;
      }
      SimdVec squares = SimdVec::splat(0.f);
      float tail = 0.f;
      for_each_lane_block(n, [&](auto vec, int64_t i) {
        using V = decltype(vec);
        const V value = V::load(in + i);
        if constexpr (V::size == SimdVec::size)
          squares = fma(value, value, squares);
        else
          tail += value.v * value.v;
      });
      const auto inverse = ScalarVec::splat(1.f / std::sqrt((squares.sum() + tail) / n + eps));
      for_each_lane_block(n, [&](auto vec, int64_t i) {
        using V = decltype(vec);
        ((V::load(in + i) * V::splat(inverse.v)) * V::load(weight + i)).store(normed + row * n + i);
      });
    }
  });
}

// x: [rows, n]; residual: [rows, n] or none; weight: [n]. Returns (RMSNorm(x + residual) *
// weight, x + residual); without a residual the second is x itself.
std::tuple<at::Tensor, at::Tensor> add_rms_norm(const at::Tensor& x,
                                                const std::optional<at::Tensor>& residual,
                                                const at::Tensor& weight, double eps) {
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous() && weight.dim() == 1 &&
                  weight.size(0) == x.size(1) && weight.scalar_type() == x.scalar_type(),
              "add_rms_norm: x must be a contiguous [rows, n] matrix, weight [n] of its dtype");
  if (residual.has_value())
    TORCH_CHECK(residual->sizes() == x.sizes() && residual->is_contiguous() &&
                    residual->scalar_type() == x.scalar_type(),
                "add_rms_norm: the residual must be contiguous, of x's shape and dtype");
  auto normed = at::empty_like(x);
  auto sum = residual.has_value() ? at::empty_like(x) : x;
  const auto weight_c = weight.contiguous();
  AT_DISPATCH_V2(x.scalar_type(), "add_rms_norm", AT_WRAP([&] {
    add_rms_norm_rows(x.data_ptr<scalar_t>(),
                      residual.has_value() ? residual->data_ptr<scalar_t>() : nullptr,
                      weight_c.data_ptr<scalar_t>(), static_cast<float>(eps), x.size(0),
                      x.size(1), normed.data_ptr<scalar_t>(), sum.data_ptr<scalar_t>());
  }), at::kFloat, at::kBFloat16, at::kHalf);
  return {normed, sum};
}

// One head of one token: x * cos + rotate_half(x) * sin, rotate_half(x) = (-x2, x1).
template <typename scalar_t>
void rotate_head(const scalar_t* x, const float* cos, const float* sin, int64_t half,
                 scalar_t* out) {
  for_each_lane_block(half, [&](auto vec, int64_t i) {
    using V = decltype(vec);
    const V first = V::load(x + i), second = V::load(x + half + i);
    (first * V::load(cos + i) - second * V::load(sin + i)).store(out + i);
    (second * V::load(cos + half + i) + first * V::load(sin + half + i)).store(out + half + i);
  });
}

// x: [tokens, heads, dim] (rows of any stride, dims contiguous) -> rotated, contiguous.
template <typename scalar_t>
void rotate_all(const at::Tensor& x, const int64_t* positions, const float* cos,
                const float* sin, at::Tensor& out) {
  const int64_t tokens = x.size(0), heads = x.size(1), dim = x.size(2);
  const int64_t token_stride = x.stride(0), head_stride = x.stride(1);
  const scalar_t* in = x.data_ptr<scalar_t>();
  scalar_t* rotated = out.data_ptr<scalar_t>();
  at::parallel_for(0, tokens, kRowsPerTask, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t)
      for (int64_t h = 0; h < heads; ++h)
        rotate_head(in + t * token_stride + h * head_stride, cos + positions[t] * dim,
                    sin + positions[t] * dim, dim / 2, rotated + (t * heads + h) * dim);
  });
}

// q: [tokens, heads, dim], k: [tokens, kv_heads, dim]; positions: [tokens] int64; cos, sin:
// [max_positions, dim] float32. Returns the rotated q and k, contiguous.
std::tuple<at::Tensor, at::Tensor> rotary_embedding(const at::Tensor& q, const at::Tensor& k,
                                                    const at::Tensor& positions,
                                                    const at::Tensor& cos,
                                                    const at::Tensor& sin) {
  TORCH_CHECK(q.dim() == 3 && k.dim() == 3 && q.size(0) == k.size(0) && q.size(2) == k.size(2) &&
                  q.stride(2) == 1 && k.stride(2) == 1 && q.size(2) % 2 == 0 &&
                  k.scalar_type() == q.scalar_type(),
              "rotary_embedding: q and k must be [tokens, heads, even dim] of one dtype, dims "
              "contiguous");
  TORCH_CHECK(positions.dim() == 1 && positions.size(0) == q.size(0) &&
                  positions.scalar_type() == at::kLong,
              "rotary_embedding: one int64 position per token");
  TORCH_CHECK(cos.scalar_type() == at::kFloat && cos.sizes() == sin.sizes() && cos.dim() == 2 &&
                  cos.size(1) == q.size(2) && cos.is_contiguous() && sin.is_contiguous(),
              "rotary_embedding: cos and sin must be contiguous float32 [positions, dim]");
  const auto positions_c = positions.contiguous();
  const int64_t* position_data = positions_c.data_ptr<int64_t>();
  for (int64_t t = 0; t < positions_c.size(0); ++t)
    TORCH_CHECK(position_data[t] >= 0 && position_data[t] < cos.size(0),
                "rotary_embedding: position ", position_data[t], " is past the table");
  auto q_out = at::empty(q.sizes(), q.options());
  auto k_out = at::empty(k.sizes(), k.options());
  AT_DISPATCH_V2(q.scalar_type(), "rotary_embedding", AT_WRAP([&] {
    rotate_all<scalar_t>(q, position_data, cos.data_ptr<float>(), sin.data_ptr<float>(), q_out);
    rotate_all<scalar_t>(k, position_data, cos.data_ptr<float>(), sin.data_ptr<float>(), k_out);
  }), at::kFloat, at::kBFloat16, at::kHalf);
  return {q_out, k_out};
}

// gate_up: [rows, 2 * n], gate then up. Returns silu(gate) * up, [rows, n].
at::Tensor silu_and_mul(const at::Tensor& gate_up) {
  TORCH_CHECK(gate_up.dim() == 2 && gate_up.is_contiguous() && gate_up.size(1) % 2 == 0,
              "silu_and_mul: gate_up must be a contiguous [rows, 2 * n] matrix");
  const int64_t rows = gate_up.size(0), n = gate_up.size(1) / 2;
  auto out = at::empty({rows, n}, gate_up.options());
  AT_DISPATCH_V2(gate_up.scalar_type(), "silu_and_mul", AT_WRAP([&] {
    const scalar_t* in = gate_up.data_ptr<scalar_t>();
    scalar_t* product = out.data_ptr<scalar_t>();
    at::parallel_for(0, rows, kRowsPerTask, [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row)
        for_each_lane_block(n, [&](auto vec, int64_t i) {
          using V = decltype(vec);
          const V gate = V::load(in + row * 2 * n + i), up = V::load(in + row * 2 * n + n + i);
          // exp's argument held below float32's overflow: silu is ~0 there either way.
          const V exp_minus = sluice::exp(V::splat(0.f) - gate.max(V::splat(-88.f)));
          (gate / (V::splat(1.f) + exp_minus) * up).store(product + row * n + i);
        });
    });
  }), at::kFloat, at::kBFloat16, at::kHalf);
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(TORCH_EXTENSION_NAME, m) {
  m.def("add_rms_norm(Tensor x, Tensor? residual, Tensor weight, float eps) -> (Tensor, Tensor)");
  m.impl("add_rms_norm", c10::DispatchKey::CPU, &add_rms_norm);
  m.def(
      "rotary_embedding(Tensor q, Tensor k, Tensor positions, Tensor cos, Tensor sin) -> "
      "(Tensor, Tensor)");
  m.impl("rotary_embedding", c10::DispatchKey::CPU, &rotary_embedding);
  m.def("silu_and_mul(Tensor gate_up) -> Tensor");
  m.impl("silu_and_mul", c10::DispatchKey::CPU, &silu_and_mul);
}
