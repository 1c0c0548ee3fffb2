// Checkpoint readers of blip-convert: safetensors (single and sharded), torch.save zip
// archives with the restricted unpickler, Salesforce original names, and rejection of
// damaged or hostile files.
#include "convert/checkpoint_folder.hpp"
#include "convert/original_names.hpp"

#include "support/errors.hpp"
#include "support/golden.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace test_checkpoint {

namespace {

namespace fs = std::filesystem;
using namespace blip::convert;
using Bytes = std::vector<std::uint8_t>;

fs::path fixture(const std::string& name) { return fs::path(BLIP_SOURCE_DIR) / "tests" / "data" / "checkpoint" / name; }
fs::path golden_models() { return blip_test::golden_dir() / "models"; }

void write_bytes(const fs::path& path, const Bytes& bytes) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    if (!out.good()) throw std::runtime_error("cannot write " + path.string());
}

Bytes read_bytes(const fs::path& path) {
    const std::string text = blip_test::read_text(path);
    return Bytes(text.begin(), text.end());
}

// Runs `action` and returns the message of the blip::Error it throws, or "" if it throws
// nothing. Any other exception type escapes and fails the test.
using blip_test::error_of;

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

std::string join(const std::vector<std::string>& names) {
    std::string text;
    for (const auto& name : names) text += (text.empty() ? "" : ", ") + name;
    return text.empty() ? "(none)" : text;
}

// Tensors present in both checkpoints are compared bit for bit; names present in only
// one are listed.
struct Comparison {
    std::size_t compared = 0;
    std::vector<std::string> mismatched;
    std::vector<std::string> only_in_actual;
    std::vector<std::string> only_in_expected;
};

Comparison compare_checkpoints(const Checkpoint& actual, const Checkpoint& expected) {
    Comparison result;
    for (const SourceTensor& tensor : actual.tensors()) {
        const SourceTensor* other = expected.find(tensor.name);
        if (!other) {
            result.only_in_actual.push_back(tensor.name);
            continue;
        }
        ++result.compared;
        const bool same = tensor.dtype == other->dtype && tensor.shape == other->shape &&
                          tensor.nbytes == other->nbytes &&
                          (tensor.nbytes == 0 || std::memcmp(tensor.data, other->data, tensor.nbytes) == 0);
        if (!same) result.mismatched.push_back(tensor.name);
    }
    for (const SourceTensor& tensor : expected.tensors()) {
        if (!actual.find(tensor.name)) result.only_in_expected.push_back(tensor.name);
    }
    std::sort(result.only_in_actual.begin(), result.only_in_actual.end());
    std::sort(result.only_in_expected.begin(), result.only_in_expected.end());
    return result;
}

void put16(Bytes& out, std::uint16_t value) {
    for (int i = 0; i < 2; ++i) out.push_back(static_cast<std::uint8_t>(value >> (8 * i)));
}
void put32(Bytes& out, std::uint32_t value) {
    for (int i = 0; i < 4; ++i) out.push_back(static_cast<std::uint8_t>(value >> (8 * i)));
}
void put64(Bytes& out, std::uint64_t value) {
    for (int i = 0; i < 8; ++i) out.push_back(static_cast<std::uint8_t>(value >> (8 * i)));
}
void append(Bytes& out, const std::string& text) { out.insert(out.end(), text.begin(), text.end()); }
void append(Bytes& out, const Bytes& bytes) { out.insert(out.end(), bytes.begin(), bytes.end()); }

// A zip archive of stored entries, as torch.save writes it. `declared_size` overrides the
// size written into the central directory, `method` the compression method.
struct ZipEntrySpec {
    std::string name;
    Bytes data;
    std::uint16_t method = 0;
    std::int64_t declared_size = -1;
};

Bytes build_zip(const std::vector<ZipEntrySpec>& entries, bool zip64 = false) {
    Bytes out;
    std::vector<std::uint64_t> offsets;
    for (const auto& entry : entries) {
        offsets.push_back(out.size());
        put32(out, 0x04034b50);
        put16(out, zip64 ? 45 : 20);
        put16(out, 0);             // flags
        put16(out, entry.method);  // compression method
        put32(out, 0);             // time and date
        put32(out, 0);             // CRC-32, which the reader does not check
        put32(out, static_cast<std::uint32_t>(entry.data.size()));
        put32(out, static_cast<std::uint32_t>(entry.data.size()));
        put16(out, static_cast<std::uint16_t>(entry.name.size()));
        put16(out, 0);
        append(out, entry.name);
        append(out, entry.data);
    }
    const std::uint64_t directory_offset = out.size();
    for (std::size_t i = 0; i < entries.size(); ++i) {
        const auto& entry = entries[i];
        const std::uint64_t size = entry.declared_size >= 0 ? static_cast<std::uint64_t>(entry.declared_size)
                                                            : entry.data.size();
        put32(out, 0x02014b50);
        put16(out, 45);
        put16(out, zip64 ? 45 : 20);
        put16(out, 0);
        put16(out, entry.method);
        put32(out, 0);
        put32(out, 0);
        put32(out, zip64 ? 0xffffffffu : static_cast<std::uint32_t>(size));
        put32(out, zip64 ? 0xffffffffu : static_cast<std::uint32_t>(size));
        put16(out, static_cast<std::uint16_t>(entry.name.size()));
        put16(out, zip64 ? 28 : 0);  // extra field length
        put16(out, 0);               // comment length
        put16(out, 0);               // disk
        put16(out, 0);               // internal attributes
        put32(out, 0);               // external attributes
        put32(out, zip64 ? 0xffffffffu : static_cast<std::uint32_t>(offsets[i]));
        append(out, entry.name);
        if (zip64) {
            put16(out, 0x0001);
            put16(out, 24);
            put64(out, size);
            put64(out, size);
            put64(out, offsets[i]);
        }
    }
    const std::uint64_t directory_size = out.size() - directory_offset;
    if (zip64) {
        const std::uint64_t record = out.size();
        put32(out, 0x06064b50);
        put64(out, 44);
        put16(out, 45);
        put16(out, 45);
        put32(out, 0);
        put32(out, 0);
        put64(out, entries.size());
        put64(out, entries.size());
        put64(out, directory_size);
        put64(out, directory_offset);
        put32(out, 0x07064b50);
        put32(out, 0);
        put64(out, record);
        put32(out, 1);
    }
    put32(out, 0x06054b50);
    put16(out, 0);
    put16(out, 0);
    put16(out, zip64 ? 0xffff : static_cast<std::uint16_t>(entries.size()));
    put16(out, zip64 ? 0xffff : static_cast<std::uint16_t>(entries.size()));
    put32(out, zip64 ? 0xffffffffu : static_cast<std::uint32_t>(directory_size));
    put32(out, zip64 ? 0xffffffffu : static_cast<std::uint32_t>(directory_offset));
    put16(out, 0);
    return out;
}

// Writes pickle opcodes (protocol 2) for hand-made state dicts and hostile pickles.
struct PickleWriter {
    Bytes bytes;

    PickleWriter() {
        bytes.push_back(0x80);  // PROTO 2
        bytes.push_back(0x02);
    }

    PickleWriter& op(char opcode) {
        bytes.push_back(static_cast<std::uint8_t>(opcode));
        return *this;
    }
    PickleWriter& global(const std::string& module, const std::string& name) {
        op('c');
        append(bytes, module + "\n" + name + "\n");
        return *this;
    }
    PickleWriter& text(const std::string& value) {
        op('X');
        put32(bytes, static_cast<std::uint32_t>(value.size()));
        append(bytes, value);
        return *this;
    }
    PickleWriter& integer(std::int32_t value) {
        op('J');
        put32(bytes, static_cast<std::uint32_t>(value));
        return *this;
    }
    PickleWriter& int_tuple(const std::vector<std::int32_t>& values) {
        op('(');
        for (auto value : values) integer(value);
        return op('t');
    }
    // One state dict entry: name -> _rebuild_tensor_v2(storage, offset, shape, stride, False, OrderedDict()).
    PickleWriter& tensor(const std::string& name, const std::string& storage_type, const std::string& key,
                         std::int32_t numel, std::int32_t offset, const std::vector<std::int32_t>& shape,
                         const std::vector<std::int32_t>& stride) {
        text(name);
        global("torch._utils", "_rebuild_tensor_v2");
        op('(');
        op('(').text("storage").global("torch", storage_type).text(key).text("cpu").integer(numel).op('t');
        op('Q');  // BINPERSID
        integer(offset);
        int_tuple(shape);
        int_tuple(stride);
        op('\x89');  // NEWFALSE
        global("collections", "OrderedDict").op(')').op('R');
        op('t');
        return op('R');
    }
    PickleWriter& begin_state_dict() { return global("collections", "OrderedDict").op(')').op('R').op('('); }
    PickleWriter& end_state_dict() { return op('u').op('.'); }
};

Bytes float_bytes(const std::vector<float>& values) {
    Bytes out(values.size() * 4);
    std::memcpy(out.data(), values.data(), out.size());
    return out;
}

// A small state dict: "weight" [2, 3] over storage 0, "weight_t" its transpose,
// "tail" a slice at storage offset 4, all sharing one storage of 6 floats.
Bytes small_state_dict_zip(bool zip64 = false) {
    PickleWriter pickle;
    pickle.begin_state_dict();
    pickle.tensor("weight", "FloatStorage", "0", 6, 0, {2, 3}, {3, 1});
    pickle.tensor("weight_t", "FloatStorage", "0", 6, 0, {3, 2}, {1, 3});
    pickle.tensor("tail", "FloatStorage", "0", 6, 4, {2}, {1});
    pickle.end_state_dict();
    return build_zip({{"archive/data.pkl", pickle.bytes},
                      {"archive/data/0", float_bytes({0, 1, 2, 3, 4, 5})},
                      {"archive/version", {'3', '\n'}}},
                     zip64);
}

// A safetensors file from a JSON header and a data section.
Bytes build_safetensors(const std::string& header, const Bytes& data) {
    Bytes out;
    put64(out, header.size());
    append(out, header);
    append(out, data);
    return out;
}

std::vector<float> values_of(const Checkpoint& checkpoint, const std::string& name) {
    const SourceTensor* tensor = checkpoint.find(name);
    REQUIRE_MESSAGE(tensor != nullptr, "missing tensor " << name);
    return tensor->to_f32();
}

template <class T>
std::vector<T> raw_values(const SourceTensor& tensor) {
    std::vector<T> values(tensor.nbytes / sizeof(T));
    if (tensor.nbytes) std::memcpy(values.data(), tensor.data, tensor.nbytes);
    return values;
}

void check_equal_checkpoints(const Checkpoint& actual, const Checkpoint& expected,
                             const std::vector<std::string>& expected_only_in_actual,
                             const std::vector<std::string>& expected_only_in_expected) {
    const Comparison comparison = compare_checkpoints(actual, expected);
    MESSAGE(actual.source << " vs " << expected.source << ": " << comparison.compared << " tensors compared; only in the first: "
                          << join(comparison.only_in_actual) << "; only in the second: " << join(comparison.only_in_expected));
    CHECK(comparison.compared > 0);
    CHECK_MESSAGE(comparison.mismatched.empty(), "tensors that differ: " << join(comparison.mismatched));
    CHECK(comparison.only_in_actual == expected_only_in_actual);
    CHECK(comparison.only_in_expected == expected_only_in_expected);
}

}  // namespace

// ---------------------------------------------------------------------------------------
// Golden tiny checkpoints in every layout

TEST_CASE("safetensors tiny caption") {
    BLIP_REQUIRE_GOLDEN();
    const Checkpoint checkpoint = read_safetensors((golden_models() / "tiny-caption" / "model.safetensors").string());
    CHECK(checkpoint.tensors().size() == 94);
    const SourceTensor* position = checkpoint.find("vision_model.embeddings.position_embedding");
    REQUIRE(position != nullptr);
    CHECK(position->dtype == SourceDType::F32);
    CHECK(position->shape == std::vector<std::int64_t>{1, 17, 48});
    CHECK(position->nbytes == 17 * 48 * 4);
    const SourceTensor* ids = checkpoint.find("text_decoder.bert.embeddings.position_ids");
    REQUIRE(ids != nullptr);
    CHECK(ids->dtype == SourceDType::I64);
    const auto id_values = raw_values<std::int64_t>(*ids);
    REQUIRE(id_values.size() == 64);
    CHECK(id_values[0] == 0);
    CHECK(id_values[63] == 63);
    CHECK(checkpoint.find("no.such.tensor") == nullptr);
    CHECK(contains(error_of([&] { ids->to_f32(); }), "text_decoder.bert.embeddings.position_ids"));
}

TEST_CASE("safetensors dedup matches full") {
    BLIP_REQUIRE_GOLDEN();
    const Checkpoint full = read_safetensors((golden_models() / "tiny-caption" / "model.safetensors").string());
    const Checkpoint dedup = read_safetensors((golden_models() / "tiny-caption-dedup" / "model.safetensors").string());
    check_equal_checkpoints(dedup, full, {},
                            {"text_decoder.bert.embeddings.position_ids", "text_decoder.cls.predictions.decoder.bias",
                             "text_decoder.cls.predictions.decoder.weight"});
}

TEST_CASE("pytorch bin matches safetensors") {
    BLIP_REQUIRE_GOLDEN();
    const Checkpoint full = read_safetensors((golden_models() / "tiny-caption" / "model.safetensors").string());
    const Checkpoint bin = read_pytorch_zip((golden_models() / "tiny-caption-bin" / "pytorch_model.bin").string());
    check_equal_checkpoints(bin, full, {}, {});
}

TEST_CASE("checkpoint folder picks the file") {
    BLIP_REQUIRE_GOLDEN();
    const Checkpoint safetensors = read_checkpoint_folder((golden_models() / "tiny-caption").string());
    CHECK(contains(safetensors.source, "model.safetensors"));
    const Checkpoint bin = read_checkpoint_folder((golden_models() / "tiny-caption-bin").string());
    CHECK(contains(bin.source, "pytorch_model.bin"));
    CHECK(compare_checkpoints(bin, safetensors).mismatched.empty());
    const Checkpoint by_content = read_checkpoint_file((golden_models() / "tiny-caption-original.pth").string());
    CHECK(by_content.find("visual_encoder.pos_embed") != nullptr);
    CHECK(contains(error_of([] { read_checkpoint_folder((golden_models() / "..").string()); }), "model.safetensors"));
}

TEST_CASE("sharded safetensors index") {
    BLIP_REQUIRE_GOLDEN();
    // Split tiny-caption into two shards by re-emitting each half as its own file.
    const Checkpoint full = read_safetensors((golden_models() / "tiny-caption" / "model.safetensors").string());
    const fs::path dir = blip_test::scratch_dir("checkpoint-sharded");
    nlohmann::ordered_json weight_map;
    for (int shard = 0; shard < 2; ++shard) {
        nlohmann::ordered_json header;
        Bytes data;
        const std::string file = "model-0000" + std::to_string(shard + 1) + "-of-00002.safetensors";
        for (std::size_t i = static_cast<std::size_t>(shard); i < full.tensors().size(); i += 2) {
            const SourceTensor& tensor = full.tensors()[i];
            header[tensor.name] = {{"dtype", source_dtype_name(tensor.dtype)},
                                   {"shape", tensor.shape},
                                   {"data_offsets", {data.size(), data.size() + tensor.nbytes}}};
            data.insert(data.end(), tensor.data, tensor.data + tensor.nbytes);
            weight_map[tensor.name] = file;
        }
        write_bytes(dir / file, build_safetensors(header.dump(), data));
    }
    nlohmann::ordered_json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", weight_map}};
    std::ofstream(dir / "model.safetensors.index.json") << index.dump();
    const Checkpoint sharded = read_safetensors_sharded((dir / "model.safetensors.index.json").string());
    check_equal_checkpoints(sharded, full, {}, {});
    const Checkpoint from_folder = read_checkpoint_folder(dir.string());
    CHECK(from_folder.tensors().size() == full.tensors().size());

    // An index naming a tensor its shard lacks, or a file outside the folder, is rejected.
    index["weight_map"]["not.in.any.shard"] = "model-00001-of-00002.safetensors";
    std::ofstream(dir / "bad.index.json") << index.dump();
    CHECK(contains(error_of([&] { read_safetensors_sharded((dir / "bad.index.json").string()); }), "not.in.any.shard"));
    index["weight_map"]["not.in.any.shard"] = "../model.safetensors";
    std::ofstream(dir / "escape.index.json") << index.dump();
    CHECK(contains(error_of([&] { read_safetensors_sharded((dir / "escape.index.json").string()); }),
                   "not a plain file name"));
}

namespace {

void check_original(const std::string& original_file, const std::string& folder, blip::Task task,
                    const std::vector<std::string>& expected_only_in_safetensors) {
    const Checkpoint original = read_pytorch_zip((golden_models() / original_file).string());
    const Checkpoint reference = read_safetensors((golden_models() / folder / "model.safetensors").string());
    std::vector<std::string> ignored;
    const Checkpoint mapped = map_original_names(original, task, &ignored);
    CHECK_MESSAGE(ignored.empty(), "ignored: " << join(ignored));
    CHECK(mapped.tensors().size() == original.tensors().size());
    check_equal_checkpoints(mapped, reference, {}, expected_only_in_safetensors);
}

}  // namespace

TEST_CASE("original caption names") {
    BLIP_REQUIRE_GOLDEN();
    check_original("tiny-caption-original.pth", "tiny-caption", blip::Task::Caption,
                   {"text_decoder.bert.embeddings.position_ids"});
}

TEST_CASE("original vqa names") {
    BLIP_REQUIRE_GOLDEN();
    check_original("tiny-vqa-original.pth", "tiny-vqa", blip::Task::Vqa,
                   {"text_decoder.bert.embeddings.position_ids", "text_encoder.embeddings.position_ids"});
}

TEST_CASE("original itm names") {
    BLIP_REQUIRE_GOLDEN();
    check_original("tiny-itm-original.pth", "tiny-itm", blip::Task::Itm, {"text_encoder.embeddings.position_ids"});
}

TEST_CASE("original checkpoint for another task") {
    BLIP_REQUIRE_GOLDEN();
    // The VQA file mapped for captioning keeps the vision tower and the decoder only.
    const Checkpoint vqa = read_pytorch_zip((golden_models() / "tiny-vqa-original.pth").string());
    std::vector<std::string> ignored;
    const Checkpoint caption = map_original_names(vqa, blip::Task::Caption, &ignored);
    CHECK(!ignored.empty());
    for (const auto& name : ignored) CHECK_MESSAGE(name.rfind("text_encoder.", 0) == 0, name);
    CHECK(caption.find("text_decoder.cls.predictions.bias") != nullptr);
    CHECK(caption.find("text_encoder.embeddings.word_embeddings.weight") == nullptr);

    // A captioning file has no ITM head.
    const Checkpoint original = read_pytorch_zip((golden_models() / "tiny-caption-original.pth").string());
    CHECK(contains(error_of([&] { map_original_names(original, blip::Task::Itm, nullptr); }), "itm"));
    // A transformers checkpoint is not an original one.
    const Checkpoint hf = read_safetensors((golden_models() / "tiny-caption" / "model.safetensors").string());
    CHECK(contains(error_of([&] { map_original_names(hf, blip::Task::Caption, nullptr); }), "visual_encoder"));
}

namespace {

// Salesforce's name for a transformers tensor name: the inverse of the vision renames,
// written out independently of convert/original_names.hpp.
std::string salesforce_name(std::string name) {
    auto replace = [&](const std::string& from, const std::string& to) {
        const auto at = name.find(from);
        if (at != std::string::npos) name.replace(at, from.size(), to);
    };
    if (name.rfind("vision_model.", 0) != 0) return name;
    replace("vision_model.embeddings.class_embedding", "visual_encoder.cls_token");
    replace("vision_model.embeddings.position_embedding", "visual_encoder.pos_embed");
    replace("vision_model.embeddings.patch_embedding.", "visual_encoder.patch_embed.proj.");
    replace("vision_model.post_layernorm.", "visual_encoder.norm.");
    replace("vision_model.encoder.layers.", "visual_encoder.blocks.");
    replace(".layer_norm1.", ".norm1.");
    replace(".layer_norm2.", ".norm2.");
    replace(".self_attn.projection.", ".attn.proj.");
    replace(".self_attn.qkv.", ".attn.qkv.");
    return name;
}

}  // namespace

TEST_CASE("original names cover full-size manifests") {
    BLIP_REQUIRE_GOLDEN();
    // Each transformers model with the Salesforce file it was converted from and the
    // tensors that file contains beside the ones the task uses (BLIP's blip_pretrain.py and
    // blip_retrieval.py: momentum encoders, contrastive queues, temperature).
    struct Case {
        const char* manifest;
        blip::Task task;
        bool pretrain_extras;   // model_base_capfilt_large.pth is a pre-training checkpoint
        bool retrieval_extras;  // model_*_retrieval_coco.pth
    };
    const Case cases[] = {
        {"blip-image-captioning-base", blip::Task::Caption, true, false},
        {"blip-image-captioning-large", blip::Task::Caption, false, false},
        {"blip-vqa-base", blip::Task::Vqa, false, false},
        {"blip-itm-base-coco", blip::Task::Itm, false, true},
        {"blip-itm-large-coco", blip::Task::Itm, false, true},
    };
    for (const Case& c : cases) {
        CAPTURE(c.manifest);
        const auto manifest = blip_test::read_json(blip_test::golden_dir() / "manifests" / (std::string(c.manifest) + ".json"));
        Checkpoint original;
        original.source = c.manifest;
        std::set<std::string> expected_names;
        std::vector<std::string> expected_ignored;
        auto add = [&](const std::string& name, std::vector<std::int64_t> shape) {
            SourceTensor tensor;  // names and shapes only; map_original_names does not read data here
            tensor.name = name;
            tensor.shape = std::move(shape);
            original.add(std::move(tensor));
        };
        for (const auto& [name, info] : manifest["tensors"].items()) {
            add(salesforce_name(name), info["shape"].get<std::vector<std::int64_t>>());
            expected_names.insert(name);
        }
        auto add_extra = [&](const std::string& name) {
            add(name, {1});
            expected_ignored.push_back(name);
        };
        if (c.pretrain_extras || c.retrieval_extras) {
            for (const auto& [name, info] : manifest["tensors"].items()) {
                const std::string original_name = salesforce_name(name);
                if (original_name.rfind("visual_encoder.", 0) == 0) add_extra("visual_encoder_m." + original_name.substr(15));
            }
            add_extra("text_encoder_m.embeddings.word_embeddings.weight");
            add_extra("text_encoder_m.encoder.layer.0.attention.self.query.weight");
            add_extra("vision_proj_m.weight");
            add_extra("text_proj_m.bias");
            add_extra("image_queue");
            add_extra("text_queue");
            add_extra("temp");
        }
        if (c.pretrain_extras) {
            add_extra("queue_ptr");
            add_extra("text_encoder.embeddings.word_embeddings.weight");
            add_extra("text_encoder.encoder.layer.11.crossattention.self.key.weight");
            add_extra("vision_proj.weight");
            add_extra("text_proj.weight");
            add_extra("itm_head.weight");
        }
        if (c.retrieval_extras) {
            add_extra("idx_queue");
            add_extra("ptr_queue");
        }

        std::vector<std::string> ignored;
        const Checkpoint mapped = map_original_names(original, c.task, &ignored);
        std::set<std::string> mapped_names;
        for (const auto& tensor : mapped.tensors()) {
            mapped_names.insert(tensor.name);
            if (manifest["tensors"].contains(tensor.name))
                CHECK(tensor.shape == manifest["tensors"].at(tensor.name).at("shape").get<std::vector<std::int64_t>>());
        }
        CHECK(mapped_names == expected_names);
        std::sort(ignored.begin(), ignored.end());
        std::sort(expected_ignored.begin(), expected_ignored.end());
        CHECK(ignored == expected_ignored);
    }
}

TEST_CASE("unknown vision tensor rejected") {
    Checkpoint original;
    original.source = "hand-made";
    for (const char* name : {"visual_encoder.patch_embed.proj.weight", "visual_encoder.pos_embed",
                             "visual_encoder.blocks.0.attn.qkv.weight", "visual_encoder.blocks.x.attn.qkv.weight"}) {
        SourceTensor tensor;
        tensor.name = name;
        original.add(tensor);
    }
    CHECK(contains(error_of([&] { map_original_names(original, blip::Task::Caption, nullptr); }),
                   "visual_encoder.blocks.x.attn.qkv.weight"));
}

// ---------------------------------------------------------------------------------------
// Position embedding resizing

TEST_CASE("position embedding interpolation matches torch") {
    // The inputs follow a formula; the expected values are what PyTorch 1.13.1 computes
    // with torch.nn.functional.interpolate(mode="bicubic", align_corners=False) on the
    // grid, class token kept, as Salesforce's interpolate_pos_embed does.
    auto make = [](std::int64_t grid) {
        std::vector<float> values{-1.0f, -2.0f};
        for (std::int64_t y = 0; y < grid; ++y)
            for (std::int64_t x = 0; x < grid; ++x)
                for (std::int64_t c = 0; c < 2; ++c)
                    values.push_back(static_cast<float>((y * grid + x) * 0.5 + c * 0.25 - x * x * 0.125 +
                                                        ((x * y) % 3) * 0.75 - c * y * 0.375));
        return values;
    };
    struct Case {
        std::int64_t grid, new_grid;
        std::vector<float> expected;
    };
    const Case cases[] = {
        {3, 5, {-1.0f, -2.0f, -0.17308794f, 0.112912104f, -0.0302518215f, 0.255748212f, 0.159000158f, 0.445000201f,
                0.213252157f, 0.4992522f, 0.217088267f, 0.503088295f, 0.415248722f, 0.546748579f, 0.673729122f,
                0.805228829f, 1.08600116f, 1.21750093f, 1.45075309f, 1.58225298f, 1.66030514f, 1.79180491f,
                1.39200032f, 1.26700032f, 1.8735007f, 1.74850059f, 2.62500048f, 2.50000048f, 3.24150062f,
                3.11650062f, 3.58400083f, 3.45900083f, 2.36875224f, 1.98725235f, 3.16075253f, 2.77925229f,
                4.16400051f, 3.78250051f, 4.28866863f, 3.90716839f, 4.17605686f, 3.79455686f, 2.95708895f,
                2.42108893f, 3.95480466f, 3.41880465f, 5.09100151f, 4.55500078f, 4.76055717f, 4.22455692f,
                4.24817753f, 3.71217752f}},
        {5, 3, {-1.0f, -2.0f, 0.802727997f, 0.955505669f, 1.66203833f, 1.814816f, 0.863941073f, 1.01671886f,
                5.62500143f, 5.12500095f, 6.25f, 5.75f, 6.09722042f, 5.59722042f, 9.56764412f, 8.41486645f,
                10.8379602f, 9.68518257f, 9.70318413f, 8.55040646f}},
    };
    for (const Case& c : cases) {
        CAPTURE(c.grid);
        const std::vector<float> input = make(c.grid);
        SourceTensor tensor;
        tensor.name = "pos_embed";
        tensor.shape = {1, 1 + c.grid * c.grid, 2};
        tensor.data = reinterpret_cast<const std::uint8_t*>(input.data());
        tensor.nbytes = input.size() * 4;
        const std::vector<float> actual = interpolate_position_embedding(tensor, c.new_grid);
        REQUIRE(actual.size() == c.expected.size());
        for (std::size_t i = 0; i < actual.size(); ++i) {
            CAPTURE(i);
            CHECK(actual[i] == doctest::Approx(c.expected[i]).epsilon(1e-6));
        }
    }
}

TEST_CASE("original names with another image size") {
    BLIP_REQUIRE_GOLDEN();
    const Checkpoint original = read_pytorch_zip((golden_models() / "tiny-caption-original.pth").string());
    const Checkpoint same = map_original_names(original, blip::Task::Caption, nullptr, 64);
    CHECK(same.find("vision_model.embeddings.position_embedding")->data == original.find("visual_encoder.pos_embed")->data);

    const Checkpoint resized = map_original_names(original, blip::Task::Caption, nullptr, 96);
    const SourceTensor* position = resized.find("vision_model.embeddings.position_embedding");
    REQUIRE(position != nullptr);
    CHECK(position->shape == std::vector<std::int64_t>{1, 37, 48});
    CHECK(position->to_f32() == interpolate_position_embedding(*original.find("visual_encoder.pos_embed"), 6));
    CHECK(resized.tensors().size() == same.tensors().size());

    // 100 pixels give the 6x6 grid of 96, because BLIP's ViT rounds the grid down.
    const Checkpoint rounded = map_original_names(original, blip::Task::Caption, nullptr, 100);
    CHECK(rounded.find("vision_model.embeddings.position_embedding")->to_f32() == position->to_f32());
    CHECK(contains(error_of([&] { map_original_names(original, blip::Task::Caption, nullptr, 8); }),
                   "smaller than the patch size 16"));
}

// ---------------------------------------------------------------------------------------
// torch.save files made by PyTorch (tests/data/checkpoint/make_fixtures.py)

namespace {

void check_fixture_tensors(const Checkpoint& checkpoint) {
    CHECK(checkpoint.tensors().size() == 13);
    CHECK(checkpoint.tensors().front().name == "contiguous");
    std::vector<float> base(24);
    for (int i = 0; i < 24; ++i) base[static_cast<std::size_t>(i)] = static_cast<float>(i);
    CHECK(values_of(checkpoint, "contiguous") == base);

    std::vector<float> transposed;
    for (int column = 0; column < 6; ++column)
        for (int row = 0; row < 4; ++row) transposed.push_back(static_cast<float>(row * 6 + column));
    CHECK(checkpoint.find("transposed")->shape == std::vector<std::int64_t>{6, 4});
    CHECK(values_of(checkpoint, "transposed") == transposed);
    CHECK(values_of(checkpoint, "row_slice") == std::vector<float>(base.begin() + 6, base.begin() + 18));
    CHECK(values_of(checkpoint, "column_slice") == std::vector<float>{2, 3, 8, 9, 14, 15, 20, 21});

    CHECK(checkpoint.find("half")->dtype == SourceDType::F16);
    CHECK(values_of(checkpoint, "half") == std::vector<float>{1.5f, -2.25f, 65504.0f, 5.9604645e-08f});
    CHECK(checkpoint.find("bfloat16")->dtype == SourceDType::BF16);
    CHECK(values_of(checkpoint, "bfloat16") == std::vector<float>{1.0f, -3.5f, 1.2676506e30f});
    CHECK(raw_values<std::int64_t>(*checkpoint.find("long")) == std::vector<std::int64_t>{1, -2, 1LL << 40});
    CHECK(checkpoint.find("long")->shape == std::vector<std::int64_t>{1, 3});
    CHECK(raw_values<std::int32_t>(*checkpoint.find("int")) == std::vector<std::int32_t>{7, -7});
    CHECK(raw_values<std::uint8_t>(*checkpoint.find("byte")) == std::vector<std::uint8_t>{0, 255});
    CHECK(checkpoint.find("bool")->dtype == SourceDType::Bool);
    CHECK(raw_values<std::uint8_t>(*checkpoint.find("bool")) == std::vector<std::uint8_t>{1, 0, 1});
    CHECK(checkpoint.find("scalar")->shape.empty());
    CHECK(values_of(checkpoint, "scalar") == std::vector<float>{0.25f});
    CHECK(checkpoint.find("empty")->shape == std::vector<std::int64_t>{0, 5});
    CHECK(checkpoint.find("empty")->nbytes == 0);
    CHECK(values_of(checkpoint, "parameter") == std::vector<float>{3.0f, 3.0f});
}

}  // namespace

TEST_CASE("torch fixture plain state dict") {
    check_fixture_tensors(read_pytorch_zip(fixture("plain_state_dict.pth").string()));
}

TEST_CASE("torch fixture with optimizer and config") {
    // {"model": ..., "optimizer": AdamW state (float64 tensors), "config": {... 2**70 ...}, "epoch": 4}
    for (const char* name : {"salesforce_protocol2.pth", "salesforce_protocol4.pth"}) {
        CAPTURE(name);
        check_fixture_tensors(read_pytorch_zip(fixture(name).string()));
    }
}

TEST_CASE("legacy torch format rejected") {
    CHECK(contains(error_of([] { read_pytorch_zip(fixture("legacy_format.pth").string()); }), "legacy"));
}

// ---------------------------------------------------------------------------------------
// Hand-made archives and hostile or damaged inputs

TEST_CASE("hand-made archive with shared storage") {
    for (bool zip64 : {false, true}) {
        CAPTURE(zip64);
        const fs::path path = blip_test::scratch_dir("checkpoint-zip") / (zip64 ? "zip64.pth" : "zip32.pth");
        write_bytes(path, small_state_dict_zip(zip64));
        const Checkpoint checkpoint = read_pytorch_zip(path.string());
        CHECK(values_of(checkpoint, "weight") == std::vector<float>{0, 1, 2, 3, 4, 5});
        CHECK(values_of(checkpoint, "weight_t") == std::vector<float>{0, 3, 1, 4, 2, 5});
        CHECK(values_of(checkpoint, "tail") == std::vector<float>{4, 5});
        CHECK(checkpoint.find("tail")->data == checkpoint.find("weight")->data + 16);
    }
}

TEST_CASE("forbidden global rejected") {
    const fs::path dir = blip_test::scratch_dir("checkpoint-hostile");
    // os.system("echo") through GLOBAL and REDUCE.
    PickleWriter system_call;
    system_call.global("os", "system").text("echo hacked").op('\x85').op('R').op('.');
    write_bytes(dir / "os_system.pth", build_zip({{"archive/data.pkl", system_call.bytes}}));
    const std::string message = error_of([&] { read_pytorch_zip((dir / "os_system.pth").string()); });
    CHECK(contains(message, "forbidden global os.system"));
    CHECK(contains(message, "data.pkl"));

    // builtins.eval through STACK_GLOBAL (protocol 4), inside an otherwise valid state dict.
    PickleWriter eval_call;
    eval_call.begin_state_dict();
    eval_call.text("weight");
    eval_call.op('\x8c').bytes.push_back(8);
    append(eval_call.bytes, "builtins");
    eval_call.op('\x8c').bytes.push_back(4);
    append(eval_call.bytes, "eval");
    eval_call.op('\x93').text("1+1").op('\x85').op('R').end_state_dict();
    write_bytes(dir / "eval.pth", build_zip({{"archive/data.pkl", eval_call.bytes}}));
    CHECK(contains(error_of([&] { read_pytorch_zip((dir / "eval.pth").string()); }), "forbidden global builtins.eval"));

    // An allowed global called in a way a state dict never does.
    PickleWriter storage_call;
    storage_call.global("torch", "FloatStorage").op(')').op('R').op('.');
    write_bytes(dir / "storage_call.pth", build_zip({{"archive/data.pkl", storage_call.bytes}}));
    CHECK(contains(error_of([&] { read_pytorch_zip((dir / "storage_call.pth").string()); }), "cannot be called"));

    // An opcode outside the allowed set (INST, protocol 0 object creation).
    PickleWriter instance;
    instance.op('(').op('i');
    append(instance.bytes, "os\nsystem\n");
    instance.op('.');
    write_bytes(dir / "inst.pth", build_zip({{"archive/data.pkl", instance.bytes}}));
    CHECK(contains(error_of([&] { read_pytorch_zip((dir / "inst.pth").string()); }), "opcode 0x69"));
}

TEST_CASE("damaged zip archives rejected") {
    const fs::path dir = blip_test::scratch_dir("checkpoint-zip-damaged");
    const Bytes data = float_bytes({0, 1, 2, 3, 4, 5});
    PickleWriter pickle;
    pickle.begin_state_dict().tensor("weight", "FloatStorage", "0", 6, 0, {2, 3}, {3, 1}).end_state_dict();

    // The central directory claims more bytes than the file holds.
    write_bytes(dir / "entry_size.pth",
                build_zip({{"archive/data.pkl", pickle.bytes}, {"archive/data/0", data, 0, 1 << 20}}));
    CHECK(contains(error_of([&] { read_pytorch_zip((dir / "entry_size.pth").string()); }), "past the end"));

    // Deflate-compressed entry.
    write_bytes(dir / "deflate.pth", build_zip({{"archive/data.pkl", pickle.bytes, 8}, {"archive/data/0", data}}));
    CHECK(contains(error_of([&] { read_pytorch_zip((dir / "deflate.pth").string()); }), "compressed (method 8)"));

    // The storage is shorter than its persistent id declares.
    write_bytes(dir / "short_storage.pth",
                build_zip({{"archive/data.pkl", pickle.bytes}, {"archive/data/0", float_bytes({0, 1, 2})}}));
    CHECK(contains(error_of([&] { read_pytorch_zip((dir / "short_storage.pth").string()); }), "archive/data/0"));

    // The tensor reads past the end of its storage.
    PickleWriter past_end;
    past_end.begin_state_dict().tensor("weight", "FloatStorage", "0", 6, 2, {2, 3}, {3, 1}).end_state_dict();
    write_bytes(dir / "past_storage.pth", build_zip({{"archive/data.pkl", past_end.bytes}, {"archive/data/0", data}}));
    CHECK(contains(error_of([&] { read_pytorch_zip((dir / "past_storage.pth").string()); }), "reads past its storage"));

    // The storage entry is missing.
    write_bytes(dir / "no_storage.pth", build_zip({{"archive/data.pkl", pickle.bytes}}));
    CHECK(contains(error_of([&] { read_pytorch_zip((dir / "no_storage.pth").string()); }), "missing"));

    // No data.pkl at all.
    write_bytes(dir / "no_pickle.pth", build_zip({{"archive/data/0", data}}));
    CHECK(contains(error_of([&] { read_pytorch_zip((dir / "no_pickle.pth").string()); }), "no data.pkl"));

    // Cut off before the end-of-central-directory record.
    Bytes truncated = build_zip({{"archive/data.pkl", pickle.bytes}, {"archive/data/0", data}});
    truncated.resize(truncated.size() - 30);
    write_bytes(dir / "truncated.pth", truncated);
    CHECK(contains(error_of([&] { read_pytorch_zip((dir / "truncated.pth").string()); }), "truncated.pth"));
}

TEST_CASE("damaged safetensors rejected") {
    const fs::path dir = blip_test::scratch_dir("checkpoint-safetensors-damaged");
    const Bytes data = float_bytes({1, 2, 3, 4});
    auto error_for = [&](const std::string& name, const Bytes& bytes) {
        write_bytes(dir / name, bytes);
        return error_of([&] { read_safetensors((dir / name).string()); });
    };

    const std::string good = R"({"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}})";
    CHECK(error_for("good.safetensors", build_safetensors(good, data)).empty());

    // Header length beyond the file, and a header cut in the middle.
    Bytes long_header;
    put64(long_header, 1000);
    append(long_header, "{\"a\":");
    CHECK(contains(error_for("header_length.safetensors", long_header), "header length 1000"));
    Bytes cut = build_safetensors(good, data);
    cut.resize(8 + good.size() / 2);
    CHECK(contains(error_for("cut_header.safetensors", cut), "header length"));
    Bytes short_length{1, 0, 0};
    CHECK(contains(error_for("short.safetensors", short_length), "too short"));
    // A header length that fits but whose JSON is incomplete.
    const std::string half = good.substr(0, good.size() / 2);
    CHECK(contains(error_for("half_json.safetensors", build_safetensors(half, {})), "not valid JSON"));

    // Data range past the end of the file.
    const std::string past = R"({"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,400]}})";
    CHECK(contains(error_for("past_end.safetensors", build_safetensors(past, data)), "data_offsets end at 400"));
    // Byte count that does not match the shape.
    const std::string mismatch = R"({"a":{"dtype":"F32","shape":[3,2],"data_offsets":[0,16]}})";
    CHECK(contains(error_for("mismatch.safetensors", build_safetensors(mismatch, data)), "needs 24"));
    // Two tensors over the same bytes.
    const std::string overlap =
        R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})";
    CHECK(contains(error_for("overlap.safetensors", build_safetensors(overlap, data)), "overlap"));
    // Unsupported dtype, negative dimension, offsets in the wrong order.
    const std::string f64 = R"({"a":{"dtype":"F64","shape":[2],"data_offsets":[0,16]}})";
    CHECK(contains(error_for("f64.safetensors", build_safetensors(f64, data)), "unsupported dtype F64"));
    const std::string negative = R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})";
    CHECK(contains(error_for("negative.safetensors", build_safetensors(negative, data)), "non-negative"));
    const std::string reversed = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})";
    CHECK(contains(error_for("reversed.safetensors", build_safetensors(reversed, data)), "end before"));
    const std::string huge = R"({"a":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,16]}})";
    CHECK(contains(error_for("huge.safetensors", build_safetensors(huge, data)), "overflows"));
    CHECK(contains(error_for("array.safetensors", build_safetensors("[1,2]", data)), "not a JSON object"));
}

TEST_CASE("empty and random files rejected") {
    const fs::path dir = blip_test::scratch_dir("checkpoint-garbage");
    write_bytes(dir / "empty.bin", {});
    CHECK(contains(error_of([&] { read_safetensors((dir / "empty.bin").string()); }), "empty"));
    CHECK(contains(error_of([&] { read_pytorch_zip((dir / "empty.bin").string()); }), "empty"));
    CHECK(!error_of([&] { read_checkpoint_file((dir / "empty.bin").string()); }).empty());

    Bytes random(4096);
    std::uint64_t state = 0x9E3779B97F4A7C15ull;
    for (auto& byte : random) {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        byte = static_cast<std::uint8_t>(state >> 56);
    }
    write_bytes(dir / "random.bin", random);
    CHECK(!error_of([&] { read_safetensors((dir / "random.bin").string()); }).empty());
    CHECK(contains(error_of([&] { read_pytorch_zip((dir / "random.bin").string()); }), "not a zip archive"));
    CHECK(!error_of([&] { read_checkpoint_file((dir / "random.bin").string()); }).empty());
    CHECK(contains(error_of([&] { read_safetensors((dir / "missing.safetensors").string()); }), "cannot open"));
}

TEST_CASE("corrupted copies never crash") {
    // Every truncation and many single-byte changes of small valid files must either read
    // or throw blip::Error; under AddressSanitizer this also checks every read's bounds.
    const fs::path dir = blip_test::scratch_dir("checkpoint-corrupt");
    struct Source {
        std::string name;
        Bytes bytes;
        bool zip;
    };
    const std::string header =
        R"({"__metadata__":{"format":"pt"},"a":{"dtype":"F16","shape":[2],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[2,2],"data_offsets":[4,20]}})";
    Bytes safetensors_data(20, 0x3c);
    const Source sources[] = {
        {"hand-made zip", small_state_dict_zip(), true},
        {"hand-made zip64", small_state_dict_zip(true), true},
        {"torch fixture", read_bytes(fixture("salesforce_protocol4.pth")), true},
        {"safetensors", build_safetensors(header, safetensors_data), false},
    };
    for (const Source& source : sources) {
        CAPTURE(source.name);
        std::size_t read_ok = 0, rejected = 0;
        auto attempt = [&](const Bytes& bytes) {
            // A new file each time: rewriting one file in place makes ext4 flush it to disk
            // on every close, which is a hundred times slower.
            const fs::path path = dir / ("variant-" + std::to_string(read_ok + rejected));
            write_bytes(path, bytes);
            const std::string message = error_of([&] {
                if (source.zip)
                    read_pytorch_zip(path.string());
                else
                    read_safetensors(path.string());
            });
            (message.empty() ? read_ok : rejected) += 1;
            fs::remove(path);
        };
        for (std::size_t length = 0; length < source.bytes.size(); ++length)
            attempt(Bytes(source.bytes.begin(), source.bytes.begin() + static_cast<std::ptrdiff_t>(length)));
        for (std::size_t at = 0; at < source.bytes.size(); ++at) {
            for (std::uint8_t change : {std::uint8_t{0xff}, std::uint8_t{0x80}, std::uint8_t{0x01}}) {
                Bytes bytes = source.bytes;
                bytes[at] ^= change;
                attempt(bytes);
            }
        }
        MESSAGE(source.name << ": " << read_ok << " variants read, " << rejected << " rejected");
        CHECK(rejected > 0);
    }
}

TEST_CASE("shipped vocabulary") {
    const std::string vocabulary = blip_test::read_text(fs::path(BLIP_SOURCE_DIR) / "convert" / "vocab_bert_base_uncased.txt");
    std::vector<std::string> lines;
    std::size_t start = 0;
    for (std::size_t at = vocabulary.find('\n'); at != std::string::npos; at = vocabulary.find('\n', start)) {
        lines.push_back(vocabulary.substr(start, at - start));
        start = at + 1;
    }
    REQUIRE(lines.size() == 30522);
    CHECK(lines[0] == "[PAD]");
    CHECK(lines[100] == "[UNK]");
    CHECK(lines[101] == "[CLS]");
    CHECK(lines[102] == "[SEP]");
    CHECK(lines[103] == "[MASK]");
    if (blip_test::golden_available())
        CHECK(vocabulary == blip_test::read_text(blip_test::golden_dir() / "tokenizer" / "vocab.txt"));
}

TEST_CASE("gguf and empty inputs rejected") {
    const fs::path dir = blip_test::scratch_dir("checkpoint-not-a-checkpoint");
    Bytes gguf;
    append(gguf, "GGUF");
    put64(gguf, 3);
    write_bytes(dir / "model.gguf", gguf);
    const std::string gguf_error = error_of([&] { read_checkpoint_file((dir / "model.gguf").string()); });
    CHECK(contains(gguf_error, "is already a GGUF model file"));
    CHECK(contains(gguf_error, "--info"));

    write_bytes(dir / "empty.pth", Bytes{});
    const std::string empty_error = error_of([&] { read_checkpoint_file((dir / "empty.pth").string()); });
    CHECK(contains(empty_error, "the file is empty, expected a checkpoint"));
}

TEST_CASE("non-zip pytorch files rejected") {
    const fs::path dir = blip_test::scratch_dir("checkpoint-pytorch-names");
    auto error_for = [&](const std::string& name, const Bytes& bytes) {
        write_bytes(dir / name, bytes);
        return error_of([&] { read_checkpoint_file((dir / name).string()); });
    };

    Bytes text;
    append(text, "not a zip archive, only text\n");
    for (const char* name : {"fake.pth", "fake.pt", "FAKE.BIN"}) {
        CAPTURE(name);
        const std::string message = error_for(name, text);
        CHECK(contains(message, std::string(name) + " is not a PyTorch checkpoint"));
        CHECK(contains(message, "does not start with a zip archive header"));
        CHECK(!contains(message, "safetensors"));
    }
    const std::string short_message = error_for("short.bin", Bytes{1, 0, 0});
    CHECK(contains(short_message, "short.bin is not a PyTorch checkpoint"));
    CHECK(!contains(short_message, "too short"));

    // A legacy torch.save file keeps the legacy message, and other names are still read as safetensors.
    CHECK(contains(error_for("legacy.pth", read_bytes(fixture("legacy_format.pth"))), "legacy"));
    CHECK(contains(error_for("fake.safetensors", text), "header length"));
}

TEST_CASE("missing checkpoint files name the reason") {
    const fs::path dir = blip_test::scratch_dir("checkpoint-missing");
    const std::string reason = std::strerror(ENOENT);
    const std::string file_error = error_of([&] { read_checkpoint_file((dir / "missing.pth").string()); });
    CHECK(contains(file_error, "cannot open " + (dir / "missing.pth").string() + ": " + reason));
    const std::string index_error =
        error_of([&] { read_safetensors_sharded((dir / "model.safetensors.index.json").string()); });
    CHECK(contains(index_error, "model.safetensors.index.json: " + reason));
}

}  // namespace test_checkpoint
