#!/usr/bin/env python3
"""Generate include/blip/text/unicode_tables.hpp from the Unicode Character Database.

The tokenizer needs, per code point: the general category, Python's str.isspace(), the
full lowercase mapping of Python's str.lower(), the canonical decomposition (NFD) and the
canonical combining class. This script reads them from the UCD text files that Debian's
`unicode-data` package installs under /usr/share/unicode and writes compact range tables.

Usage:
    python3 tools/gen_unicode_tables.py [--ucd-dir DIR] [--output FILE]
    python3 tools/gen_unicode_tables.py --check [--ucd-dir DIR]

--check writes nothing. It decodes the compact tables with the same lookups that
include/blip/text/unicode.hpp performs and compares every code point with the running
Python's unicodedata module and str methods. Code points whose Unicode version (DerivedAge.txt)
is newer than Python's unicodedata.unidata_version are counted separately, because that
Python treats them as unassigned.
"""

import argparse
import bisect
import os
import sys
import unicodedata

MAX_CODE_POINT = 0x10FFFF

# Order fixes the numbers of blip::unicode::Category in unicode.hpp.
CATEGORIES = [
    "Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Me", "Nd", "Nl", "No",
    "Pc", "Pd", "Ps", "Pe", "Pi", "Pf", "Po", "Sm", "Sc", "Sk", "So",
    "Zs", "Zl", "Zp", "Cc", "Cf", "Cs", "Co", "Cn",
]
CATEGORY_BITS = 5

HANGUL_FIRST = 0xAC00
HANGUL_LAST = 0xD7A3


def read_unicode_data(path):
    """Return {code point: fields} from UnicodeData.txt with <..., First>/<..., Last> ranges expanded."""
    records = {}
    range_first = None
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            fields = line.split(";")
            cp = int(fields[0], 16)
            name = fields[1]
            if name.endswith(", First>"):
                range_first = (cp, fields)
                continue
            if name.endswith(", Last>"):
                first_cp, first_fields = range_first
                for c in range(first_cp, cp + 1):
                    records[c] = first_fields
                range_first = None
                continue
            records[cp] = fields
    return records


def read_special_lowercase(path):
    """Return {code point: [code points]} for the unconditional lowercase mappings of SpecialCasing.txt.

    Python's str.lower() uses these and ignores the conditional (language or context)
    entries, except Final_Sigma, which CPython implements in code.
    """
    mappings = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            data = line.split("#", 1)[0].strip()
            if not data:
                continue
            fields = [x.strip() for x in data.split(";")]
            condition = fields[4] if len(fields) > 4 else ""
            if condition:
                continue
            cp = int(fields[0], 16)
            mappings[cp] = [int(x, 16) for x in fields[1].split()]
    return mappings


def read_ages(path):
    """Return a sorted list of (first, last, (major, minor)) from DerivedAge.txt."""
    ranges = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            data = line.split("#", 1)[0].strip()
            if not data:
                continue
            span, age = [x.strip() for x in data.split(";")]
            first, _, last = span.partition("..")
            major, minor = age.split(".")
            ranges.append((int(first, 16), int(last or first, 16), (int(major), int(minor))))
    ranges.sort()
    return ranges


def read_version(ucd_dir):
    with open(os.path.join(ucd_dir, "ReadMe.txt"), encoding="utf-8") as f:
        for line in f:
            if "for Version" in line:
                return line.split("for Version", 1)[1].split("of the")[0].strip()
    return "unknown"


class Tables:
    """The compact tables, built from the UCD files."""

    def __init__(self, ucd_dir):
        records = read_unicode_data(os.path.join(ucd_dir, "UnicodeData.txt"))
        special_lower = read_special_lowercase(os.path.join(ucd_dir, "SpecialCasing.txt"))
        self.version = read_version(ucd_dir)

        # General category: runs of equal category over the whole code space.
        self.category_runs = []  # (first code point, category index)
        previous = None
        for cp in range(MAX_CODE_POINT + 1):
            fields = records.get(cp)
            category = CATEGORIES.index(fields[2]) if fields else CATEGORIES.index("Cn")
            if category != previous:
                self.category_runs.append((cp, category))
                previous = category

        # Python's str.isspace(): bidirectional class WS, B or S, or category Zs.
        spaces = sorted(cp for cp, f in records.items() if f[4] in ("WS", "B", "S") or f[2] == "Zs")
        self.space_ranges = to_ranges(spaces)

        # Lowercase: SpecialCasing's unconditional mapping, else UnicodeData's simple one.
        single = {}
        self.multi_lower = {}
        for cp, f in records.items():
            if cp in special_lower:
                target = special_lower[cp]
            elif f[13]:
                target = [int(f[13], 16)]
            else:
                continue
            if target == [cp]:
                continue
            if len(target) == 1:
                single[cp] = target[0]
            else:
                self.multi_lower[cp] = target
        self.lower_runs = delta_runs(single)

        # Canonical combining class, nonzero values only.
        ccc = {cp: int(f[3]) for cp, f in records.items() if int(f[3]) != 0}
        self.ccc_runs = value_runs(ccc)

        # Canonical decompositions, fully expanded; Hangul syllables are left to code.
        raw = {}
        for cp, f in records.items():
            if f[5] and not f[5].startswith("<"):
                raw[cp] = [int(x, 16) for x in f[5].split()]

        def expand(cp):
            if cp not in raw:
                return [cp]
            out = []
            for c in raw[cp]:
                out.extend(expand(c))
            return out

        self.decompositions = {cp: expand(cp) for cp in sorted(raw)}
        self.category_firsts = [first for first, _ in self.category_runs]

    def category(self, cp):
        """Look up cp the way unicode.hpp does: the last run starting at or before cp."""
        i = bisect.bisect_right(self.category_firsts, cp) - 1
        return CATEGORIES[self.category_runs[i][1]]

    def is_space(self, cp):
        return any(first <= cp <= last for first, last in self.space_ranges)

    def decompose(self, cp):
        if HANGUL_FIRST <= cp <= HANGUL_LAST:
            s = cp - HANGUL_FIRST
            lead, vowel, trail = 0x1100 + s // 588, 0x1161 + (s % 588) // 28, 0x11A7 + s % 28
            return [lead, vowel] + ([trail] if trail != 0x11A7 else [])
        return self.decompositions.get(cp, [cp])


def to_ranges(sorted_cps):
    ranges = []
    for cp in sorted_cps:
        if ranges and ranges[-1][1] == cp - 1:
            ranges[-1][1] = cp
        else:
            ranges.append([cp, cp])
    return [tuple(r) for r in ranges]


def value_runs(mapping):
    """Group {cp: value} into (first, last, value) runs of consecutive code points."""
    runs = []
    for cp in sorted(mapping):
        value = mapping[cp]
        if runs and runs[-1][1] == cp - 1 and runs[-1][2] == value:
            runs[-1][1] = cp
        else:
            runs.append([cp, cp, value])
    return [tuple(r) for r in runs]


def delta_runs(mapping):
    """Group {cp: target} into (first, last, stride, delta) runs.

    A run maps every code point first, first + stride, ..., last to itself plus delta.
    Stride 2 covers the alternating upper and lower case pairs of Latin Extended and Cyrillic.
    """
    runs = []
    for cp in sorted(mapping):
        delta = mapping[cp] - cp
        if runs:
            first, last, stride, run_delta = runs[-1]
            if run_delta == delta:
                if stride == 0 and cp - last in (1, 2):
                    runs[-1] = [first, cp, cp - last, delta]
                    continue
                if stride and cp - last == stride:
                    runs[-1][1] = cp
                    continue
        runs.append([cp, cp, 0, delta])
    return [(first, last, stride or 1, delta) for first, last, stride, delta in runs]


def format_array(items, per_line):
    lines = []
    for i in range(0, len(items), per_line):
        lines.append("    " + " ".join(items[i:i + per_line]))
    return "\n".join(lines)


def write_header(tables, path):
    category_words = ["0x%07x," % ((cp << CATEGORY_BITS) | cat) for cp, cat in tables.category_runs]
    space_items = ["{0x%05x, 0x%05x}," % r for r in tables.space_ranges]
    lower_items = ["{0x%05x, 0x%05x, %d, %d}," % r for r in tables.lower_runs]
    multi_items = []
    for cp, target in sorted(tables.multi_lower.items()):
        padded = target + [0] * (3 - len(target))
        multi_items.append("{0x%05x, %d, {0x%05x, 0x%05x, 0x%05x}}," % (cp, len(target), *padded))
    ccc_items = ["{0x%05x, 0x%05x, %d}," % r for r in tables.ccc_runs]
    decomposition_items = []
    decomposition_data = []
    for cp, target in tables.decompositions.items():
        decomposition_items.append("{0x%05x, %d, %d}," % (cp, len(decomposition_data), len(target)))
        decomposition_data.extend(target)
    data_items = ["0x%05x," % c for c in decomposition_data]
    assert max(len(t) for t in tables.decompositions.values()) <= 255
    assert len(decomposition_data) < 65536

    text = f"""// Unicode {tables.version} property tables for the BERT tokenizer. GENERATED FILE, do not edit.
// Regenerate from Debian's unicode-data package (files under /usr/share/unicode) with
//     python3 tools/gen_unicode_tables.py --ucd-dir /usr/share/unicode --output include/blip/text/unicode_tables.hpp
// and compare the tables with Python's unicodedata module with
//     python3 tools/gen_unicode_tables.py --check
#pragma once

#include <cstdint>

namespace blip::unicode::tables {{

inline constexpr const char* kUnicodeVersion = "{tables.version}";

// General category runs: (first code point << {CATEGORY_BITS}) | category number, sorted.
// A run extends to the next entry's first code point; unassigned code points are Cn.
inline constexpr std::uint32_t kCategoryRuns[] = {{
{format_array(category_words, 8)}
}};

struct Range {{
    std::uint32_t first;
    std::uint32_t last;
}};

// Code points for which Python's str.isspace() is true: bidirectional class WS, B or S, or category Zs.
inline constexpr Range kSpaceRanges[] = {{
{format_array(space_items, 4)}
}};

// Single code point lowercase mappings: every first + k * stride <= last maps to itself + delta.
struct LowerRun {{
    std::uint32_t first;
    std::uint32_t last;
    std::int32_t stride;
    std::int32_t delta;
}};
inline constexpr LowerRun kLowerRuns[] = {{
{format_array(lower_items, 3)}
}};

// Unconditional lowercase mappings to several code points (SpecialCasing.txt).
struct MultiLower {{
    std::uint32_t code_point;
    std::uint32_t length;
    std::uint32_t target[3];
}};
inline constexpr MultiLower kMultiLower[] = {{
{format_array(multi_items, 1)}
}};

// Nonzero canonical combining classes.
struct CombiningRun {{
    std::uint32_t first;
    std::uint32_t last;
    std::uint32_t combining_class;
}};
inline constexpr CombiningRun kCombiningRuns[] = {{
{format_array(ccc_items, 3)}
}};

// Full canonical decompositions (recursively expanded) of every code point that has one,
// except Hangul syllables, which are decomposed arithmetically. Sorted by code point;
// each maps to kDecompositionData[offset, offset + length).
struct Decomposition {{
    std::uint32_t code_point;
    std::uint16_t offset;
    std::uint16_t length;
}};
inline constexpr Decomposition kDecompositions[] = {{
{format_array(decomposition_items, 4)}
}};
inline constexpr std::uint32_t kDecompositionData[] = {{
{format_array(data_items, 8)}
}};

}}  // namespace blip::unicode::tables
"""
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {path}: {len(tables.category_runs)} category runs, {len(tables.space_ranges)} space ranges, "
          f"{len(tables.lower_runs)} lowercase runs, {len(tables.multi_lower)} multi-code-point lowercase mappings, "
          f"{len(tables.ccc_runs)} combining class runs, {len(tables.decompositions)} decompositions")


def check(tables, ucd_dir):
    """Compare the tables with Python's unicodedata and str methods on every code point."""
    ages = read_ages(os.path.join(ucd_dir, "DerivedAge.txt"))
    age_firsts = [r[0] for r in ages]
    python_version = tuple(int(x) for x in unicodedata.unidata_version.split(".")[:2])

    def newer_than_python(cp):
        i = bisect.bisect_right(age_firsts, cp) - 1
        return i >= 0 and ages[i][0] <= cp <= ages[i][1] and ages[i][2] > python_version

    ccc_firsts = [r[0] for r in tables.ccc_runs]
    lower_firsts = [r[0] for r in tables.lower_runs]

    def combining_class(cp):
        i = bisect.bisect_right(ccc_firsts, cp) - 1
        if i >= 0 and tables.ccc_runs[i][0] <= cp <= tables.ccc_runs[i][1]:
            return tables.ccc_runs[i][2]
        return 0

    def lower(cp):
        if cp in tables.multi_lower:
            return tables.multi_lower[cp]
        i = bisect.bisect_right(lower_firsts, cp) - 1
        if i >= 0:
            first, last, stride, delta = tables.lower_runs[i]
            if cp <= last and (cp - first) % stride == 0:
                return [cp + delta]
        return [cp]

    mismatches = {"category": 0, "isspace": 0, "lower": 0, "combining": 0, "nfd": 0}
    newer = {key: 0 for key in mismatches}
    examples = []
    for cp in range(MAX_CODE_POINT + 1):
        ch = chr(cp)
        ours = {
            "category": tables.category(cp),
            "isspace": tables.is_space(cp),
            "lower": "".join(map(chr, lower(cp))),
            "combining": combining_class(cp),
            "nfd": "".join(map(chr, tables.decompose(cp))),
        }
        if 0xD800 <= cp <= 0xDFFF:
            python_nfd = ch  # Python cannot normalize a lone surrogate in a str; it has no decomposition.
        else:
            python_nfd = unicodedata.normalize("NFD", ch)
        theirs = {
            "category": unicodedata.category(ch),
            "isspace": ch.isspace(),
            "lower": ch.lower(),
            "combining": unicodedata.combining(ch),
            "nfd": python_nfd,
        }
        for key in mismatches:
            if ours[key] != theirs[key]:
                if newer_than_python(cp):
                    newer[key] += 1
                else:
                    mismatches[key] += 1
                    if len(examples) < 20:
                        examples.append(f"U+{cp:04X} {key}: tables {ours[key]!r}, Python {theirs[key]!r}")

    print(f"tables: Unicode {tables.version}; Python {sys.version.split()[0]}: unicodedata {unicodedata.unidata_version}")
    for key in mismatches:
        print(f"{key}: {mismatches[key]} mismatches, {newer[key]} more on code points newer than Python's Unicode")
    for line in examples:
        print("  " + line)
    return 0 if sum(mismatches.values()) == 0 else 1


def main():
    script_dir = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ucd-dir", default="/usr/share/unicode", help="folder with UnicodeData.txt and the other UCD files")
    parser.add_argument("--output", default=os.path.join(script_dir, "..", "include", "blip", "text", "unicode_tables.hpp"),
                        help="header to write")
    parser.add_argument("--check", action="store_true", help="compare the tables with Python's unicodedata; write nothing")
    args = parser.parse_args()

    tables = Tables(args.ucd_dir)
    if args.check:
        return check(tables, args.ucd_dir)
    write_header(tables, os.path.normpath(args.output))
    return 0


if __name__ == "__main__":
    sys.exit(main())
