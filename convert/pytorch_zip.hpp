// Reader for checkpoints written by torch.save in its zip format (the default since
// PyTorch 1.6): `pytorch_model.bin` and Salesforce's `.pth` files. The archive contains
// `<prefix>/data.pkl`, a pickle of the saved object in which every tensor refers to a
// storage by key, and `<prefix>/data/<key>`, the raw little-endian bytes of each storage.
//
// The pickle is interpreted by a restricted unpickler that builds plain values and never
// runs code from the file: it accepts only the opcodes a state dict needs, and of the
// globals only collections.OrderedDict, the torch tensor and parameter rebuild functions
// and the storage types. Any other global is rejected by name.
#pragma once

#include "checkpoint.hpp"

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace blip::convert {

namespace detail {

// One stored entry of a zip archive: where its bytes start in the file and how many.
struct ZipEntry {
    std::string name;
    std::uint64_t data_offset = 0;
    std::uint64_t size = 0;
};

// Central directory of a zip archive whose entries are all stored (not compressed).
class ZipArchive {
public:
    ZipArchive(std::shared_ptr<const MappedFile> file, std::string path) : file_(std::move(file)), path_(std::move(path)) {
        read_central_directory();
    }

    const ZipEntry* find(const std::string& name) const {
        const auto it = index_.find(name);
        return it == index_.end() ? nullptr : &entries_[it->second];
    }
    const std::vector<ZipEntry>& entries() const { return entries_; }
    const std::uint8_t* data(const ZipEntry& entry) const { return file_->data() + entry.data_offset; }

private:
    static constexpr std::uint32_t kLocalHeader = 0x04034b50;
    static constexpr std::uint32_t kCentralHeader = 0x02014b50;
    static constexpr std::uint32_t kEndOfCentralDirectory = 0x06054b50;
    static constexpr std::uint32_t kZip64EndOfCentralDirectory = 0x06064b50;
    static constexpr std::uint32_t kZip64Locator = 0x07064b50;

    [[noreturn]] void fail(const std::string& message) const {
        throw Error(path_ + ": " + message + "; the file is truncated or not a torch.save zip archive");
    }

    void read_central_directory() {
        const std::uint8_t* bytes = file_->data();
        const std::uint64_t size = file_->size();
        if (size < 22) fail("too small to hold a zip end-of-central-directory record");

        // The end record is the last 22 bytes plus a comment of at most 65535 bytes.
        std::uint64_t end_record = 0;
        bool found = false;
        const std::uint64_t lowest = size > 22 + 65535 ? size - 22 - 65535 : 0;
        for (std::uint64_t pos = size - 22 + 1; pos-- > lowest;) {
            if (load_u32(bytes + pos) == kEndOfCentralDirectory && pos + 22 + load_u16(bytes + pos + 20) <= size) {
                end_record = pos;
                found = true;
                break;
            }
        }
        if (!found) fail("no zip end-of-central-directory record");

        std::uint64_t entry_count = load_u16(bytes + end_record + 10);
        std::uint64_t directory_size = load_u32(bytes + end_record + 12);
        std::uint64_t directory_offset = load_u32(bytes + end_record + 16);
        std::uint64_t directory_limit = end_record;
        if (entry_count == 0xffff || directory_size == 0xffffffffu || directory_offset == 0xffffffffu) {
            // Zip64: a locator just before the end record points at the 64-bit end record.
            if (end_record < 20 || load_u32(bytes + end_record - 20) != kZip64Locator)
                fail("zip64 end-of-central-directory locator missing");
            const std::uint64_t record = load_u64(bytes + end_record - 20 + 8);
            if (record > end_record - 20 || end_record - 20 - record < 56)
                fail("zip64 end-of-central-directory record out of range");
            if (load_u32(bytes + record) != kZip64EndOfCentralDirectory)
                fail("zip64 end-of-central-directory record missing");
            entry_count = load_u64(bytes + record + 32);
            directory_size = load_u64(bytes + record + 40);
            directory_offset = load_u64(bytes + record + 48);
            directory_limit = record;
        }
        if (directory_offset > directory_limit || directory_size > directory_limit - directory_offset)
            fail("central directory at " + std::to_string(directory_offset) + " (" + std::to_string(directory_size) +
                 " bytes) lies outside the file");

        std::uint64_t pos = directory_offset;
        const std::uint64_t directory_end = directory_offset + directory_size;
        for (std::uint64_t i = 0; i < entry_count; ++i) read_entry(pos, directory_end);
    }

    void read_entry(std::uint64_t& pos, std::uint64_t directory_end) {
        const std::uint8_t* bytes = file_->data();
        const std::uint64_t file_size = file_->size();
        if (directory_end - pos < 46 || load_u32(bytes + pos) != kCentralHeader)
            fail("central directory entry " + std::to_string(entries_.size()) + " is damaged");
        const std::uint8_t* header = bytes + pos;
        const std::uint16_t flags = load_u16(header + 8);
        const std::uint16_t method = load_u16(header + 10);
        std::uint64_t compressed_size = load_u32(header + 20);
        std::uint64_t size = load_u32(header + 24);
        const std::uint16_t name_length = load_u16(header + 28);
        const std::uint16_t extra_length = load_u16(header + 30);
        const std::uint16_t comment_length = load_u16(header + 32);
        std::uint64_t local_offset = load_u32(header + 42);
        if (directory_end - pos - 46 < static_cast<std::uint64_t>(name_length) + extra_length + comment_length)
            fail("central directory entry " + std::to_string(entries_.size()) + " runs past the directory");
        std::string name(reinterpret_cast<const char*>(header + 46), name_length);

        // Zip64 extra field: 64-bit values for those fields that hold 0xffffffff, in order.
        const std::uint8_t* extra = header + 46 + name_length;
        for (std::uint32_t at = 0; at + 4 <= extra_length;) {
            const std::uint16_t id = load_u16(extra + at);
            const std::uint16_t length = load_u16(extra + at + 2);
            if (at + 4 + length > extra_length) fail("extra field of entry " + name + " runs past its record");
            if (id == 0x0001) {
                const std::uint8_t* field = extra + at + 4;
                std::uint32_t used = 0;
                auto take = [&](std::uint64_t& value) {
                    if (value != 0xffffffffu) return;
                    if (used + 8 > length) fail("zip64 extra field of entry " + name + " is too short");
                    value = load_u64(field + used);
                    used += 8;
                };
                take(size);
                take(compressed_size);
                take(local_offset);
            }
            at += 4 + length;
        }
        pos += 46 + static_cast<std::uint64_t>(name_length) + extra_length + comment_length;

        if (flags & 0x1) throw Error(path_ + ": zip entry " + name + " is encrypted, which torch.save never writes");
        if (method != 0)
            throw Error(path_ + ": zip entry " + name + " is compressed (method " + std::to_string(method) +
                        "); torch.save writes entries uncompressed, so this archive was repacked. "
                        "Re-create it with torch.save, or unzip it and zip it again with `zip -0`");
        if (compressed_size != size)
            fail("zip entry " + name + " is stored but its compressed size " + std::to_string(compressed_size) +
                 " differs from its size " + std::to_string(size));

        // The data follows the local header, whose name and extra field (torch pads it to
        // align the data) may differ in length from the central directory's.
        if (local_offset > file_size || file_size - local_offset < 30 || load_u32(bytes + local_offset) != kLocalHeader)
            fail("local header of zip entry " + name + " at offset " + std::to_string(local_offset) + " is missing");
        const std::uint64_t data_offset =
            local_offset + 30 + load_u16(bytes + local_offset + 26) + load_u16(bytes + local_offset + 28);
        if (data_offset > file_size || size > file_size - data_offset)
            fail("zip entry " + name + " claims " + std::to_string(size) + " bytes at offset " +
                 std::to_string(data_offset) + ", past the end of the " + std::to_string(file_size) + "-byte file");

        if (index_.count(name)) fail("zip entry " + name + " appears twice");
        index_.emplace(name, entries_.size());
        entries_.push_back({std::move(name), data_offset, size});
    }

    std::shared_ptr<const MappedFile> file_;
    std::string path_;
    std::vector<ZipEntry> entries_;
    std::unordered_map<std::string, std::size_t> index_;
};

// A value built by the restricted unpickler. Values live in one arena and refer to each
// other by index, so shared and even cyclic references need no recursion to free.
struct PickleValue {
    // BigInt is an integer beyond 64 bits, whose value is not kept. A Set keeps the
    // elements of a set or frozenset in `items`.
    enum class Kind { None, Bool, Int, BigInt, Float, String, Bytes, Tuple, List, Set, Dict, Global, Storage, Tensor };
    enum class Callable { None, OrderedDict, RebuildTensorV2, RebuildParameter, RebuildParameterWithState, StorageType };

    Kind kind = Kind::None;
    std::int64_t integer = 0;  // Int and Bool; Storage: element count; Tensor: storage offset in elements
    double real = 0;           // Float
    std::string text;          // String and Bytes; Global: "module.name"; Storage: key
    std::vector<std::size_t> items;  // Tuple and List: elements; Dict: key, value, key, value...; Tensor: {storage}
    std::vector<std::int64_t> shape, stride;  // Tensor
    Callable callable = Callable::None;       // Global
    std::optional<SourceDType> dtype;         // Global of a storage type, and Storage; empty if unsupported
};

inline const char* pickle_kind_name(PickleValue::Kind kind) {
    switch (kind) {
        case PickleValue::Kind::None: return "None";
        case PickleValue::Kind::Bool: return "bool";
        case PickleValue::Kind::Int: return "int";
        case PickleValue::Kind::BigInt: return "int beyond 64 bits";
        case PickleValue::Kind::Float: return "float";
        case PickleValue::Kind::String: return "str";
        case PickleValue::Kind::Bytes: return "bytes";
        case PickleValue::Kind::Tuple: return "tuple";
        case PickleValue::Kind::List: return "list";
        case PickleValue::Kind::Set: return "set";
        case PickleValue::Kind::Dict: return "dict";
        case PickleValue::Kind::Global: return "global";
        case PickleValue::Kind::Storage: return "storage";
        case PickleValue::Kind::Tensor: return "tensor";
    }
    return "?";
}

struct AllowedGlobal {
    const char* module;
    const char* name;
    PickleValue::Callable callable;
    std::optional<SourceDType> dtype;
};

// The globals a torch state dict pickle refers to. Storage types only name the element
// type of the raw bytes, so calling one is rejected.
inline const std::vector<AllowedGlobal>& allowed_globals() {
    using C = PickleValue::Callable;
    static const std::vector<AllowedGlobal> table = {
        {"collections", "OrderedDict", C::OrderedDict, std::nullopt},
        {"torch._utils", "_rebuild_tensor_v2", C::RebuildTensorV2, std::nullopt},
        {"torch._utils", "_rebuild_parameter", C::RebuildParameter, std::nullopt},
        {"torch._utils", "_rebuild_parameter_with_state", C::RebuildParameterWithState, std::nullopt},
        {"torch", "FloatStorage", C::StorageType, SourceDType::F32},
        {"torch", "HalfStorage", C::StorageType, SourceDType::F16},
        {"torch", "BFloat16Storage", C::StorageType, SourceDType::BF16},
        {"torch", "LongStorage", C::StorageType, SourceDType::I64},
        {"torch", "IntStorage", C::StorageType, SourceDType::I32},
        {"torch", "ByteStorage", C::StorageType, SourceDType::U8},
        {"torch", "BoolStorage", C::StorageType, SourceDType::Bool},
        // Storage types without a SourceDType are allowed because optimizer state beside the
        // model may use them (AdamW keeps float64 moments). A model tensor of such a type is rejected.
        {"torch", "DoubleStorage", C::StorageType, std::nullopt},
        {"torch", "ShortStorage", C::StorageType, std::nullopt},
        {"torch", "CharStorage", C::StorageType, std::nullopt},
    };
    return table;
}

// Interprets a pickle (protocol 2 to 5) that uses only the opcodes a torch state dict
// needs. run() fills `values`, and `root` is the index of the pickled object.
class RestrictedUnpickler {
public:
    RestrictedUnpickler(const std::uint8_t* data, std::size_t size, std::string where)
        : data_(data), size_(size), where_(std::move(where)) {}

    std::vector<PickleValue> values;
    std::size_t root = 0;

    void run() {
        for (;;) {
            const std::size_t opcode_position = pos_;
            const std::uint8_t opcode = read_u8();
            switch (opcode) {
                case 0x80: {  // PROTO
                    const std::uint8_t version = read_u8();
                    if (version > 5) fail("unsupported pickle protocol " + std::to_string(version));
                    break;
                }
                case 0x95: read_u64(); break;  // FRAME: a length hint; the data follows inline
                case '.':  // STOP
                    root = pop();
                    return;
                case '(': marks_.push_back(stack_.size()); break;  // MARK
                case '0': pop_or_pop_mark(); break;                // POP
                case '1': pop_mark(); break;                       // POP_MARK
                case 'N': push(PickleValue{}); break;              // NONE
                case 0x88: push_bool(true); break;                 // NEWTRUE
                case 0x89: push_bool(false); break;                // NEWFALSE
                case 'J': {                                        // BININT
                    std::uint32_t bits = read_u32();
                    std::int32_t value;
                    std::memcpy(&value, &bits, 4);
                    push_int(value);
                    break;
                }
                case 'K': push_int(read_u8()); break;   // BININT1
                case 'M': push_int(read_u16()); break;  // BININT2
                case 0x8a: push_long(read_u8()); break;   // LONG1
                case 0x8b: push_long(read_u32()); break;  // LONG4
                case 'G': {                                // BINFLOAT: big-endian double
                    std::uint64_t bits = 0;
                    for (int i = 0; i < 8; ++i) bits = (bits << 8) | read_u8();
                    PickleValue value;
                    value.kind = PickleValue::Kind::Float;
                    std::memcpy(&value.real, &bits, 8);
                    push(std::move(value));
                    break;
                }
                case 'X': push_text(PickleValue::Kind::String, read_u32()); break;  // BINUNICODE
                case 0x8c: push_text(PickleValue::Kind::String, read_u8()); break;  // SHORT_BINUNICODE
                case 0x8d: push_text(PickleValue::Kind::String, read_u64()); break; // BINUNICODE8
                case 'T': push_text(PickleValue::Kind::String, read_u32()); break;  // BINSTRING
                case 'U': push_text(PickleValue::Kind::String, read_u8()); break;   // SHORT_BINSTRING
                case 'B': push_text(PickleValue::Kind::Bytes, read_u32()); break;   // BINBYTES
                case 'C': push_text(PickleValue::Kind::Bytes, read_u8()); break;    // SHORT_BINBYTES
                case ')': push_sequence(PickleValue::Kind::Tuple, {}); break;       // EMPTY_TUPLE
                case 0x85: push_sequence(PickleValue::Kind::Tuple, pop_n(1)); break;  // TUPLE1
                case 0x86: push_sequence(PickleValue::Kind::Tuple, pop_n(2)); break;  // TUPLE2
                case 0x87: push_sequence(PickleValue::Kind::Tuple, pop_n(3)); break;  // TUPLE3
                case 't': push_sequence(PickleValue::Kind::Tuple, pop_mark()); break;  // TUPLE
                case ']': push_sequence(PickleValue::Kind::List, {}); break;          // EMPTY_LIST
                case 'l': push_sequence(PickleValue::Kind::List, pop_mark()); break;  // LIST
                case 0x8f: push_sequence(PickleValue::Kind::Set, {}); break;          // EMPTY_SET
                case 0x91: push_sequence(PickleValue::Kind::Set, pop_mark()); break;  // FROZENSET
                case 0x90: {                                                          // ADDITEMS
                    auto items = pop_mark();
                    append_to(top(), items, PickleValue::Kind::Set, "ADDITEMS");
                    break;
                }
                case '}': push_sequence(PickleValue::Kind::Dict, {}); break;          // EMPTY_DICT
                case 'd': {                                                           // DICT
                    auto items = pop_mark();
                    if (items.size() % 2) fail("DICT with an odd number of items");
                    push_sequence(PickleValue::Kind::Dict, std::move(items));
                    break;
                }
                case 'a': {  // APPEND
                    const std::size_t item = pop();
                    append_to(top(), {item}, PickleValue::Kind::List, "APPEND");
                    break;
                }
                case 'e': {  // APPENDS
                    auto items = pop_mark();
                    append_to(top(), items, PickleValue::Kind::List, "APPENDS");
                    break;
                }
                case 's': {  // SETITEM
                    const std::size_t value = pop();
                    const std::size_t key = pop();
                    append_to(top(), {key, value}, PickleValue::Kind::Dict, "SETITEM");
                    break;
                }
                case 'u': {  // SETITEMS
                    auto items = pop_mark();
                    if (items.size() % 2) fail("SETITEMS with an odd number of items");
                    append_to(top(), items, PickleValue::Kind::Dict, "SETITEMS");
                    break;
                }
                case 'q': memo_[read_u8()] = top(); break;          // BINPUT
                case 'r': memo_[read_u32()] = top(); break;         // LONG_BINPUT
                case 0x94: memo_[memo_.size()] = top(); break;      // MEMOIZE
                case 'h': stack_.push_back(memo_get(read_u8())); break;   // BINGET
                case 'j': stack_.push_back(memo_get(read_u32())); break;  // LONG_BINGET
                case 'c': {                                               // GLOBAL
                    std::string module = read_line();
                    std::string name = read_line();
                    push_global(module, name);
                    break;
                }
                case 0x93: {  // STACK_GLOBAL
                    const std::size_t name = pop();
                    const std::size_t module = pop();
                    if (values[name].kind != PickleValue::Kind::String || values[module].kind != PickleValue::Kind::String)
                        fail("STACK_GLOBAL needs two strings");
                    push_global(values[module].text, values[name].text);
                    break;
                }
                case 'R': {  // REDUCE
                    const std::size_t arguments = pop();
                    const std::size_t callable = pop();
                    stack_.push_back(call(callable, arguments));
                    break;
                }
                case 0x81: {  // NEWOBJ
                    const std::size_t arguments = pop();
                    const std::size_t callable = pop();
                    stack_.push_back(call(callable, arguments));
                    break;
                }
                case 'b': {  // BUILD
                    pop();   // the state; an OrderedDict's state is torch's `_metadata`, which we do not need
                    const PickleValue& target = values[top()];
                    if (target.kind != PickleValue::Kind::Dict)
                        fail("BUILD on a " + std::string(pickle_kind_name(target.kind)) + ", which a state dict never needs");
                    break;
                }
                case 'Q': {  // BINPERSID
                    const std::size_t id = pop();
                    stack_.push_back(persistent_load(id));
                    break;
                }
                default: {
                    char hex[8];
                    std::snprintf(hex, sizeof hex, "0x%02x", opcode);
                    fail("pickle opcode " + std::string(hex) + " at byte " + std::to_string(opcode_position) +
                         " is not allowed in a state dict");
                }
            }
        }
    }

private:
    [[noreturn]] void fail(const std::string& message) const { throw Error(where_ + ": " + message); }

    void need(std::size_t count) const {
        if (count > size_ - pos_) fail("truncated at byte " + std::to_string(pos_));
    }
    std::uint8_t read_u8() {
        need(1);
        return data_[pos_++];
    }
    std::uint16_t read_u16() {
        need(2);
        const auto value = load_u16(data_ + pos_);
        pos_ += 2;
        return value;
    }
    std::uint32_t read_u32() {
        need(4);
        const auto value = load_u32(data_ + pos_);
        pos_ += 4;
        return value;
    }
    std::uint64_t read_u64() {
        need(8);
        const auto value = load_u64(data_ + pos_);
        pos_ += 8;
        return value;
    }
    std::string read_bytes(std::uint64_t count) {
        if (count > size_ - pos_) fail("a string of " + std::to_string(count) + " bytes runs past the end");
        std::string text(reinterpret_cast<const char*>(data_ + pos_), static_cast<std::size_t>(count));
        pos_ += static_cast<std::size_t>(count);
        return text;
    }
    std::string read_line() {
        const std::size_t start = pos_;
        while (pos_ < size_ && data_[pos_] != '\n') ++pos_;
        if (pos_ == size_) fail("GLOBAL name runs past the end");
        std::string line(reinterpret_cast<const char*>(data_ + start), pos_ - start);
        ++pos_;
        return line;
    }
    // LONG1 and LONG4: a little-endian two's complement integer of `count` bytes.
    void push_long(std::uint64_t count) {
        if (count > size_ - pos_) fail("an integer of " + std::to_string(count) + " bytes runs past the end");
        const std::uint8_t* bytes = data_ + pos_;
        pos_ += static_cast<std::size_t>(count);
        PickleValue value;
        if (count > 8) {
            value.kind = PickleValue::Kind::BigInt;  // config values only; a tensor never needs one
            push(std::move(value));
            return;
        }
        std::uint64_t bits = 0;
        for (std::uint64_t i = 0; i < count; ++i) bits |= static_cast<std::uint64_t>(bytes[i]) << (8 * i);
        if (count > 0 && count < 8 && (bytes[count - 1] & 0x80)) bits |= ~std::uint64_t{0} << (8 * count);
        value.kind = PickleValue::Kind::Int;
        std::memcpy(&value.integer, &bits, 8);
        push(std::move(value));
    }

    std::size_t push(PickleValue value) {
        values.push_back(std::move(value));
        stack_.push_back(values.size() - 1);
        return values.size() - 1;
    }
    void push_bool(bool flag) {
        PickleValue value;
        value.kind = PickleValue::Kind::Bool;
        value.integer = flag;
        push(std::move(value));
    }
    void push_int(std::int64_t number) {
        PickleValue value;
        value.kind = PickleValue::Kind::Int;
        value.integer = number;
        push(std::move(value));
    }
    void push_text(PickleValue::Kind kind, std::uint64_t length) {
        PickleValue value;
        value.kind = kind;
        value.text = read_bytes(length);
        push(std::move(value));
    }
    void push_sequence(PickleValue::Kind kind, std::vector<std::size_t> items) {
        PickleValue value;
        value.kind = kind;
        value.items = std::move(items);
        push(std::move(value));
    }
    void push_global(const std::string& module, const std::string& name) {
        for (const AllowedGlobal& allowed : allowed_globals()) {
            if (module == allowed.module && name == allowed.name) {
                PickleValue value;
                value.kind = PickleValue::Kind::Global;
                value.text = module + "." + name;
                value.callable = allowed.callable;
                value.dtype = allowed.dtype;
                push(std::move(value));
                return;
            }
        }
        fail("forbidden global " + module + "." + name +
             " in data.pkl; a state dict needs only collections.OrderedDict, torch._utils tensor rebuild "
             "functions and torch storage types, and no code from the file is run");
    }

    std::size_t top() const {
        if (stack_.size() <= (marks_.empty() ? 0 : marks_.back())) fail("stack underflow");
        return stack_.back();
    }
    std::size_t pop() {
        const std::size_t value = top();
        stack_.pop_back();
        return value;
    }
    // POP, as Python's unpickler does it: at a mark with nothing above it, POP drops the mark.
    void pop_or_pop_mark() {
        if (!marks_.empty() && stack_.size() == marks_.back()) {
            pop_mark();
            return;
        }
        pop();
    }
    std::vector<std::size_t> pop_n(std::size_t count) {
        const std::size_t floor = marks_.empty() ? 0 : marks_.back();
        if (stack_.size() < floor + count) fail("stack underflow");
        std::vector<std::size_t> items(stack_.end() - static_cast<std::ptrdiff_t>(count), stack_.end());
        stack_.resize(stack_.size() - count);
        return items;
    }
    std::vector<std::size_t> pop_mark() {
        if (marks_.empty()) fail("MARK missing");
        const std::size_t mark = marks_.back();
        marks_.pop_back();
        std::vector<std::size_t> items(stack_.begin() + static_cast<std::ptrdiff_t>(mark), stack_.end());
        stack_.resize(mark);
        return items;
    }
    std::size_t memo_get(std::uint64_t key) const {
        const auto it = memo_.find(key);
        if (it == memo_.end()) fail("memo key " + std::to_string(key) + " used before it was set");
        return it->second;
    }
    void append_to(std::size_t target, const std::vector<std::size_t>& items, PickleValue::Kind expected,
                   const char* opcode) {
        PickleValue& container = values[target];
        if (container.kind != expected)
            fail(std::string(opcode) + " on a " + pickle_kind_name(container.kind) + " instead of a " +
                 pickle_kind_name(expected));
        container.items.insert(container.items.end(), items.begin(), items.end());
    }

    const PickleValue& argument(const std::vector<std::size_t>& arguments, std::size_t i) const {
        return values[arguments[i]];
    }
    std::vector<std::int64_t> int_tuple(std::size_t index, const char* what) const {
        const PickleValue& tuple = values[index];
        if (tuple.kind != PickleValue::Kind::Tuple) fail(std::string(what) + " is not a tuple");
        std::vector<std::int64_t> numbers;
        for (std::size_t item : tuple.items) {
            if (values[item].kind != PickleValue::Kind::Int || values[item].integer < 0)
                fail(std::string(what) + " holds something other than a non-negative integer");
            numbers.push_back(values[item].integer);
        }
        return numbers;
    }

    // REDUCE and NEWOBJ: the only callables are the allowed globals, each rebuilt here.
    std::size_t call(std::size_t callable_index, std::size_t arguments_index) {
        // Copies, not references: pushing a new value below may move the arena.
        const PickleValue::Kind kind = values[callable_index].kind;
        if (kind != PickleValue::Kind::Global) fail("REDUCE on a " + std::string(pickle_kind_name(kind)));
        if (values[arguments_index].kind != PickleValue::Kind::Tuple) fail("REDUCE arguments are not a tuple");
        const std::vector<std::size_t> arguments = values[arguments_index].items;
        const std::string name = values[callable_index].text;
        const PickleValue::Callable callable = values[callable_index].callable;
        switch (callable) {
            case PickleValue::Callable::OrderedDict: {
                if (!arguments.empty()) fail(name + " called with arguments");
                PickleValue dict;
                dict.kind = PickleValue::Kind::Dict;
                values.push_back(std::move(dict));
                return values.size() - 1;
            }
            case PickleValue::Callable::RebuildTensorV2: {
                // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
                if (arguments.size() != 6 && arguments.size() != 7)
                    fail(name + " called with " + std::to_string(arguments.size()) + " arguments instead of 6 or 7");
                if (argument(arguments, 0).kind != PickleValue::Kind::Storage) fail(name + ": first argument is not a storage");
                if (argument(arguments, 1).kind != PickleValue::Kind::Int || argument(arguments, 1).integer < 0)
                    fail(name + ": storage offset is not a non-negative integer");
                PickleValue tensor;
                tensor.kind = PickleValue::Kind::Tensor;
                tensor.items = {arguments[0]};
                tensor.integer = argument(arguments, 1).integer;
                tensor.shape = int_tuple(arguments[2], "tensor size");
                tensor.stride = int_tuple(arguments[3], "tensor stride");
                if (tensor.shape.size() != tensor.stride.size())
                    fail(name + ": size and stride differ in length");
                values.push_back(std::move(tensor));
                return values.size() - 1;
            }
            case PickleValue::Callable::RebuildParameter:
            case PickleValue::Callable::RebuildParameterWithState: {
                // (data, requires_grad, backward_hooks[, state]): the parameter is its data.
                const std::size_t expected = callable == PickleValue::Callable::RebuildParameter ? 3 : 4;
                if (arguments.size() != expected) fail(name + " called with " + std::to_string(arguments.size()) + " arguments");
                if (argument(arguments, 0).kind != PickleValue::Kind::Tensor) fail(name + ": first argument is not a tensor");
                return arguments[0];
            }
            case PickleValue::Callable::StorageType:
            case PickleValue::Callable::None: break;
        }
        fail(name + " cannot be called");
    }

    // BINPERSID: torch's persistent id ('storage', storage_type, key, location, numel).
    std::size_t persistent_load(std::size_t id_index) {
        const PickleValue& id = values[id_index];
        if (id.kind != PickleValue::Kind::Tuple || id.items.size() != 5)
            fail("persistent id is not a 5-tuple ('storage', type, key, location, numel)");
        const PickleValue& tag = values[id.items[0]];
        const PickleValue& type = values[id.items[1]];
        const PickleValue& key = values[id.items[2]];
        const PickleValue& numel = values[id.items[4]];
        if (tag.kind != PickleValue::Kind::String || tag.text != "storage") fail("persistent id is not a storage");
        if (type.kind != PickleValue::Kind::Global || type.callable != PickleValue::Callable::StorageType)
            fail("persistent id names no torch storage type");
        if (key.kind != PickleValue::Kind::String) fail("storage key is not a string");
        if (numel.kind != PickleValue::Kind::Int || numel.integer < 0) fail("storage size is not a non-negative integer");
        PickleValue storage;
        storage.kind = PickleValue::Kind::Storage;
        storage.text = key.text;
        storage.integer = numel.integer;
        storage.dtype = type.dtype;
        storage.items = {id.items[1]};  // the storage type, for messages
        values.push_back(std::move(storage));
        return values.size() - 1;
    }

    const std::uint8_t* data_;
    std::size_t size_;
    std::size_t pos_ = 0;
    std::string where_;
    std::vector<std::size_t> stack_;
    std::vector<std::size_t> marks_;
    std::unordered_map<std::uint64_t, std::size_t> memo_;
};

// Makes a SourceTensor of a rebuilt tensor: checks its extent against the storage, then
// points into the storage if the layout is contiguous, else copies it into `checkpoint`.
inline SourceTensor materialize_tensor(const std::string& name, const PickleValue& tensor, const PickleValue& storage,
                                       const std::string& storage_type, const ZipArchive& archive,
                                       const std::string& prefix, Checkpoint& checkpoint) {
    const std::string where = checkpoint.source + ": tensor " + name;
    if (!storage.dtype)
        throw Error(where + " is stored as " + storage_type +
                    ", which is not supported; supported are Float, Half, BFloat16, Long, Int, Byte and Bool storages");
    SourceTensor result;
    result.name = name;
    result.dtype = *storage.dtype;
    result.shape = tensor.shape;
    const std::uint64_t element_size = source_dtype_size(result.dtype);

    const std::string entry_name = prefix + "data/" + storage.text;
    const ZipEntry* entry = archive.find(entry_name);
    if (!entry) throw Error(where + ": its storage " + entry_name + " is missing from the archive");
    const std::uint64_t storage_bytes =
        checked_mul(static_cast<std::uint64_t>(storage.integer), element_size, where);
    if (entry->size < storage_bytes)
        throw Error(where + ": storage " + entry_name + " contains " + std::to_string(entry->size) + " bytes but " +
                    std::to_string(storage.integer) + " elements of " + source_dtype_name(result.dtype) + " need " +
                    std::to_string(storage_bytes));

    const std::uint64_t count = element_count(tensor.shape, where);
    const std::uint8_t* base = archive.data(*entry);
    if (count == 0) {
        result.data = base;
        result.nbytes = 0;
        return result;
    }
    // Last element the tensor reads: offset + sum((size - 1) * stride).
    std::uint64_t last = static_cast<std::uint64_t>(tensor.integer);
    for (std::size_t d = 0; d < tensor.shape.size(); ++d)
        last = checked_add(last,
                           checked_mul(static_cast<std::uint64_t>(tensor.shape[d] - 1),
                                       static_cast<std::uint64_t>(tensor.stride[d]), where),
                           where);
    if (last >= static_cast<std::uint64_t>(storage.integer))
        throw Error(where + ": shape " + format_shape(tensor.shape) + " with stride " + format_shape(tensor.stride) +
                    " at offset " + std::to_string(tensor.integer) + " reads past its storage of " +
                    std::to_string(storage.integer) + " elements");

    // Strides that revisit elements (an expanded view) could make a copy far larger than
    // the file, so a tensor may not have more elements than its storage.
    if (count > static_cast<std::uint64_t>(storage.integer))
        throw Error(where + ": shape " + format_shape(tensor.shape) + " with stride " + format_shape(tensor.stride) +
                    " has more elements than its storage of " + std::to_string(storage.integer) +
                    "; expanded views are not supported, save a contiguous copy");
    result.nbytes = static_cast<std::size_t>(count * element_size);

    bool contiguous = true;
    std::uint64_t expected_stride = 1;
    for (std::size_t d = tensor.shape.size(); d-- > 0;) {
        if (tensor.shape[d] != 1 && static_cast<std::uint64_t>(tensor.stride[d]) != expected_stride) contiguous = false;
        expected_stride *= static_cast<std::uint64_t>(tensor.shape[d]);
    }
    if (contiguous) {
        result.data = base + static_cast<std::uint64_t>(tensor.integer) * element_size;
        return result;
    }

    // Non-contiguous (for example a transposed view): gather the elements in row-major order.
    std::vector<std::uint8_t> bytes(result.nbytes);
    std::vector<std::int64_t> index(tensor.shape.size(), 0);
    for (std::uint64_t i = 0; i < count; ++i) {
        std::uint64_t element = static_cast<std::uint64_t>(tensor.integer);
        for (std::size_t d = 0; d < index.size(); ++d)
            element += static_cast<std::uint64_t>(index[d]) * static_cast<std::uint64_t>(tensor.stride[d]);
        std::memcpy(bytes.data() + i * element_size, base + element * element_size, element_size);
        for (std::size_t d = index.size(); d-- > 0;) {
            if (++index[d] < tensor.shape[d]) break;
            index[d] = 0;
        }
    }
    result.data = checkpoint.store(std::move(bytes));
    return result;
}

}  // namespace detail

// Reads a torch.save zip archive (`pytorch_model.bin`, Salesforce `.pth`). The saved
// object must be a state dict (a dict of name -> tensor) or a dict that contains one under
// "model" or "state_dict". Salesforce's files keep "epoch", "config" and optimizer state
// beside "model". Those entries are parsed but not returned.
inline Checkpoint read_pytorch_zip(const std::string& path) {
    using detail::PickleValue;
    detail::require_little_endian_host();
    auto file = detail::map_file(path);
    if (file->size() == 0) throw Error(path + ": the file is empty, not a torch.save archive");
    if (file->size() >= 2 && file->data()[0] == 0x80 && file->data()[1] <= 5)
        throw Error(path + ": legacy torch.save format (PyTorch before 1.6), which is not supported; "
                    "re-save it with a current torch.save or convert it to safetensors");
    if (file->size() < 4 || detail::load_u32(file->data()) != 0x04034b50)
        throw Error(path + ": not a zip archive, so not a torch.save checkpoint");

    detail::ZipArchive archive(file, path);

    // torch names every entry "<archive name>/...", so data.pkl sits one folder deep.
    const detail::ZipEntry* pickle_entry = nullptr;
    for (const detail::ZipEntry& entry : archive.entries()) {
        const std::string& name = entry.name;
        const auto slash = name.find('/');
        if (name == "data.pkl" || (slash != std::string::npos && name.compare(slash, std::string::npos, "/data.pkl") == 0)) {
            if (pickle_entry)
                throw Error(path + ": the archive contains two pickles, " + pickle_entry->name + " and " + name);
            pickle_entry = &entry;
        }
    }
    if (!pickle_entry) throw Error(path + ": no data.pkl in the archive, so it was not written by torch.save");
    const std::string prefix = pickle_entry->name.substr(0, pickle_entry->name.size() - std::string("data.pkl").size());

    if (const detail::ZipEntry* byteorder = archive.find(prefix + "byteorder")) {
        const std::string order(reinterpret_cast<const char*>(archive.data(*byteorder)), byteorder->size);
        if (order != "little")
            throw Error(path + ": the tensors are stored in " + order + "-endian byte order; only little-endian is supported");
    }

    detail::RestrictedUnpickler unpickler(archive.data(*pickle_entry), pickle_entry->size, path + ": " + pickle_entry->name);
    unpickler.run();
    const std::vector<PickleValue>& values = unpickler.values;

    // Find the state dict: the root, or root["model"] / root["state_dict"].
    std::size_t state_dict = unpickler.root;
    if (values[state_dict].kind != PickleValue::Kind::Dict)
        throw Error(path + ": the saved object is a " + detail::pickle_kind_name(values[state_dict].kind) +
                    ", not a state dict");
    for (const char* wrapper : {"model", "state_dict"}) {
        const PickleValue& root = values[unpickler.root];
        bool found = false;
        for (std::size_t i = 0; i + 1 < root.items.size(); i += 2) {
            const PickleValue& key = values[root.items[i]];
            if (key.kind == PickleValue::Kind::String && key.text == wrapper &&
                values[root.items[i + 1]].kind == PickleValue::Kind::Dict) {
                state_dict = root.items[i + 1];
                found = true;
                break;
            }
        }
        if (found) break;
    }

    Checkpoint checkpoint;
    checkpoint.source = path;
    checkpoint.keep_alive(file);
    const PickleValue& dict = values[state_dict];
    for (std::size_t i = 0; i + 1 < dict.items.size(); i += 2) {
        const PickleValue& key = values[dict.items[i]];
        const PickleValue& value = values[dict.items[i + 1]];
        if (key.kind != PickleValue::Kind::String)
            throw Error(path + ": the state dict has a " + std::string(detail::pickle_kind_name(key.kind)) +
                        " key; tensor names must be strings");
        if (value.kind != PickleValue::Kind::Tensor)
            throw Error(path + ": state dict entry " + key.text + " is a " + detail::pickle_kind_name(value.kind) +
                        ", not a tensor");
        const PickleValue& storage = values[value.items[0]];
        const std::string storage_type = values[storage.items[0]].text;
        checkpoint.add(detail::materialize_tensor(key.text, value, storage, storage_type, archive, prefix, checkpoint));
    }
    if (checkpoint.tensors().empty()) throw Error(path + ": the state dict contains no tensors");
    return checkpoint;
}

}  // namespace blip::convert
