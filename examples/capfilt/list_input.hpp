// Image-text pairs from a list file: JSON Lines (one object per line) or CSV/TSV with a
// header row. The file is memory-mapped and scanned once for its record count and the byte
// offset of every chunk's first record, so that a chunk can be read without the ones before.
//
// Records: every non-blank line of JSON Lines and every non-blank row of CSV/TSV after the
// header, numbered from 0 in file order. A record that cannot be parsed keeps its number
// and becomes an entry with an error that names its line.
//
// CSV and TSV follow RFC 4180, with the delimiter a comma or a tab: a field that starts with
// a double quote runs to the next lone double quote, "" inside it stands for one quote, and
// it may contain delimiters and line breaks. Records end at LF or CRLF. As Python's csv
// module does, a double quote inside an unquoted field is kept as a literal character.
#pragma once

#include <cstdint>
#include <cstring>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "blip/core/error.hpp"
#include "blip/core/mapped_file.hpp"

namespace capfilt {

using blip::Error;

enum class ListFormat { Jsonl, Csv, Tsv };

inline const char* list_format_name(ListFormat format) {
    switch (format) {
        case ListFormat::Jsonl: return "jsonl";
        case ListFormat::Csv: return "csv";
        case ListFormat::Tsv: return "tsv";
    }
    return "jsonl";
}

// Names of the fields (JSON keys or CSV columns) that hold each part of a pair. An empty
// text name means the input has no web texts; an id field is optional.
struct ListColumns {
    std::string image = "image";
    std::string text = "text";
    std::string id = "id";
};

// One record of a list input.
struct ListEntry {
    std::uint64_t index = 0;  // number of the record in the file, from 0
    std::int64_t line = 0;    // line where the record starts, from 1
    std::string id;           // the id field, else the record number
    std::string image;        // image path as written in the input
    std::optional<std::string> text;
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();  // the record's other fields
    std::string error;        // set when the record is malformed; the other fields may be empty
};

// Where a chunk's first record starts.
struct ChunkStart {
    std::uint64_t offset = 0;
    std::int64_t line = 1;
};

namespace detail {

inline bool is_blank(std::string_view text) {
    for (char c : text)
        if (c != ' ' && c != '\t' && c != '\r' && c != '\n') return false;
    return true;
}

// Reads delimited records from [data, data + size), starting at `offset` on line `line`.
class DelimitedReader {
public:
    DelimitedReader(const char* data, std::size_t size, char delimiter, std::size_t offset, std::int64_t line)
        : data_(data), size_(size), delimiter_(delimiter), position_(offset), line_(line) {}

    // Reads the next non-blank record into `fields`. Returns false at the end of the data.
    // On a malformed record, sets `error` (naming the line), and the reader continues after
    // it. `start_line` receives the line where the record starts.
    bool next(std::vector<std::string>& fields, std::string& error, std::int64_t& start_line) {
        fields.clear();
        error.clear();
        skip_blank_lines();
        if (position_ >= size_) return false;
        start_line = line_;
        for (;;) {
            std::string field;
            bool record_ends = false;
            if (data_[position_] == '"') {
                if (!read_quoted(field, error, start_line)) return true;
            } else {
                read_unquoted(field);
            }
            fields.push_back(std::move(field));
            if (position_ >= size_) {
                record_ends = true;
            } else if (data_[position_] == delimiter_) {
                ++position_;
                if (position_ >= size_) {  // a delimiter at the end of the data: one more empty field
                    fields.emplace_back();
                    record_ends = true;
                }
            } else if (at_line_break()) {
                skip_line_break();
                record_ends = true;
            }
            if (record_ends) return true;
        }
    }

    std::size_t offset() const { return position_; }
    std::int64_t line() const { return line_; }

private:
    bool at_line_break() const {
        return data_[position_] == '\n' || (data_[position_] == '\r' && position_ + 1 < size_ && data_[position_ + 1] == '\n');
    }

    void skip_line_break() {
        if (data_[position_] == '\r') ++position_;
        ++position_;
        ++line_;
    }

    void skip_blank_lines() {
        while (position_ < size_) {
            std::size_t end = position_;
            while (end < size_ && data_[end] != '\n') ++end;
            if (!is_blank(std::string_view(data_ + position_, end - position_))) return;
            if (end == size_) {
                position_ = size_;
                return;
            }
            position_ = end + 1;
            ++line_;
        }
    }

    void read_unquoted(std::string& field) {
        const std::size_t begin = position_;
        while (position_ < size_ && data_[position_] != delimiter_ && !at_line_break()) ++position_;
        field.assign(data_ + begin, position_ - begin);
    }

    // Reads a quoted field. Returns false with `error` set when it is malformed, having moved
    // past the rest of the record's last line.
    bool read_quoted(std::string& field, std::string& error, std::int64_t start_line) {
        ++position_;  // opening quote
        for (;;) {
            if (position_ >= size_) {
                error = "line " + std::to_string(start_line) + ": quoted field has no closing double quote";
                return false;
            }
            const char c = data_[position_];
            if (c == '"') {
                if (position_ + 1 < size_ && data_[position_ + 1] == '"') {
                    field.push_back('"');
                    position_ += 2;
                    continue;
                }
                ++position_;  // closing quote
                if (position_ >= size_ || data_[position_] == delimiter_ || at_line_break()) return true;
                error = "line " + std::to_string(line_) + ": unexpected character '" + std::string(1, data_[position_]) +
                        "' after a closing double quote (write a quote inside a quoted field as \"\")";
                skip_to_next_line();
                return false;
            }
            if (c == '\n') ++line_;
            field.push_back(c);
            ++position_;
        }
    }

    void skip_to_next_line() {
        while (position_ < size_ && data_[position_] != '\n') ++position_;
        if (position_ < size_) {
            ++position_;
            ++line_;
        }
    }

    const char* data_;
    std::size_t size_;
    char delimiter_;
    std::size_t position_;
    std::int64_t line_;
};

}  // namespace detail

class ListInput {
public:
    // Maps `path` and reads the CSV/TSV header. Call scan() before reading chunks.
    ListInput(const std::string& path, ListFormat format, ListColumns columns)
        : path_(path), format_(format), columns_(std::move(columns)) {
        source_ = blip::ByteSource::map_file(path);
        data_ = reinterpret_cast<const char*>(source_->data());
        size_ = source_->size();
        // A UTF-8 byte order mark is not part of the first record.
        if (size_ >= 3 && std::memcmp(data_, "\xEF\xBB\xBF", 3) == 0) body_offset_ = 3;
        if (format_ != ListFormat::Jsonl) read_header();
    }

    const std::string& path() const { return path_; }
    ListFormat format() const { return format_; }

    // Counts the records and notes where every `chunk_size`-th one starts.
    void scan(std::uint64_t chunk_size) {
        if (chunk_size < 1) throw Error("chunk size must be at least 1");
        chunk_size_ = chunk_size;
        chunk_starts_.clear();
        records_ = 0;
        if (format_ == ListFormat::Jsonl) {
            scan_lines();
        } else {
            scan_delimited();
        }
    }

    std::uint64_t record_count() const { return records_; }
    std::uint64_t chunk_size() const { return chunk_size_; }
    std::uint64_t chunk_count() const { return chunk_starts_.size(); }

    // Reads the records of chunk `chunk` (scan() first).
    std::vector<ListEntry> read_chunk(std::uint64_t chunk) const {
        if (chunk >= chunk_starts_.size())
            throw Error(path_ + ": chunk " + std::to_string(chunk) + " does not exist (the input has " +
                        std::to_string(chunk_starts_.size()) + " chunks)");
        const std::uint64_t first = chunk * chunk_size_;
        const std::uint64_t count = std::min<std::uint64_t>(chunk_size_, records_ - first);
        std::vector<ListEntry> entries;
        entries.reserve(static_cast<std::size_t>(count));
        if (format_ == ListFormat::Jsonl) {
            read_lines(chunk_starts_[chunk], first, count, entries);
        } else {
            read_delimited(chunk_starts_[chunk], first, count, entries);
        }
        return entries;
    }

private:
    char delimiter() const { return format_ == ListFormat::Tsv ? '\t' : ','; }

    void read_header() {
        detail::DelimitedReader reader(data_, size_, delimiter(), body_offset_, 1);
        std::string error;
        std::int64_t line = 0;
        if (!reader.next(header_, error, line))
            throw Error(path_ + ": the " + std::string(list_format_name(format_)) +
                        " file is empty; it needs a header row that names the columns");
        if (!error.empty()) throw Error(path_ + ": header row: " + error);
        body_offset_ = reader.offset();
        body_line_ = reader.line();

        auto find = [&](const std::string& name) -> int {
            for (std::size_t i = 0; i < header_.size(); ++i)
                if (header_[i] == name) return static_cast<int>(i);
            return -1;
        };
        std::string names;
        for (const auto& name : header_) names += (names.empty() ? "" : ", ") + name;
        image_column_ = find(columns_.image);
        if (image_column_ < 0)
            throw Error(path_ + ": the header has no column \"" + columns_.image + "\" (columns: " + names +
                        "); name the image column with --image-column");
        if (!columns_.text.empty()) {
            text_column_ = find(columns_.text);
            if (text_column_ < 0)
                throw Error(path_ + ": the header has no column \"" + columns_.text + "\" (columns: " + names +
                            "); name the text column with --text-column, or pass --text-column \"\" for images "
                            "without web texts");
        }
        if (!columns_.id.empty()) id_column_ = find(columns_.id);
    }

    void add_record(std::uint64_t offset, std::int64_t line) {
        if (records_ % chunk_size_ == 0) chunk_starts_.push_back({offset, line});
        ++records_;
    }

    void scan_lines() {
        std::size_t position = body_offset_;
        std::int64_t line = 1;
        while (position < size_) {
            const void* newline = std::memchr(data_ + position, '\n', size_ - position);
            const std::size_t end = newline ? static_cast<std::size_t>(static_cast<const char*>(newline) - data_) : size_;
            if (!detail::is_blank(std::string_view(data_ + position, end - position))) add_record(position, line);
            position = end + 1;
            ++line;
        }
    }

    void scan_delimited() {
        detail::DelimitedReader reader(data_, size_, delimiter(), body_offset_, body_line_);
        std::vector<std::string> fields;
        std::string error;
        for (;;) {
            // The reader skips blank lines itself; note where the record starts after them.
            std::size_t offset = reader.offset();
            std::int64_t line = reader.line();
            skip_blank(offset, line);
            std::int64_t start_line = 0;
            if (!reader.next(fields, error, start_line)) break;
            add_record(offset, line);
        }
    }

    void skip_blank(std::size_t& offset, std::int64_t& line) const {
        while (offset < size_) {
            std::size_t end = offset;
            while (end < size_ && data_[end] != '\n') ++end;
            if (!detail::is_blank(std::string_view(data_ + offset, end - offset))) return;
            offset = end == size_ ? size_ : end + 1;
            ++line;
        }
    }

    void read_lines(const ChunkStart& start, std::uint64_t first, std::uint64_t count,
                    std::vector<ListEntry>& entries) const {
        std::size_t position = static_cast<std::size_t>(start.offset);
        std::int64_t line = start.line;
        while (entries.size() < count && position < size_) {
            const void* newline = std::memchr(data_ + position, '\n', size_ - position);
            const std::size_t end = newline ? static_cast<std::size_t>(static_cast<const char*>(newline) - data_) : size_;
            const std::string_view text(data_ + position, end - position);
            if (!detail::is_blank(text)) entries.push_back(parse_json_line(text, first + entries.size(), line));
            position = end + 1;
            ++line;
        }
        check_chunk_complete(entries, count);
    }

    ListEntry parse_json_line(std::string_view text, std::uint64_t index, std::int64_t line) const {
        ListEntry entry;
        entry.index = index;
        entry.line = line;
        entry.id = std::to_string(index);
        const std::string where = "line " + std::to_string(line) + ": ";
        nlohmann::ordered_json object;
        try {
            object = nlohmann::ordered_json::parse(text.begin(), text.end());
        } catch (const nlohmann::json::exception& error) {
            entry.error = where + "invalid JSON: " + error.what();
            return entry;
        }
        if (!object.is_object()) {
            entry.error = where + "expected a JSON object, found " + std::string(object.type_name());
            return entry;
        }
        for (auto& [key, value] : object.items()) {
            if (key == columns_.image) {
                if (!value.is_string()) {
                    entry.error = where + "field \"" + key + "\" must be a string (the image path), found " +
                                  std::string(value.type_name());
                    return entry;
                }
                entry.image = value.get<std::string>();
            } else if (!columns_.text.empty() && key == columns_.text) {
                if (value.is_string()) {
                    entry.text = value.get<std::string>();
                } else if (!value.is_null()) {
                    entry.error = where + "field \"" + key + "\" must be a string or null, found " +
                                  std::string(value.type_name());
                    return entry;
                }
            } else if (!columns_.id.empty() && key == columns_.id) {
                entry.id = value.is_string() ? value.get<std::string>() : value.dump();
            } else {
                entry.meta[key] = value;
            }
        }
        if (!object.contains(columns_.image)) {
            entry.error = where + "no \"" + columns_.image + "\" field (the image path; see --image-column)";
        } else if (entry.image.empty()) {
            entry.error = where + "field \"" + columns_.image + "\" is empty";
        }
        return entry;
    }

    void read_delimited(const ChunkStart& start, std::uint64_t first, std::uint64_t count,
                        std::vector<ListEntry>& entries) const {
        detail::DelimitedReader reader(data_, size_, delimiter(), static_cast<std::size_t>(start.offset), start.line);
        std::vector<std::string> fields;
        std::string error;
        std::int64_t line = 0;
        while (entries.size() < count && reader.next(fields, error, line)) {
            ListEntry entry;
            entry.index = first + entries.size();
            entry.line = line;
            entry.id = std::to_string(entry.index);
            if (!error.empty()) {
                entry.error = error;
            } else if (fields.size() != header_.size()) {
                entry.error = "line " + std::to_string(line) + ": " + std::to_string(fields.size()) + " fields, but the header has " +
                              std::to_string(header_.size()) + " columns";
            } else {
                for (std::size_t i = 0; i < fields.size(); ++i) {
                    const int column = static_cast<int>(i);
                    if (column == image_column_) {
                        entry.image = fields[i];
                    } else if (column == text_column_) {
                        entry.text = fields[i];
                    } else if (column == id_column_) {
                        entry.id = fields[i];
                    } else {
                        entry.meta[header_[i]] = fields[i];
                    }
                }
                if (entry.image.empty()) entry.error = "line " + std::to_string(line) + ": the image column is empty";
            }
            entries.push_back(std::move(entry));
        }
        check_chunk_complete(entries, count);
    }

    void check_chunk_complete(const std::vector<ListEntry>& entries, std::uint64_t count) const {
        if (entries.size() != count)
            throw Error(path_ + ": the file changed while it was read (a chunk has " + std::to_string(entries.size()) +
                        " records, expected " + std::to_string(count) + "); rerun on an unchanging input");
    }

    std::string path_;
    ListFormat format_;
    ListColumns columns_;
    std::shared_ptr<blip::ByteSource> source_;
    const char* data_ = nullptr;
    std::size_t size_ = 0;
    std::size_t body_offset_ = 0;
    std::int64_t body_line_ = 1;

    std::vector<std::string> header_;
    int image_column_ = -1;
    int text_column_ = -1;
    int id_column_ = -1;

    std::uint64_t chunk_size_ = 1;
    std::uint64_t records_ = 0;
    std::vector<ChunkStart> chunk_starts_;
};

}  // namespace capfilt
