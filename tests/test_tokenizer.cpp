#include <blip/text/tokenizer.hpp>
#include <blip/text/unicode.hpp>

#include <algorithm>
#include <fstream>
#include <string>
#include <vector>

#include "support/golden.hpp"

namespace test_tokenizer {

namespace {

using blip::TokenType;

// The BLIP tokenizer of the reference data: bert-base-uncased's vocab.txt plus [DEC] and [ENC].
blip::Tokenizer golden_tokenizer() {
    std::vector<std::string> tokens = blip::read_vocab_file((blip_test::golden_dir() / "tokenizer" / "vocab.txt").string());
    REQUIRE(tokens.size() == 30522);
    tokens.push_back("[DEC]");
    tokens.push_back("[ENC]");
    std::vector<TokenType> types(tokens.size(), TokenType::Normal);
    for (const char* special : {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "[ENC]"}) {
        const auto it = std::find(tokens.begin(), tokens.end(), special);
        REQUIRE(it != tokens.end());
        types[static_cast<std::size_t>(it - tokens.begin())] = TokenType::Control;
    }
    return blip::Tokenizer(std::move(tokens), std::move(types), blip::TokenizerConfig{}, blip::SpecialTokens{});
}

// A small vocabulary with BLIP's layout: specials at 0..4, word pieces, [DEC] and [ENC] last.
struct SmallVocab {
    std::vector<std::string> tokens{
        "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",                    // 0-4
        "a", "b", "un", "##aff", "##able", "cafe", "中", "文", "!", ",",  // 5-14
        "[", "]", "mask", "?", ".", "'", "s", "##s", "i", "istanbul",    // 15-24
        "naive", "x", "##x", "##o", "e", "σ", "##σ", "a", "dec",         // 25-33 ("a" again at 32)
        "[DEC]", "[ENC]",                                               // 34-35
    };
    blip::SpecialTokens special() const {
        blip::SpecialTokens s;
        s.pad = 0;
        s.unk = 1;
        s.cls = 2;
        s.sep = 3;
        s.mask = 4;
        s.bos = 34;
        s.eos = 3;
        s.enc = 35;
        return s;
    }
    std::vector<TokenType> types() const {
        std::vector<TokenType> t(tokens.size(), TokenType::Normal);
        for (std::size_t id : {0, 1, 2, 3, 4, 34, 35}) t[id] = TokenType::Control;
        return t;
    }
    blip::Tokenizer make(blip::TokenizerConfig config = {}) const { return blip::Tokenizer(tokens, types(), config, special()); }
};

std::vector<std::int32_t> ids_of(const nlohmann::json& array) { return array.get<std::vector<std::int32_t>>(); }

}  // namespace

TEST_CASE("tokenizer matches every golden case") {
    BLIP_REQUIRE_GOLDEN();
    const blip::Tokenizer tokenizer = golden_tokenizer();
    std::ifstream in(blip_test::golden_dir() / "tokenizer" / "cases.jsonl", std::ios::binary);
    REQUIRE(in);
    std::string line;
    int cases = 0, padded_cases = 0;
    while (std::getline(in, line)) {
        if (line.empty()) continue;
        const nlohmann::json item = nlohmann::json::parse(line);
        const std::string text = item.at("text").get<std::string>();
        const std::vector<std::int32_t> expected_ids = ids_of(item.at("ids"));
        CAPTURE(text);
        ++cases;

        if (item.contains("padding")) {
            REQUIRE(item.at("padding") == "max_length");
            REQUIRE(item.at("truncation") == true);
            const auto padded = tokenizer.encode_padded(text, item.at("max_length").get<std::size_t>());
            CHECK(padded.ids == expected_ids);
            CHECK(padded.attention_mask == ids_of(item.at("attention_mask")));
            ++padded_cases;
            continue;
        }

        CHECK(tokenizer.encode(text) == expected_ids);
        auto expected_tokens = item.at("tokens").get<std::vector<std::string>>();
        REQUIRE(expected_tokens.size() >= 2);
        expected_tokens = std::vector<std::string>(expected_tokens.begin() + 1, expected_tokens.end() - 1);
        CHECK(tokenizer.tokenize(text) == expected_tokens);
        CHECK(tokenizer.decode(expected_ids) == item.at("decoded").get<std::string>());
    }
    CHECK(cases == 52);
    CHECK(padded_cases == 2);
}

TEST_CASE("tokenizer golden vocabulary lookups") {
    BLIP_REQUIRE_GOLDEN();
    const blip::Tokenizer tokenizer = golden_tokenizer();
    CHECK(tokenizer.vocab_size() == 30524);
    CHECK(tokenizer.token_to_id("[DEC]") == 30522);
    CHECK(tokenizer.token_to_id("[ENC]") == 30523);
    CHECK(tokenizer.token_to_id("picture") == 3861);
    CHECK(tokenizer.token_to_id("no-such-token") == 100);
    CHECK(tokenizer.id_to_token(101) == "[CLS]");
    CHECK(tokenizer.id_to_token(30523) == "[ENC]");
    CHECK_THROWS_AS(tokenizer.id_to_token(30524), blip::Error);
    CHECK_THROWS_AS(tokenizer.id_to_token(-1), blip::Error);
}

TEST_CASE("tokenizer golden special tokens in decode") {
    BLIP_REQUIRE_GOLDEN();
    const blip::Tokenizer tokenizer = golden_tokenizer();
    // Values from transformers 4.30.2's BertTokenizer with [DEC] and [ENC] added.
    const std::vector<std::int32_t> ids{30522, 2015, 101, 2015, 5000000, -3, 100, 30523};
    CHECK(tokenizer.decode(ids, false) == "[DEC] ##s [CLS]s [UNK] [UNK] [UNK] [ENC]");
    CHECK(tokenizer.decode(ids, true) == "##ss [UNK] [UNK]");
    // A control character inside an added token hides it from the added-token split, and the
    // lowercased "[dec]" is then split on punctuation.
    CHECK(tokenizer.encode(std::string("[DE\0C]", 6)) == std::vector<std::int32_t>{101, 1031, 11703, 1033, 102});
    CHECK(tokenizer.encode("x[DEC]y") == std::vector<std::int32_t>{101, 1060, 30522, 1061, 102});
    CHECK(tokenizer.encode("[Mask]") == std::vector<std::int32_t>{101, 1031, 7308, 1033, 102});
}

TEST_CASE("tokenizer wordpiece and unknown words") {
    const blip::Tokenizer tokenizer = SmallVocab{}.make();
    CHECK(tokenizer.tokenize("unaffable") == std::vector<std::string>{"un", "##aff", "##able"});
    CHECK(tokenizer.tokenize("unaffablez") == std::vector<std::string>{"[UNK]"});
    CHECK(tokenizer.tokenize("b zzz a") == std::vector<std::string>{"b", "[UNK]", "a"});
    CHECK(tokenizer.encode("a b") == std::vector<std::int32_t>{2, 32, 6, 3});  // a repeated token takes its last id
    CHECK(tokenizer.encode("", false).empty());
    CHECK(tokenizer.encode("") == std::vector<std::int32_t>{2, 3});
}

TEST_CASE("tokenizer word length limit") {
    const blip::Tokenizer tokenizer = SmallVocab{}.make();
    const std::string at_limit(100, 'x');
    const auto pieces = tokenizer.tokenize(at_limit);
    REQUIRE(pieces.size() == 100);
    CHECK(pieces.front() == "x");
    CHECK(pieces.back() == "##x");
    CHECK(tokenizer.tokenize(at_limit + "x") == std::vector<std::string>{"[UNK]"});

    // The limit counts code points, not bytes: 100 two-byte letters are still one word.
    std::string greek;
    for (int i = 0; i < 100; ++i) greek += "\xCF\x83";  // U+03C3
    CHECK(tokenizer.tokenize(greek).size() == 100);

    blip::TokenizerConfig short_words;
    short_words.max_input_chars_per_word = 3;
    CHECK(SmallVocab{}.make(short_words).tokenize("xxx xxxx") == std::vector<std::string>{"x", "##x", "##x", "[UNK]"});
}

TEST_CASE("tokenizer lowercases and strips accents") {
    const blip::Tokenizer tokenizer = SmallVocab{}.make();
    CHECK(tokenizer.tokenize("Caf\xC3\xA9 NA\xC3\x8FVE") == std::vector<std::string>{"cafe", "naive"});
    CHECK(tokenizer.tokenize("Cafe\xCC\x81") == std::vector<std::string>{"cafe"});  // combining acute accent
    // U+0130 lowercases to "i" + U+0307 (SpecialCasing.txt); the dot is then stripped.
    CHECK(tokenizer.tokenize("\xC4\xB0STANBUL") == std::vector<std::string>{"istanbul"});
    // Each character is lowercased on its own, so a final capital sigma becomes U+03C3.
    CHECK(tokenizer.tokenize("\xCE\xA3\xCE\xA3") == std::vector<std::string>{"σ", "##σ"});
    // U+1FEF GREEK VARIA decomposes to "`", which is punctuation.
    CHECK(tokenizer.tokenize("a\xE1\xBF\xAF" "a") == std::vector<std::string>{"a", "[UNK]", "a"});

    blip::TokenizerConfig cased;
    cased.do_lower_case = false;
    CHECK(SmallVocab{}.make(cased).tokenize("Cafe caf\xC3\xA9") == std::vector<std::string>{"[UNK]", "[UNK]"});
    cased.strip_accents = true;
    CHECK(SmallVocab{}.make(cased).tokenize("caf\xC3\xA9") == std::vector<std::string>{"cafe"});

    blip::TokenizerConfig keep_accents;
    keep_accents.strip_accents = false;
    CHECK(SmallVocab{}.make(keep_accents).tokenize("CAF\xC3\x89 CAFE") == std::vector<std::string>{"[UNK]", "cafe"});
}

TEST_CASE("tokenizer splits CJK ideographs") {
    const blip::Tokenizer tokenizer = SmallVocab{}.make();
    CHECK(tokenizer.tokenize("a\xE4\xB8\xAD\xE6\x96\x87" "b") == std::vector<std::string>{"a", "中", "文", "b"});
    blip::TokenizerConfig no_cjk;
    no_cjk.tokenize_chinese_chars = false;
    CHECK(SmallVocab{}.make(no_cjk).tokenize("\xE4\xB8\xAD\xE6\x96\x87 \xE6\x96\x87") ==
          std::vector<std::string>{"[UNK]", "文"});
}

TEST_CASE("tokenizer cleans whitespace and control characters") {
    const blip::Tokenizer tokenizer = SmallVocab{}.make();
    CHECK(tokenizer.tokenize(std::string("a\0b", 3)) == std::vector<std::string>{"[UNK]"});  // "ab"
    CHECK(tokenizer.tokenize("a\tb\r\nb\xE3\x80\x80" "a") == std::vector<std::string>{"a", "b", "b", "a"});
    // U+2028 and U+2029 are not BERT whitespace but Python's str.split() splits on them.
    CHECK(tokenizer.tokenize("a\xE2\x80\xA8" "b\xE2\x80\xA9" "a") == std::vector<std::string>{"a", "b", "a"});
    // U+200B (a format character) is dropped, joining its neighbours.
    CHECK(tokenizer.tokenize("x\xE2\x80\x8Bx") == std::vector<std::string>{"x", "##x"});
}

TEST_CASE("tokenizer survives invalid UTF-8") {
    const blip::Tokenizer tokenizer = SmallVocab{}.make();
    // Stray continuation byte, truncated sequence, overlong form, surrogate, beyond U+10FFFF:
    // each becomes U+FFFD, which the cleaning step drops.
    CHECK(tokenizer.tokenize("a\x80" "b") == std::vector<std::string>{"[UNK]"});  // "ab"
    CHECK(tokenizer.tokenize("a \xE4\xB8") == std::vector<std::string>{"a"});
    CHECK(tokenizer.tokenize("\xC0\xAF" "a") == std::vector<std::string>{"a"});
    CHECK(tokenizer.tokenize("\xED\xA0\x80 b") == std::vector<std::string>{"b"});
    CHECK(tokenizer.tokenize("\xF4\x90\x80\x80" "a\xFF") == std::vector<std::string>{"a"});
    CHECK(tokenizer.tokenize("\xE4\xB8\xAD\xE4" "a") == std::vector<std::string>{"中", "a"});
}

TEST_CASE("tokenizer keeps special tokens") {
    const blip::Tokenizer tokenizer = SmallVocab{}.make();
    // Added tokens are cut out anywhere, without lowercasing.
    CHECK(tokenizer.encode("a[DEC]b", false) == std::vector<std::int32_t>{32, 34, 6});
    CHECK(tokenizer.encode("[ENC][DEC]", false) == std::vector<std::int32_t>{35, 34});
    CHECK(tokenizer.encode("[dec]", false) == std::vector<std::int32_t>{15, 33, 16});
    // Vocabulary special tokens stay whole only as separate words.
    CHECK(tokenizer.encode("a [MASK] b", false) == std::vector<std::int32_t>{32, 4, 6});
    CHECK(tokenizer.encode("[MASK]?", false) == std::vector<std::int32_t>{15, 17, 16, 18});
    CHECK(tokenizer.encode("[CLS] [SEP] [PAD] [UNK]", false) == std::vector<std::int32_t>{2, 3, 0, 1});
}

TEST_CASE("tokenizer decode joins pieces and cleans spaces") {
    const blip::Tokenizer tokenizer = SmallVocab{}.make();
    CHECK(tokenizer.decode({2, 7, 8, 9, 13, 3}) == "unaffable!");
    CHECK(tokenizer.decode({2, 7, 8, 9, 13, 3}, false) == "[CLS] unaffable! [SEP]");
    CHECK(tokenizer.decode({32, 14, 6, 19, 32, 18}) == "a, b. a?");
    CHECK(tokenizer.decode({32, 20, 21}) == "a's");
    CHECK(tokenizer.decode({32, 20, 6}) == "a'b");
    CHECK(tokenizer.decode({34, 32, 6, 35}) == "a b");
    CHECK(tokenizer.decode({34, 22, 6, 35, 13}, false) == "[DEC] ##s b [ENC]!");
    CHECK(tokenizer.decode({}) == "");
    CHECK(tokenizer.decode({99, -1}) == "[UNK] [UNK]");
    CHECK(tokenizer.decode({1, 32}) == "a");
    // transformers maps only the last id of a repeated token back to its text.
    CHECK(tokenizer.decode({5}) == "[UNK]");
}

TEST_CASE("tokenizer pads and truncates") {
    const blip::Tokenizer tokenizer = SmallVocab{}.make();
    auto padded = tokenizer.encode_padded("a b", 6);
    CHECK(padded.ids == std::vector<std::int32_t>{2, 32, 6, 3, 0, 0});
    CHECK(padded.attention_mask == std::vector<std::int32_t>{1, 1, 1, 1, 0, 0});
    padded = tokenizer.encode_padded("a b a b", 4);
    CHECK(padded.ids == std::vector<std::int32_t>{2, 32, 6, 3});
    CHECK(padded.attention_mask == std::vector<std::int32_t>{1, 1, 1, 1});
    CHECK(tokenizer.encode_padded("a", 2).ids == std::vector<std::int32_t>{2, 3});
    CHECK_THROWS_AS(tokenizer.encode_padded("a", 1), blip::Error);
}

TEST_CASE("tokenizer rejects inconsistent inputs") {
    SmallVocab vocab;
    auto types = vocab.types();
    types.pop_back();
    CHECK_THROWS_AS(blip::Tokenizer(vocab.tokens, types, {}, vocab.special()), blip::Error);
    auto special = vocab.special();
    special.enc = 36;
    CHECK_THROWS_AS(blip::Tokenizer(vocab.tokens, vocab.types(), {}, special), blip::Error);
    special = vocab.special();
    special.unk = -1;
    CHECK_THROWS_AS(blip::Tokenizer(vocab.tokens, vocab.types(), {}, special), blip::Error);
}

TEST_CASE("read_vocab_file line endings and errors") {
    const auto dir = blip_test::scratch_dir("tokenizer");
    const auto write = [&](const std::string& name, const std::string& bytes) {
        std::ofstream out(dir / name, std::ios::binary);
        out << bytes;
        return (dir / name).string();
    };
    CHECK(blip::read_vocab_file(write("unix.txt", "a\nb\n")) == std::vector<std::string>{"a", "b"});
    CHECK(blip::read_vocab_file(write("mixed.txt", "a\r\nb\rc\n\nd")) == std::vector<std::string>{"a", "b", "c", "", "d"});
    CHECK(blip::read_vocab_file(write("empty.txt", "")).empty());
    CHECK_THROWS_AS(blip::read_vocab_file(write("bad.txt", "a\n\xFF\n")), blip::Error);
    CHECK_THROWS_AS(blip::read_vocab_file((dir / "missing.txt").string()), blip::Error);
}

TEST_CASE("unicode UTF-8 decoding") {
    using blip::unicode::decode_utf8;
    CHECK(decode_utf8("a\xC3\xA9\xE4\xB8\xAD\xF0\x9F\x98\x80") == std::u32string{U'a', 0xE9, 0x4E2D, 0x1F600});
    // One U+FFFD per maximal subpart, as Python's "replace" error handler.
    CHECK(decode_utf8("\xE4\xB8" "a") == std::u32string{0xFFFD, U'a'});
    CHECK(decode_utf8("\xF0\x80\x80") == std::u32string{0xFFFD, 0xFFFD, 0xFFFD});
    CHECK(decode_utf8("\xED\xA0\x80") == std::u32string{0xFFFD, 0xFFFD, 0xFFFD});
    CHECK(decode_utf8("\xF4\x8F\xBF\xBF") == std::u32string{0x10FFFF});
    CHECK(decode_utf8("\xF4\x90\x80\x80") == std::u32string{0xFFFD, 0xFFFD, 0xFFFD, 0xFFFD});
    CHECK(blip::unicode::encode_utf8(U"a\u00E9\U0001F600") == "a\xC3\xA9\xF0\x9F\x98\x80");
    CHECK(blip::unicode::find_invalid_utf8("ok \xC3\xA9") == std::string_view::npos);
    CHECK(blip::unicode::find_invalid_utf8("ok\xC3") == 2);
}

TEST_CASE("unicode properties and normalization") {
    using blip::unicode::Category;
    CHECK(blip::unicode::category(U'A') == Category::Lu);
    CHECK(blip::unicode::category(0x0301) == Category::Mn);
    CHECK(blip::unicode::category(0x3000) == Category::Zs);
    CHECK(blip::unicode::category(0x00AD) == Category::Cf);
    CHECK(blip::unicode::category(0x0378) == Category::Cn);
    CHECK(blip::unicode::category(0x10FFFF) == Category::Cn);
    CHECK(blip::unicode::category(0x110000) == Category::Cn);
    CHECK(blip::unicode::category(0x201C) == Category::Pi);
    CHECK(blip::unicode::is_python_space(0x2028));
    CHECK(blip::unicode::is_python_space(0x1C));
    CHECK_FALSE(blip::unicode::is_python_space(0x200B));

    std::u32string lower;
    blip::unicode::append_lower(0x0130, lower);
    CHECK(lower == std::u32string{U'i', 0x0307});
    lower.clear();
    blip::unicode::append_lower(0x1E9E, lower);  // capital sharp s
    CHECK(lower == std::u32string{0xDF});

    // Hangul syllable: leading consonant, vowel, trailing consonant.
    CHECK(blip::unicode::nfd(U"\uD55C") == std::u32string{0x1112, 0x1161, 0x11AB});
    // U+1E09 (c, cedilla, acute) fully decomposed; marks reordered by combining class.
    CHECK(blip::unicode::nfd(U"\u1E09") == std::u32string{U'c', 0x0327, 0x0301});
    CHECK(blip::unicode::nfd(U"a\u0301\u0327") == std::u32string{U'a', 0x0327, 0x0301});
    CHECK(blip::unicode::combining_class(0x0301) == 230);
    CHECK(blip::unicode::combining_class(U'a') == 0);
}

}  // namespace test_tokenizer
