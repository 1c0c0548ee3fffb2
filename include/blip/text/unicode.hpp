// Unicode helpers for the BERT tokenizer: UTF-8 conversion, general category, Python's
// str.isspace() and str.lower(), and canonical decomposition (NFD).
//
// The data comes from the generated tables in unicode_tables.hpp (Unicode 15.0.0, from
// Debian's unicode-data package). Python 3.11 ships Unicode 14.0.0, so code points first
// assigned in Unicode 15.0 are categories other than Cn here but Cn (and so dropped as
// control characters by BERT's text cleaning) under that Python.
#pragma once

#include <blip/text/unicode_tables.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <string>
#include <string_view>

namespace blip::unicode {

inline constexpr char32_t kReplacementCharacter = 0xFFFD;
inline constexpr char32_t kMaxCodePoint = 0x10FFFF;

// Unicode general category, in the order of the generated kCategoryRuns numbers.
enum class Category : std::uint8_t {
    Lu, Ll, Lt, Lm, Lo, Mn, Mc, Me, Nd, Nl, No,
    Pc, Pd, Ps, Pe, Pi, Pf, Po, Sm, Sc, Sk, So,
    Zs, Zl, Zp, Cc, Cf, Cs, Co, Cn,
};

inline Category category(char32_t cp) {
    if (cp > kMaxCodePoint) return Category::Cn;
    constexpr unsigned kBits = 5;
    const std::uint32_t key = (static_cast<std::uint32_t>(cp) << kBits) | ((1u << kBits) - 1);
    const auto* begin = std::begin(tables::kCategoryRuns);
    const auto* it = std::upper_bound(begin, std::end(tables::kCategoryRuns), key);
    // The first run starts at U+0000, so `it` is never `begin`.
    return static_cast<Category>(*(it - 1) & ((1u << kBits) - 1));
}

inline bool is_punctuation_category(Category c) { return c >= Category::Pc && c <= Category::Po; }
inline bool is_other_category(Category c) { return c >= Category::Cc && c <= Category::Cn; }

// Python's str.isspace() for one code point: bidirectional class WS, B or S, or category Zs.
inline bool is_python_space(char32_t cp) {
    for (const auto& range : tables::kSpaceRanges) {
        if (cp < range.first) return false;
        if (cp <= range.last) return true;
    }
    return false;
}

// Appends the full lowercase mapping of `cp`, as Python's str.lower() applies it to a
// one-character string (no Final_Sigma context: a lone U+03A3 becomes U+03C3).
inline void append_lower(char32_t cp, std::u32string& out) {
    for (const auto& multi : tables::kMultiLower) {
        if (multi.code_point == cp) {
            out.append(multi.target, multi.target + multi.length);
            return;
        }
    }
    const auto* end = std::end(tables::kLowerRuns);
    const auto* it = std::upper_bound(std::begin(tables::kLowerRuns), end, static_cast<std::uint32_t>(cp),
                                      [](std::uint32_t value, const tables::LowerRun& run) { return value < run.first; });
    if (it != std::begin(tables::kLowerRuns)) {
        const auto& run = *(it - 1);
        if (cp <= run.last && (cp - run.first) % static_cast<std::uint32_t>(run.stride) == 0) {
            out.push_back(static_cast<char32_t>(static_cast<std::int64_t>(cp) + run.delta));
            return;
        }
    }
    out.push_back(cp);
}

inline std::uint32_t combining_class(char32_t cp) {
    const auto* begin = std::begin(tables::kCombiningRuns);
    const auto* it = std::upper_bound(begin, std::end(tables::kCombiningRuns), static_cast<std::uint32_t>(cp),
                                      [](std::uint32_t value, const tables::CombiningRun& run) { return value < run.first; });
    if (it == begin) return 0;
    const auto& run = *(it - 1);
    return cp <= run.last ? run.combining_class : 0;
}

// Appends the full canonical decomposition of `cp` (the code point itself when it has none).
inline void append_canonical_decomposition(char32_t cp, std::u32string& out) {
    // Hangul syllables decompose arithmetically (Unicode standard, section 3.12).
    constexpr char32_t kHangulFirst = 0xAC00, kHangulLast = 0xD7A3;
    constexpr char32_t kLeadBase = 0x1100, kVowelBase = 0x1161, kTrailBase = 0x11A7;
    constexpr char32_t kVowelCount = 21, kTrailCount = 28;
    if (cp >= kHangulFirst && cp <= kHangulLast) {
        const char32_t index = cp - kHangulFirst;
        out.push_back(kLeadBase + index / (kVowelCount * kTrailCount));
        out.push_back(kVowelBase + (index % (kVowelCount * kTrailCount)) / kTrailCount);
        if (index % kTrailCount != 0) out.push_back(kTrailBase + index % kTrailCount);
        return;
    }
    const auto* begin = std::begin(tables::kDecompositions);
    const auto* end = std::end(tables::kDecompositions);
    const auto* it = std::lower_bound(begin, end, static_cast<std::uint32_t>(cp),
                                      [](const tables::Decomposition& d, std::uint32_t value) { return d.code_point < value; });
    if (it == end || it->code_point != cp) {
        out.push_back(cp);
        return;
    }
    const std::uint32_t* data = tables::kDecompositionData + it->offset;
    out.append(data, data + it->length);
}

// Normalization form D: full canonical decomposition, then the canonical ordering of each
// run of nonzero combining classes (a stable sort by combining class).
inline std::u32string nfd(std::u32string_view text) {
    std::u32string out;
    out.reserve(text.size());
    for (char32_t cp : text) append_canonical_decomposition(cp, out);

    std::size_t i = 0;
    while (i < out.size()) {
        if (combining_class(out[i]) == 0) {
            ++i;
            continue;
        }
        std::size_t end = i;
        while (end < out.size() && combining_class(out[end]) != 0) ++end;
        std::stable_sort(out.begin() + static_cast<std::ptrdiff_t>(i), out.begin() + static_cast<std::ptrdiff_t>(end),
                         [](char32_t a, char32_t b) { return combining_class(a) < combining_class(b); });
        i = end;
    }
    return out;
}

struct Utf8Sequence {
    char32_t code_point;  // U+FFFD when the sequence is invalid
    std::size_t length;   // bytes consumed, at least 1
    bool valid;
};

// Decodes the UTF-8 sequence at text[offset], where offset < text.size(). An invalid
// sequence is a stray or invalid byte, a truncated sequence, an overlong form, a surrogate or
// a value above U+10FFFF. It consumes its maximal subpart, which is the longest prefix that
// a valid sequence could start with, and at least one byte.
inline Utf8Sequence decode_utf8_sequence(std::string_view text, std::size_t offset) {
    const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(text[i]); };
    const unsigned char lead = byte(offset);
    if (lead < 0x80) return {lead, 1, true};

    std::size_t length = 0;
    unsigned char second_min = 0x80, second_max = 0xBF;
    char32_t cp = 0;
    if (lead >= 0xC2 && lead <= 0xDF) {
        length = 2;
        cp = lead & 0x1F;
    } else if (lead >= 0xE0 && lead <= 0xEF) {
        length = 3;
        cp = lead & 0x0F;
        if (lead == 0xE0) second_min = 0xA0;  // no overlong forms
        if (lead == 0xED) second_max = 0x9F;  // no surrogates
    } else if (lead >= 0xF0 && lead <= 0xF4) {
        length = 4;
        cp = lead & 0x07;
        if (lead == 0xF0) second_min = 0x90;  // no overlong forms
        if (lead == 0xF4) second_max = 0x8F;  // nothing above U+10FFFF
    } else {
        return {kReplacementCharacter, 1, false};
    }

    std::size_t consumed = 1;
    while (consumed < length && offset + consumed < text.size()) {
        const unsigned char next = byte(offset + consumed);
        const unsigned char low = consumed == 1 ? second_min : 0x80;
        const unsigned char high = consumed == 1 ? second_max : 0xBF;
        if (next < low || next > high) break;
        cp = (cp << 6) | (next & 0x3F);
        ++consumed;
    }
    if (consumed != length) return {kReplacementCharacter, consumed, false};
    return {cp, length, true};
}

// Decodes UTF-8, replacing each invalid sequence with one U+FFFD per maximal subpart, as
// Python's bytes.decode("utf-8", "replace") does.
inline std::u32string decode_utf8(std::string_view text) {
    std::u32string out;
    out.reserve(text.size());
    std::size_t offset = 0;
    while (offset < text.size()) {
        const Utf8Sequence sequence = decode_utf8_sequence(text, offset);
        out.push_back(sequence.code_point);
        offset += sequence.length;
    }
    return out;
}

// Returns the byte offset of the first invalid UTF-8 sequence in `text`, or npos when it is valid.
inline std::size_t find_invalid_utf8(std::string_view text) {
    std::size_t offset = 0;
    while (offset < text.size()) {
        const Utf8Sequence sequence = decode_utf8_sequence(text, offset);
        if (!sequence.valid) return offset;
        offset += sequence.length;
    }
    return std::string_view::npos;
}

// Appends the UTF-8 form of `cp`; surrogates and values above U+10FFFF become U+FFFD.
inline void append_utf8(char32_t cp, std::string& out) {
    if ((cp >= 0xD800 && cp <= 0xDFFF) || cp > kMaxCodePoint) cp = kReplacementCharacter;
    if (cp < 0x80) {
        out.push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
        out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
        out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
        out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
}

inline std::string encode_utf8(std::u32string_view text) {
    std::string out;
    out.reserve(text.size());
    for (char32_t cp : text) append_utf8(cp, out);
    return out;
}

}  // namespace blip::unicode
