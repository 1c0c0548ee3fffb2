// Scalar reference versions of the arithmetic that the f32 kernel levels share: dot products
// summed in 16 lanes, erf, GELU and exp. Every SIMD level computes the same operations in the
// same order as one of these references, so tests can compare them bit for bit.
//
// Two arithmetic families exist. Levels with FMA instructions (AVX2, AVX-512) round once per
// multiply-add (Fused = true). The portable levels (scalar, xsimd on SSE2, NEON or WebAssembly)
// round the product and the sum separately (Fused = false), because SSE2 and WebAssembly SIMD
// have no FMA and std::fma is slow in software there.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace blip::kernels::detail {

// Number of partial sums of a dot product: element k goes to lane k % 16, each lane sums its
// elements in increasing k, and the lanes are then added in a fixed tree (reduce_lanes16).
// The lane count is fixed for every level and every number of rows, so a row's result never
// depends on the level's register width or on the other rows of the call.
inline constexpr int kDotLanes = 16;

// GCC contracts a * b + c into one fused multiply-add, even across statements, when the
// target has FMA instructions and -ffp-contract=fast is in effect, which is GCC's default for
// C++ (seen with GCC 12): always on ARM64, and on x86 with -mfma. The unfused arithmetic passes
// its products through rounded_product() so that it rounds them on every target. Clang's
// default contracts only within one expression, and each unfused product here is its own
// statement.
#if defined(__GNUC__) && !defined(__clang__) && defined(__FP_FAST_FMAF)
#define BLIP_ROUND_PRODUCTS 1
#else
#define BLIP_ROUND_PRODUCTS 0
#endif

// Returns `product` unchanged, as a value that the compiler cannot fuse into a later addition.
// T is float or a SIMD register type. The empty asm statement hides the value from the
// optimizer, and it keeps a loop around it from being vectorized. GCC 12's
// __builtin_assoc_barrier would allow vectorization, but the vectorizer drops it, so the
// vectorized loop is contracted again.
// NOTE: GCC on other architectures with FMA instructions still contracts the unfused arithmetic.
template <class T>
inline T rounded_product(T product) {
#if BLIP_ROUND_PRODUCTS && defined(__aarch64__)
    __asm__("" : "+w"(product));  // a SIMD and floating-point register
#elif BLIP_ROUND_PRODUCTS && (defined(__x86_64__) || defined(__i386__))
    __asm__("" : "+x"(product));  // an SSE or AVX register
#endif
    return product;
}

// c + a * b, rounded once (Fused) or with the product rounded first.
template <bool Fused>
inline float multiply_add(float a, float b, float c) {
    if constexpr (Fused) {
        return std::fma(a, b, c);
    } else {
        const float product = rounded_product(a * b);
        return c + product;
    }
}

// Sums 16 lanes by halving: lane i + lane i + 8, then i + 4, then i + 2, then the last two.
// This is the order of the 512-bit reduction (high 256 bits + low 256 bits, and so on).
inline float reduce_lanes16(const float* lanes) {
    float s1[8];
    for (int i = 0; i < 8; ++i) s1[i] = lanes[i] + lanes[i + 8];
    float s2[4];
    for (int i = 0; i < 4; ++i) s2[i] = s1[i] + s1[i + 4];
    const float s3_0 = s2[0] + s2[2];
    const float s3_1 = s2[1] + s2[3];
    return s3_0 + s3_1;
}

// Adds the products of `count` elements to 16 lanes: element k to lane k % 16. Lanes past
// the last whole group of 16 receive zero products, as the masked SIMD tails do.
template <bool Fused>
inline void accumulate_lanes(const float* x, const float* w, std::int64_t count, float* lanes) {
    const std::int64_t padded = (count + kDotLanes - 1) / kDotLanes * kDotLanes;
    for (std::int64_t k = 0; k < padded; ++k) {
        const float a = k < count ? x[k] : 0.0f;
        const float b = k < count ? w[k] : 0.0f;
        lanes[k % kDotLanes] = multiply_add<Fused>(a, b, lanes[k % kDotLanes]);
    }
}

// Dot product of `count` elements in the 16-lane order.
template <bool Fused>
inline float dot_reference(const float* x, const float* w, std::int64_t count) {
    float lanes[kDotLanes] = {};
    accumulate_lanes<Fused>(x, w, count, lanes);
    return reduce_lanes16(lanes);
}

// ----- erf and GELU ---------------------------------------------------------------------------
//
// erf(z) for |z| in [0, 4) is a degree-7 polynomial in t = |z| - center on 8 intervals of width
// 0.5 (center = interval start + 0.25); erf(|z|) rounds to 1 in float from about 3.92 on.
// The coefficients are Chebyshev fits to the exact erf, rounded to float. Measured against
// double-precision erf over [0, 4): at most 6.4e-8 absolute error, about one float ulp near 1.
// GELU only needs erf's absolute error, because it multiplies 1 + erf by x.

inline constexpr int kErfIntervals = 8;
inline constexpr int kErfDegree = 7;
inline constexpr float kErfLimit = 4.0f;

// kErfCoefficients[power][interval].
inline constexpr float kErfCoefficients[kErfDegree + 1][kErfIntervals] = {
    {2.763263881e-01f, 7.111556530e-01f, 9.229001403e-01f, 9.866716862e-01f, 9.985373020e-01f, 9.998993874e-01f,
     9.999957085e-01f, 9.999998808e-01f},
    {1.060014129e+00f, 6.429310441e-01f, 2.365211248e-01f, 5.277499557e-02f, 7.142319344e-03f, 5.862772814e-04f,
     2.918901191e-05f, 8.814288321e-07f},
    {-2.650029659e-01f, -4.821981490e-01f, -2.956517339e-01f, -9.235620499e-02f, -1.607015729e-02f,
     -1.612267457e-03f, -9.486933413e-05f, -3.306070994e-06f},
    {-3.091704845e-01f, 2.678835019e-02f, 1.675358862e-01f, 9.015738964e-02f, 2.172451280e-02f, 2.760380274e-03f,
     1.958126231e-04f, 7.970327715e-06f},
    {1.269345582e-01f, 1.506756246e-01f, -6.132031791e-03f, -4.810552672e-02f, -1.908825710e-02f,
     -3.257710487e-03f, -2.861693793e-04f, -1.378540219e-05f},
    {8.003626764e-02f, -5.321708694e-02f, -4.718655348e-02f, 6.618472282e-03f, 1.066005975e-02f, 2.756291069e-03f,
     3.136288433e-04f, 1.833005626e-05f},
    {-3.934072331e-02f, -2.658281103e-02f, 2.059769258e-02f, 9.049499407e-03f, -2.779557370e-03f,
     -1.667851233e-03f, -2.737590694e-04f, -2.069251059e-05f},
    {-1.580335014e-02f, 1.788546517e-02f, 3.745116992e-03f, -5.933092441e-03f, -7.215298247e-04f,
     6.358147948e-04f, 1.735966944e-04f, 1.714475911e-05f},
};

// erf(z) with the polynomial above; NaN stays NaN and |z| >= 4 gives +-1.
template <bool Fused>
inline float erf_reference(float z) {
    const float a = std::fabs(z);
    if (!(a < kErfLimit)) return a >= kErfLimit ? std::copysign(1.0f, z) : z;
    const int interval = static_cast<int>(a * 2.0f);
    const float t = a - (static_cast<float>(interval) * 0.5f + 0.25f);
    float p = kErfCoefficients[kErfDegree][interval];
    for (int power = kErfDegree - 1; power >= 0; --power)
        p = multiply_add<Fused>(p, t, kErfCoefficients[power][interval]);
    return std::copysign(p, z);
}

inline constexpr float kInverseSqrt2 = 0.70710678118654752f;

// Exact-form GELU, 0.5 x (1 + erf(x / sqrt(2))), with erf_reference.
template <bool Fused>
inline float gelu_reference(float x) {
    const float half = 0.5f * x;
    return half * (1.0f + erf_reference<Fused>(x * kInverseSqrt2));
}

// ----- exp ------------------------------------------------------------------------------------
//
// exp(x) = 2^n * exp(r) with n = round(x * log2(e)) and r = x - n * ln(2) (ln(2) split into
// two parts), exp(r) by Cephes' degree-7 polynomial 1 + r + r^2 P(r). Measured against double
// exp over [-88, 0]: within 2 float ulps. 2^n is applied in two exact power-of-two factors, so
// results that fall below FLT_MIN are rounded once, as ldexp does. Inputs are clamped to
// [-105, 88.7]: exp(-105) rounds to 0 and exp(88.7) is close to FLT_MAX.

inline constexpr float kExpMin = -105.0f;
inline constexpr float kExpMax = 88.7f;
inline constexpr float kLog2e = 1.44269504088896341f;
inline constexpr float kLn2High = 0.693359375f;  // few significant bits, so n * kLn2High is exact
inline constexpr float kLn2Low = -2.12194440e-4f;
inline constexpr float kExpCoefficients[6] = {1.9875691500e-4f, 1.3981999507e-3f, 8.3334519073e-3f,
                                              4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f};

// 2^n as a float for n in [-126, 127].
inline float power_of_two(int n) {
    const std::uint32_t bits = static_cast<std::uint32_t>(n + 127) << 23;
    float value;
    std::memcpy(&value, &bits, sizeof(value));
    return value;
}

template <bool Fused>
inline float exp_reference(float x) {
    if (x != x) return x;
    const float clamped = std::fmin(std::fmax(x, kExpMin), kExpMax);
    const float n = std::nearbyint(clamped * kLog2e);
    float r = multiply_add<Fused>(n, -kLn2High, clamped);
    r = multiply_add<Fused>(n, -kLn2Low, r);
    float p = kExpCoefficients[0];
    for (int i = 1; i < 6; ++i) p = multiply_add<Fused>(p, r, kExpCoefficients[i]);
    const float r2 = r * r;
    p = multiply_add<Fused>(p, r2, r);
    p = p + 1.0f;
    const int exponent = static_cast<int>(n);
    const int first = exponent / 2;  // both halves stay within the normal exponent range
    return p * power_of_two(first) * power_of_two(exponent - first);
}

}  // namespace blip::kernels::detail
