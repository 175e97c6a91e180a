// Float32 vectors for the C++ kernels: `SimdVec` is AVX-512's or AVX2's, whichever the
// kernel is compiled for (-march=native), or one lane on other CPUs; `ScalarVec` is one lane
// everywhere, for head sizes the SIMD width does not divide. Loads widen bfloat16 and float16
// to float32; the lane sum and exp are fixed sequences, so a result never depends on where a
// value sits in memory.

#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <cmath>
#include <cstdint>

namespace sluice {

// exp(x) = 2^n * exp(r), n = round(x / ln 2), |r| <= ln 2 / 2, exp(r) by Cephes' degree-6
// polynomial: within 2 ulp of std::exp over the softmax's range (x <= 0).
constexpr float kLog2e = 1.44269504088896341f;
constexpr float kLn2High = 0.693359375f;
constexpr float kLn2Low = -2.12194440e-4f;
constexpr float kExpPoly[] = {1.9875691500e-4f, 1.3981999507e-3f, 8.3334519073e-3f,
                              4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f};
constexpr float kExpMin = -87.3f;  // below this exp underflows float32's normal range

struct ScalarVec {
  static constexpr int64_t size = 1;
  float v;

  static ScalarVec load(const float* p) { return {*p}; }
  static ScalarVec load(const c10::BFloat16* p) { return {static_cast<float>(*p)}; }
  static ScalarVec load(const c10::Half* p) { return {static_cast<float>(*p)}; }
  static ScalarVec splat(float x) { return {x}; }
  // `size` interleaved bfloat16 pairs (a, b): the a's and the b's, widened (a bfloat16 is the
  // high half of its float32; -65536 masks the high halves of 32-bit lanes).
  static void load_pairs(const c10::BFloat16* p, ScalarVec& even, ScalarVec& odd) {
    even = {static_cast<float>(p[0])};
    odd = {static_cast<float>(p[1])};
  }
  void store(float* p) const { *p = v; }
  void store(c10::BFloat16* p) const { *p = static_cast<c10::BFloat16>(v); }
  void store(c10::Half* p) const { *p = static_cast<c10::Half>(v); }
  ScalarVec operator+(ScalarVec o) const { return {v + o.v}; }
  ScalarVec operator-(ScalarVec o) const { return {v - o.v}; }
  ScalarVec operator/(ScalarVec o) const { return {v / o.v}; }
  ScalarVec operator*(ScalarVec o) const { return {v * o.v}; }
  ScalarVec max(ScalarVec o) const { return {v > o.v ? v : o.v}; }
  float sum() const { return v; }
  float max_lane() const { return v; }
  ScalarVec round() const { return {std::nearbyint(v)}; }
  ScalarVec times_two_to(ScalarVec n) const { return {std::ldexp(v, static_cast<int>(n.v))}; }
};

inline ScalarVec fma(ScalarVec a, ScalarVec b, ScalarVec c) {
  return {std::fma(a.v, b.v, c.v)};
}

#if defined(__AVX512F__)
#include <immintrin.h>

struct SimdVec {
  static constexpr int64_t size = 16;
  __m512 v;

  static SimdVec load(const float* p) { return {_mm512_loadu_ps(p)}; }
  static SimdVec load(const c10::BFloat16* p) {
    const __m256i half = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    return {_mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(half), 16))};
  }
  static SimdVec load(const c10::Half* p) {
    return {_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)))};
  }
  static SimdVec splat(float x) { return {_mm512_set1_ps(x)}; }
  static void load_pairs(const c10::BFloat16* p, SimdVec& even, SimdVec& odd) {
    const __m512i pairs = _mm512_loadu_si512(p);
    even = {_mm512_castsi512_ps(_mm512_slli_epi32(pairs, 16))};
    odd = {_mm512_castsi512_ps(_mm512_and_si512(pairs, _mm512_set1_epi32(-65536)))};
  }
  void store(float* p) const { _mm512_storeu_ps(p, v); }
  // Rounded to nearest even, as c10::BFloat16 rounds; a NaN stays a (quiet) NaN.
  void store(c10::BFloat16* p) const {
    const __m512i bits = _mm512_castps_si512(v);
    const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
    __m512i rounded = _mm512_add_epi32(bits, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7FFF)));
    const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    rounded = _mm512_mask_mov_epi32(rounded, nan, _mm512_set1_epi32(0x7FC00000));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p),
                        _mm512_cvtepi32_epi16(_mm512_srli_epi32(rounded, 16)));
  }
  void store(c10::Half* p) const {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p),
                        _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  SimdVec operator+(SimdVec o) const { return {_mm512_add_ps(v, o.v)}; }
  SimdVec operator-(SimdVec o) const { return {_mm512_sub_ps(v, o.v)}; }
  SimdVec operator/(SimdVec o) const { return {_mm512_div_ps(v, o.v)}; }
  SimdVec operator*(SimdVec o) const { return {_mm512_mul_ps(v, o.v)}; }
  SimdVec max(SimdVec o) const { return {_mm512_max_ps(v, o.v)}; }
  float sum() const { return _mm512_reduce_add_ps(v); }
  float max_lane() const { return _mm512_reduce_max_ps(v); }
  SimdVec round() const { return {_mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT)}; }
  SimdVec times_two_to(SimdVec n) const { return {_mm512_scalef_ps(v, n.v)}; }
};

inline SimdVec fma(SimdVec a, SimdVec b, SimdVec c) { return {_mm512_fmadd_ps(a.v, b.v, c.v)}; }

#elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>

struct SimdVec {
  static constexpr int64_t size = 8;
  __m256 v;

  static SimdVec load(const float* p) { return {_mm256_loadu_ps(p)}; }
  static SimdVec load(const c10::BFloat16* p) {
    const __m128i half = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return {_mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(half), 16))};
  }
  static SimdVec load(const c10::Half* p) {
    return {_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)))};
  }
  static SimdVec splat(float x) { return {_mm256_set1_ps(x)}; }
  static void load_pairs(const c10::BFloat16* p, SimdVec& even, SimdVec& odd) {
    const __m256i pairs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    even = {_mm256_castsi256_ps(_mm256_slli_epi32(pairs, 16))};
    odd = {_mm256_castsi256_ps(_mm256_and_si256(pairs, _mm256_set1_epi32(-65536)))};
  }
  void store(float* p) const { _mm256_storeu_ps(p, v); }
  // Rounded to nearest even, as c10::BFloat16 rounds; a NaN stays a (quiet) NaN.
  void store(c10::BFloat16* p) const {
    const __m256i bits = _mm256_castps_si256(v);
    const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
    __m256i rounded = _mm256_add_epi32(bits, _mm256_add_epi32(odd, _mm256_set1_epi32(0x7FFF)));
    const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    rounded = _mm256_blendv_epi8(rounded, _mm256_set1_epi32(0x7FC00000), nan);
    // packus narrows each 128-bit half on its own; the permute puts the halves side by side.
    const __m256i narrowed =
        _mm256_packus_epi32(_mm256_srli_epi32(rounded, 16), _mm256_setzero_si256());
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p),
                     _mm256_castsi256_si128(_mm256_permute4x64_epi64(narrowed, 0b1000)));
  }
  void store(c10::Half* p) const {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p),
                     _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  SimdVec operator+(SimdVec o) const { return {_mm256_add_ps(v, o.v)}; }
  SimdVec operator-(SimdVec o) const { return {_mm256_sub_ps(v, o.v)}; }
  SimdVec operator/(SimdVec o) const { return {_mm256_div_ps(v, o.v)}; }
  SimdVec operator*(SimdVec o) const { return {_mm256_mul_ps(v, o.v)}; }
  SimdVec max(SimdVec o) const { return {_mm256_max_ps(v, o.v)}; }
  float sum() const {
    __m128 quad = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    __m128 pair = _mm_add_ps(quad, _mm_movehl_ps(quad, quad));
    return _mm_cvtss_f32(_mm_add_ss(pair, _mm_movehdup_ps(pair)));
  }
  float max_lane() const {
    __m128 quad = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    __m128 pair = _mm_max_ps(quad, _mm_movehl_ps(quad, quad));
    return _mm_cvtss_f32(_mm_max_ss(pair, _mm_movehdup_ps(pair)));
  }
  SimdVec round() const {
    return {_mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)};
  }
  // n is integral and keeps the result in float32's normal range (exp clamps its input).
  SimdVec times_two_to(SimdVec n) const {
    const __m256i shift = _mm256_slli_epi32(_mm256_cvtps_epi32(n.v), 23);
    return {_mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(v), shift))};
  }
};

inline SimdVec fma(SimdVec a, SimdVec b, SimdVec c) { return {_mm256_fmadd_ps(a.v, b.v, c.v)}; }

#else

using SimdVec = ScalarVec;

#endif

template <typename Vec>
Vec exp(Vec x) {
  x = x.max(Vec::splat(kExpMin));
  const Vec n = (x * Vec::splat(kLog2e)).round();
  Vec r = fma(n, Vec::splat(-kLn2High), x);
  r = fma(n, Vec::splat(-kLn2Low), r);
  Vec poly = Vec::splat(kExpPoly[0]);
  for (int i = 1; i < 6; ++i) poly = fma(poly, r, Vec::splat(kExpPoly[i]));
  const Vec e = fma(poly, r * r, r + Vec::splat(1.f));
  return e.times_two_to(n);
}

}  // namespace sluice
