// Conversions between f32 and the 16-bit float formats f16 (IEEE 754 binary16) and bf16.
#pragma once

#include <cstdint>
#include <cstring>

namespace blip::quant {

inline std::uint32_t float_bits(float value) {
    std::uint32_t bits;
    std::memcpy(&bits, &value, sizeof(bits));
    return bits;
}

inline float float_from_bits(std::uint32_t bits) {
    float value;
    std::memcpy(&value, &bits, sizeof(value));
    return value;
}

// Converts to binary16 with round-to-nearest-even, as ggml's GGML_FP32_TO_FP16 does.
// Values beyond the f16 range become infinity; NaN stays NaN (quiet).
inline std::uint16_t fp32_to_fp16(float value) {
    const std::uint32_t bits = float_bits(value);
    const auto sign = static_cast<std::uint16_t>((bits >> 16) & 0x8000u);
    const std::uint32_t magnitude = bits & 0x7fffffffu;

    if (magnitude >= 0x7f800000u) {  // infinity or NaN
        const std::uint32_t payload = magnitude > 0x7f800000u ? (0x200u | ((magnitude >> 13) & 0x3ffu)) : 0u;
        return static_cast<std::uint16_t>(sign | 0x7c00u | payload);
    }
    if (magnitude >= 0x477ff000u) {  // 65520 and above round to infinity
        return static_cast<std::uint16_t>(sign | 0x7c00u);
    }
    if (magnitude < 0x38800000u) {  // below 2^-14: f16 subnormal or zero
        const std::uint32_t exponent = magnitude >> 23;
        if (exponent < 102) return sign;  // below 2^-25 rounds to zero
        const std::uint32_t mantissa = (magnitude & 0x7fffffu) | 0x800000u;
        const std::uint32_t shift = 126 - exponent;  // 14..24
        std::uint32_t result = mantissa >> shift;
        const std::uint32_t remainder = mantissa & ((1u << shift) - 1u);
        const std::uint32_t half = 1u << (shift - 1);
        if (remainder > half || (remainder == half && (result & 1u))) ++result;
        return static_cast<std::uint16_t>(sign | result);
    }
    // Normal: rebias the exponent from 127 to 15 and round 23 mantissa bits to 10.
    // A carry out of the mantissa correctly increments the exponent.
    std::uint32_t result = (magnitude - 0x38000000u) >> 13;
    const std::uint32_t remainder = magnitude & 0x1fffu;
    if (remainder > 0x1000u || (remainder == 0x1000u && (result & 1u))) ++result;
    return static_cast<std::uint16_t>(sign | result);
}

// Exact conversion from binary16.
inline float fp16_to_fp32(std::uint16_t half) {
    const std::uint32_t sign = static_cast<std::uint32_t>(half & 0x8000u) << 16;
    const std::uint32_t exponent = (half >> 10) & 0x1fu;
    const std::uint32_t mantissa = half & 0x3ffu;
    if (exponent == 0) {
        // Zero or subnormal: mantissa * 2^-24, exact in f32.
        const float magnitude = static_cast<float>(mantissa) * 5.9604644775390625e-8f;
        return sign ? -magnitude : magnitude;
    }
    if (exponent == 31) return float_from_bits(sign | 0x7f800000u | (mantissa << 13));
    return float_from_bits(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}

// Converts to bfloat16 with round-to-nearest-even; NaN becomes a quiet NaN. Same rule as ggml.
inline std::uint16_t fp32_to_bf16(float value) {
    const std::uint32_t bits = float_bits(value);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((bits >> 16) | 0x40u);
    return static_cast<std::uint16_t>((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

inline float bf16_to_fp32(std::uint16_t value) { return float_from_bits(static_cast<std::uint32_t>(value) << 16); }

}  // namespace blip::quant
