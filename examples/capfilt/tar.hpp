// A small POSIX ustar (tar) reader and writer for WebDataset shards.
//
// The reader lists regular members with their data offsets and checks every header: the
// checksum, each numeric field's digits, and that each member's data lies inside the file.
// It understands pax extended headers ('x': path and size; 'g' is skipped) and GNU long
// names ('L'), which Python's tarfile and GNU tar write for names over 100 bytes. A damaged
// header stops the listing. The members before it stay usable, and the error names the
// byte offset of the damage.
//
// The writer produces deterministic archives (mtime 0, uid and gid 0, mode 0644, no user
// names), uses the ustar prefix field or a pax header for long names, and pads the archive
// to a multiple of 10240 bytes as GNU tar and Python's tarfile do.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "blip/core/error.hpp"
#include "files.hpp"

namespace capfilt {

constexpr std::size_t kTarBlock = 512;
constexpr std::size_t kTarRecord = 20 * kTarBlock;
// Longest pax header or GNU long name read into memory.
constexpr std::uint64_t kMaxTarExtendedHeader = 1 << 20;

// A regular file inside a tar archive.
struct TarMember {
    std::string name;
    std::uint64_t header_offset = 0;  // where its (first) header starts
    std::uint64_t data_offset = 0;
    std::uint64_t size = 0;
};

struct TarListing {
    std::vector<TarMember> members;
    // Why listing stopped before the end-of-archive marker, or empty when it reached it (or a
    // clean end of file).
    std::string error;
};

namespace detail {

inline std::string tar_string(const char* field, std::size_t length) {
    const void* end = std::memchr(field, '\0', length);
    return std::string(field, end ? static_cast<std::size_t>(static_cast<const char*>(end) - field) : length);
}

// Parses a numeric header field: octal digits with optional leading spaces, ended by a space
// or NUL, or GNU's base-256 form (first byte 0x80) for large values. Throws on anything else.
inline std::uint64_t tar_number(const char* field, std::size_t length, const char* what, std::uint64_t offset) {
    const auto* bytes = reinterpret_cast<const unsigned char*>(field);
    if (bytes[0] == 0x80) {
        std::uint64_t value = 0;
        for (std::size_t i = 1; i < length; ++i) {
            if (value >> 56) throw Error("tar header at byte " + std::to_string(offset) + ": " + what + " is too large");
            value = (value << 8) | bytes[i];
        }
        return value;
    }
    std::size_t i = 0;
    while (i < length && field[i] == ' ') ++i;
    std::uint64_t value = 0;
    bool digits = false;
    for (; i < length; ++i) {
        const char c = field[i];
        if (c == '\0' || c == ' ') break;
        if (c < '0' || c > '7')
            throw Error("tar header at byte " + std::to_string(offset) + ": " + what + " field holds '" +
                        std::string(1, c) + "', which is not an octal digit");
        if (value >> 60) throw Error("tar header at byte " + std::to_string(offset) + ": " + what + " is too large");
        value = value * 8 + static_cast<std::uint64_t>(c - '0');
        digits = true;
    }
    for (; i < length; ++i)
        if (field[i] != '\0' && field[i] != ' ')
            throw Error("tar header at byte " + std::to_string(offset) + ": " + what + " field has characters after its end");
    if (!digits && std::string(what) != "checksum") return 0;
    return value;
}

inline bool is_zero_block(const char* block) {
    for (std::size_t i = 0; i < kTarBlock; ++i)
        if (block[i] != 0) return false;
    return true;
}

// Checks a header's checksum: the sum of its bytes with the checksum field read as eight
// spaces. Historic tars summed signed chars, so that sum is accepted too.
inline void check_tar_checksum(const char* block, std::uint64_t offset) {
    const std::uint64_t stored = tar_number(block + 148, 8, "checksum", offset);
    std::uint64_t unsigned_sum = 0;
    std::int64_t signed_sum = 0;
    for (std::size_t i = 0; i < kTarBlock; ++i) {
        const bool in_field = i >= 148 && i < 156;
        unsigned_sum += in_field ? ' ' : static_cast<unsigned char>(block[i]);
        signed_sum += in_field ? ' ' : static_cast<signed char>(block[i]);
    }
    if (stored != unsigned_sum && static_cast<std::int64_t>(stored) != signed_sum)
        throw Error("tar header at byte " + std::to_string(offset) + ": checksum mismatch (stored " +
                    std::to_string(stored) + ", computed " + std::to_string(unsigned_sum) +
                    "); the archive is damaged or not a tar file");
}

// Applies the records of a pax extended header ("LENGTH key=value\n" each) to `path` and
// `size`; other keys are ignored.
inline void apply_pax_records(const std::string& data, std::uint64_t offset, std::string& path, std::uint64_t& size,
                              bool& has_size) {
    std::size_t position = 0;
    while (position < data.size()) {
        if (data[position] == '\0') break;  // padding after the last record
        std::size_t space = position;
        std::uint64_t length = 0;
        while (space < data.size() && data[space] >= '0' && data[space] <= '9') {
            length = length * 10 + static_cast<std::uint64_t>(data[space] - '0');
            if (length > data.size()) break;
            ++space;
        }
        if (space == position || space >= data.size() || data[space] != ' ' || length > data.size() - position ||
            length < space - position + 2 || data[position + length - 1] != '\n')
            throw Error("tar pax header at byte " + std::to_string(offset) + ": malformed record at offset " +
                        std::to_string(position) + " of the header data");
        const std::string record = data.substr(space + 1, position + length - 1 - (space + 1));
        const std::size_t equals = record.find('=');
        if (equals == std::string::npos)
            throw Error("tar pax header at byte " + std::to_string(offset) + ": record without '=' at offset " +
                        std::to_string(position));
        const std::string key = record.substr(0, equals);
        const std::string value = record.substr(equals + 1);
        if (key == "path") {
            path = value;
        } else if (key == "size") {
            if (value.empty() || value.size() > 19 || value.find_first_not_of("0123456789") != std::string::npos)
                throw Error("tar pax header at byte " + std::to_string(offset) + ": invalid size \"" + value + "\"");
            size = std::stoull(value);
            has_size = true;
        }
        position += static_cast<std::size_t>(length);
    }
}

}  // namespace detail

// Lists the regular members of the tar archive `file`. Damage (a bad checksum, an invalid
// field, data past the end of the file) stops the listing and is described in `error`.
inline TarListing list_tar(const ReadOnlyFile& file) {
    TarListing listing;
    std::uint64_t offset = 0;
    std::string pending_path;  // from a pax 'x' header or GNU 'L' member, for the next member
    std::uint64_t pending_size = 0;
    bool pending_has_size = false;
    char block[kTarBlock];
    try {
        while (offset < file.size()) {
            if (file.size() - offset < kTarBlock)
                throw Error("tar archive ends inside a header at byte " + std::to_string(offset) + " (truncated file?)");
            file.read_at(offset, block, kTarBlock);
            if (detail::is_zero_block(block)) return listing;  // end-of-archive marker
            detail::check_tar_checksum(block, offset);
            const std::string magic = detail::tar_string(block + 257, 6);
            if (!magic.empty() && magic != "ustar" && magic != "ustar ")
                throw Error("tar header at byte " + std::to_string(offset) + ": unknown magic \"" + magic + "\"");

            const std::uint64_t header_offset = offset;
            std::uint64_t size = detail::tar_number(block + 124, 12, "size", offset);
            const char type = block[156];
            std::string name = detail::tar_string(block, 100);
            const std::string prefix = magic == "ustar" ? detail::tar_string(block + 345, 155) : std::string();
            if (!prefix.empty()) name = prefix + "/" + name;

            if ((type == '0' || type == '\0' || type == '7') && pending_has_size) size = pending_size;
            const std::uint64_t data_offset = offset + kTarBlock;
            const std::uint64_t padded = (size + kTarBlock - 1) / kTarBlock * kTarBlock;
            // The data must be in the file; the zero padding after the last member may be cut off.
            if (size > file.size() - data_offset)
                throw Error("tar member \"" + name + "\" at byte " + std::to_string(offset) + " has " + std::to_string(size) +
                            " bytes of data, but the file ends at byte " + std::to_string(file.size()) + " (truncated file?)");

            if (type == 'x' || type == 'L') {
                if (size > kMaxTarExtendedHeader)
                    throw Error("tar header at byte " + std::to_string(offset) + ": extended header of " +
                                std::to_string(size) + " bytes is larger than the 1 MiB this reader accepts");
                const std::string data = file.read_string(data_offset, static_cast<std::size_t>(size));
                if (type == 'x') {
                    detail::apply_pax_records(data, offset, pending_path, pending_size, pending_has_size);
                } else {
                    pending_path = detail::tar_string(data.data(), data.size());
                }
            } else if (type == '0' || type == '\0' || type == '7') {
                TarMember member;
                member.name = pending_path.empty() ? name : pending_path;
                member.header_offset = header_offset;
                member.data_offset = data_offset;
                member.size = size;
                listing.members.push_back(std::move(member));
                pending_path.clear();
                pending_has_size = false;
            } else {
                // Folders, links, devices, pax global headers and GNU long link names carry no
                // sample data.
                pending_path.clear();
                pending_has_size = false;
            }
            offset = data_offset + padded;
        }
    } catch (const Error& error) {
        listing.error = error.what();
    }
    return listing;
}

// Writes a tar archive into an AtomicFile.
class TarWriter {
public:
    explicit TarWriter(AtomicFile& out) : out_(out) {}

    void add(const std::string& name, const void* data, std::size_t size) {
        if (name.empty()) throw Error("tar: member name is empty");
        std::string short_name = name;
        std::string prefix;
        if (name.size() > 100 && !split_ustar_name(name, prefix, short_name)) {
            std::string records = pax_record("path", name);
            write_header(pax_name(name), records.size(), 'x', "");
            write_data(records.data(), records.size());
            short_name = name.substr(name.size() - 100);
            prefix.clear();
        }
        write_header(short_name, size, '0', prefix);
        write_data(data, size);
    }

    void add(const std::string& name, const std::string& data) { add(name, data.data(), data.size()); }

    // Writes the end-of-archive marker (two zero blocks) and pads to a whole record.
    void finish() {
        const std::uint64_t end = out_.bytes_written() + 2 * kTarBlock;
        const std::uint64_t padded = (end + kTarRecord - 1) / kTarRecord * kTarRecord;
        const std::string zeros(static_cast<std::size_t>(padded - out_.bytes_written()), '\0');
        out_.write(zeros);
    }

private:
    // Splits a long name at a '/' into ustar's prefix (155 bytes) and name (100 bytes).
    static bool split_ustar_name(const std::string& name, std::string& prefix, std::string& rest) {
        for (std::size_t slash = name.find('/'); slash != std::string::npos; slash = name.find('/', slash + 1)) {
            if (slash <= 155 && name.size() - slash - 1 <= 100 && slash + 1 < name.size()) {
                prefix = name.substr(0, slash);
                rest = name.substr(slash + 1);
                return true;
            }
        }
        return false;
    }

    static std::string pax_name(const std::string& name) {
        const std::size_t slash = name.rfind('/');
        std::string base = slash == std::string::npos ? name : name.substr(slash + 1);
        if (base.size() > 90) base = base.substr(0, 90);
        return "PaxHeader/" + base;
    }

    // One pax record: its length in decimal counts the whole record, digits included.
    static std::string pax_record(const std::string& key, const std::string& value) {
        const std::size_t body = 1 + key.size() + 1 + value.size() + 1;  // " key=value\n"
        std::size_t length = body + 1;
        while (std::to_string(length).size() + body != length) length = std::to_string(length).size() + body;
        return std::to_string(length) + " " + key + "=" + value + "\n";
    }

    static void put_octal(char* field, std::size_t length, std::uint64_t value) {
        // length - 1 digits and a NUL.
        std::string digits(length - 1, '0');
        for (std::size_t i = length - 1; i-- > 0;) {
            digits[i] = static_cast<char>('0' + (value & 7));
            value >>= 3;
        }
        if (value != 0) throw Error("tar: value does not fit its header field");
        std::memcpy(field, digits.data(), length - 1);
        field[length - 1] = '\0';
    }

    void write_header(const std::string& name, std::uint64_t size, char type, const std::string& prefix) {
        char block[kTarBlock] = {};
        std::memcpy(block, name.data(), std::min<std::size_t>(name.size(), 100));
        put_octal(block + 100, 8, 0644);
        put_octal(block + 108, 8, 0);
        put_octal(block + 116, 8, 0);
        if (size >= (std::uint64_t{1} << 33)) throw Error("tar: member \"" + name + "\" is 8 GiB or larger");
        put_octal(block + 124, 12, size);
        put_octal(block + 136, 12, 0);
        block[156] = type;
        std::memcpy(block + 257, "ustar", 6);
        std::memcpy(block + 263, "00", 2);
        std::memcpy(block + 345, prefix.data(), std::min<std::size_t>(prefix.size(), 155));
        std::memset(block + 148, ' ', 8);
        std::uint64_t sum = 0;
        for (char c : block) sum += static_cast<unsigned char>(c);
        put_octal(block + 148, 7, sum);  // six digits and a NUL, then the space already there
        block[155] = ' ';
        out_.write(block, kTarBlock);
    }

    void write_data(const void* data, std::size_t size) {
        out_.write(data, size);
        const std::size_t padding = (kTarBlock - size % kTarBlock) % kTarBlock;
        static const char zeros[kTarBlock] = {};
        out_.write(zeros, padding);
    }

    AtomicFile& out_;
};

}  // namespace capfilt
