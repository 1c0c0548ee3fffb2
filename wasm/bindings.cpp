// WebAssembly bindings of the library for blip.mjs, through embind.
//
// Every method returns a plain JavaScript object. On failure that object is
// {error: message} with blip::Error's message, and blip.mjs turns it into a rejected
// promise. Exceptions therefore never cross into JavaScript, where embind would only show
// a pointer and C++ destructors would be skipped.
#include <emscripten/bind.h>
#include <emscripten/val.h>

#include <blip/blip.hpp>

#include <chrono>
#include <cstdint>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace blip_wasm {

using emscripten::val;

double now_ms() {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

val error_result(const std::string& message) {
    val result = val::object();
    result.set("error", message);
    return result;
}

// Runs `body`, which returns the result object, and turns any exception into {error}.
template <class Body>
val guarded(const char* operation, Body&& body) {
    try {
        return body();
    } catch (const blip::Error& error) {
        return error_result(error.what());
    } catch (const std::bad_alloc&) {
        return error_result(std::string(operation) +
                            ": out of memory (WebAssembly memory is limited to 4 GiB; use a smaller or f16 model)");
    } catch (const std::exception& error) {
        return error_result(std::string(operation) + ": " + error.what());
    }
}

// Copies a JavaScript typed array into a new vector of the same element type.
template <class T>
std::vector<T> copy_typed_array(const val& array, const char* what) {
    if (array.isUndefined() || array.isNull()) throw blip::Error(std::string(what) + " is missing");
    const auto length = array["length"].as<std::size_t>();
    std::vector<T> out(length);
    // No allocation may happen between creating the view and filling it: memory growth
    // would detach the view.
    val view(emscripten::typed_memory_view(out.size(), out.data()));
    view.call<void>("set", array);
    return out;
}

template <class T>
val to_typed_array(const std::vector<T>& values) {
    // The view aliases WebAssembly memory, so slice() copies it out before it can move.
    return val(emscripten::typed_memory_view(values.size(), values.data())).call<val>("slice");
}

val ids_to_array(const std::vector<std::int32_t>& ids) {
    val array = val::array();
    for (std::size_t i = 0; i < ids.size(); ++i) array.set(i, ids[i]);
    return array;
}

// An image from blip.mjs: {rgba, width, height} from ImageData or a canvas, {rgb, width,
// height}, or {bytes, name} holding an encoded file that the library decodes.
blip::ImageU8 image_from_js(const val& image) {
    if (!image["bytes"].isUndefined()) {
        const std::vector<std::uint8_t> bytes = copy_typed_array<std::uint8_t>(image["bytes"], "image bytes");
        const std::string name = image["name"].isString() ? image["name"].as<std::string>() : "<image>";
        return blip::decode_image_memory(bytes.data(), bytes.size(), name);
    }
    const bool rgba = !image["rgba"].isUndefined();
    if (!rgba && image["rgb"].isUndefined())
        throw blip::Error("image: expected encoded bytes, RGBA pixels (ImageData) or RGB pixels");
    const int width = image["width"].as<int>();
    const int height = image["height"].as<int>();
    if (width <= 0 || height <= 0)
        throw blip::Error("image: invalid size " + std::to_string(width) + "x" + std::to_string(height));
    const std::vector<std::uint8_t> pixels = copy_typed_array<std::uint8_t>(image[rgba ? "rgba" : "rgb"], "image pixels");
    const std::size_t count = static_cast<std::size_t>(width) * static_cast<std::size_t>(height);
    const std::size_t channels = rgba ? 4 : 3;
    if (pixels.size() != count * channels)
        throw blip::Error("image: " + std::to_string(width) + "x" + std::to_string(height) + (rgba ? " RGBA" : " RGB") +
                          " pixels need " + std::to_string(count * channels) + " bytes, got " +
                          std::to_string(pixels.size()));
    blip::ImageU8 out;
    out.width = width;
    out.height = height;
    if (!rgba) {
        out.pixels = pixels;
        return out;
    }
    // Alpha is dropped without compositing, as Pillow's convert("RGB") does.
    out.pixels.resize(count * 3);
    for (std::size_t i = 0; i < count; ++i) {
        out.pixels[3 * i + 0] = pixels[4 * i + 0];
        out.pixels[3 * i + 1] = pixels[4 * i + 1];
        out.pixels[3 * i + 2] = pixels[4 * i + 2];
    }
    return out;
}

std::optional<double> number_option(const val& options, const char* key) {
    const val value = options[key];
    if (value.isUndefined() || value.isNull()) return std::nullopt;
    if (!value.isNumber()) throw blip::Error(std::string("option ") + key + " must be a number");
    return value.as<double>();
}

std::int64_t integer_option(const val& options, const char* key, std::int64_t fallback, std::int64_t min,
                            std::int64_t max) {
    const std::optional<double> value = number_option(options, key);
    if (!value) return fallback;
    if (*value != static_cast<double>(static_cast<std::int64_t>(*value)) || *value < static_cast<double>(min) ||
        *value > static_cast<double>(max))
        throw blip::Error(std::string("option ") + key + " is " + std::to_string(*value) + "; expected an integer in " +
                          std::to_string(min) + ".." + std::to_string(max));
    return static_cast<std::int64_t>(*value);
}

// Caption options with the command line's names in camel case: prompt, maxLength,
// minLength. blip.mjs rejects names it does not know before they get here.
blip::CaptionOptions caption_options(const val& options) {
    blip::CaptionOptions out;
    if (options.isUndefined() || options.isNull()) return out;
    const val prompt = options["prompt"];
    if (!prompt.isUndefined() && !prompt.isNull()) {
        if (!prompt.isString()) throw blip::Error("option prompt must be a string");
        out.prompt = prompt.as<std::string>();
    }
    out.generation.max_length = integer_option(options, "maxLength", out.generation.max_length, 1, 1 << 20);
    out.generation.min_length = integer_option(options, "minLength", out.generation.min_length, 0, 1 << 20);
    // TODO: numBeams, lengthPenalty, repetitionPenalty, doSample, topK, topP, temperature
    // and seed, once GenerationConfig has them. blip.mjs rejects them until then.
    return out;
}

// One loaded model file. Its methods are synchronous; blip.mjs wraps them in promises and
// runs them wherever it was imported, usually a Web Worker.
class Model {
public:
    val load(const val& bytes, const std::string& name) {
        return guarded("load", [&] {
            const double start = now_ms();
            std::vector<std::uint8_t> buffer = copy_typed_array<std::uint8_t>(bytes, "model bytes");
            const double copied = now_ms();
            auto file = blip::gguf::File::from_buffer(std::move(buffer), name.empty() ? "<model>" : name);
            config_ = blip::read_config(*file);
            switch (config_.task) {
                case blip::Task::Caption:
                    captioner_ = std::make_unique<blip::Captioner>(file);
                    break;
                // TODO: VQA and ITM pipelines once the library has them.
                case blip::Task::Vqa:
                case blip::Task::Itm:
                    throw blip::Error(file->name() + ": " + blip::task_name(config_.task) +
                                      " models are not supported by this WebAssembly build yet");
            }
            val result = val::object();
            result.set("info", info());
            val timings = val::object();
            timings.set("copyMs", copied - start);
            timings.set("parseMs", now_ms() - copied);
            result.set("timings", timings);
            return result;
        });
    }

    val info() const {
        val info = val::object();
        info.set("task", std::string(blip::task_name(config_.task)));
        info.set("name", config_.name);
        info.set("imageSize", static_cast<double>(config_.vision.image_size));
        info.set("visionHiddenSize", static_cast<double>(config_.vision.hidden_size));
        info.set("visionLayers", static_cast<double>(config_.vision.num_hidden_layers));
        info.set("textHiddenSize", static_cast<double>(config_.text.hidden_size));
        info.set("textLayers", static_cast<double>(config_.text.num_hidden_layers));
        info.set("vocabSize", static_cast<double>(config_.text.vocab_size));
        info.set("maxPositions", static_cast<double>(config_.text.max_position_embeddings));
        info.set("cpuLevel", std::string(blip::quant::cpu_level_name(blip::quant::active_cpu_level())));
        return info;
    }

    // Decodes or converts `image`, preprocesses it and runs the vision encoder.
    // Returns {embeds: Float32Array, width, height, timings}.
    val encodeImage(const val& image) {
        return guarded("encodeImage", [&] {
            const Captioner& captioner = require_captioner();
            const double start = now_ms();
            const blip::ImageU8 decoded = image_from_js(image);
            const double decoded_at = now_ms();
            const std::vector<float> pixels = captioner.pixel_values(decoded);
            const double preprocessed_at = now_ms();
            const std::vector<float> embeds = captioner.model().vision_model.forward(pixels);
            const double encoded_at = now_ms();

            val result = val::object();
            result.set("embeds", to_typed_array(embeds));
            result.set("width", decoded.width);
            result.set("height", decoded.height);
            val timings = val::object();
            timings.set("decodeMs", decoded_at - start);
            timings.set("preprocessMs", preprocessed_at - decoded_at);
            timings.set("visionMs", encoded_at - preprocessed_at);
            result.set("timings", timings);
            return result;
        });
    }

    // Runs the vision encoder on preprocessed pixel values (float32, CHW), as
    // transformers' pixel_values hold them. Returns {embeds, timings}.
    val encodePixelValues(const val& pixel_values) {
        return guarded("encodePixelValues", [&] {
            const Captioner& captioner = require_captioner();
            const std::vector<float> pixels = copy_typed_array<float>(pixel_values, "pixel values");
            const double start = now_ms();
            const std::vector<float> embeds = captioner.model().vision_model.forward(pixels);
            val result = val::object();
            result.set("embeds", to_typed_array(embeds));
            val timings = val::object();
            timings.set("visionMs", now_ms() - start);
            result.set("timings", timings);
            return result;
        });
    }

    // Writes a caption for `embeds` (encodeImage's output). Returns {text, ids, timings}.
    // TODO: call `on_token` for every generated token once the library's generation loop
    // takes a streaming callback; blip.mjs reports the tokens after generation until then.
    val caption(const val& embeds, const val& options, const val& on_token) {
        (void)on_token;
        return guarded("caption", [&] {
            const Captioner& captioner = require_captioner();
            const std::vector<float> image_embeds = copy_typed_array<float>(embeds, "image embeddings");
            const blip::CaptionOptions parsed = caption_options(options);
            const double start = now_ms();
            const blip::Caption caption = captioner.caption_embeds(image_embeds, parsed);
            const double generated_at = now_ms();

            val result = val::object();
            result.set("text", caption.text);
            result.set("ids", ids_to_array(caption.ids));
            val timings = val::object();
            timings.set("generateMs", generated_at - start);
            result.set("timings", timings);
            return result;
        });
    }

    // Returns {ids} for `text` as the tokenizer encodes it, [CLS] and [SEP] included.
    val tokenize(const std::string& text) const {
        return guarded("tokenize", [&] {
            val result = val::object();
            result.set("ids", ids_to_array(tokenizer().encode(text)));
            return result;
        });
    }

    // Returns {text} for token ids, special tokens skipped.
    val decodeIds(const val& ids) const {
        return guarded("decodeIds", [&] {
            const std::vector<std::int32_t> values = copy_typed_array<std::int32_t>(ids, "token ids");
            val result = val::object();
            result.set("text", tokenizer().decode(values));
            return result;
        });
    }

private:
    using Captioner = blip::Captioner;

    const Captioner& require_captioner() const {
        if (!captioner_) throw blip::Error("no captioning model is loaded");
        return *captioner_;
    }

    const blip::Tokenizer& tokenizer() const {
        if (captioner_) return captioner_->tokenizer();
        throw blip::Error("no model is loaded");
    }

    blip::BlipConfig config_;
    std::unique_ptr<Captioner> captioner_;
};

// Returns {version, cpuLevel, simd} of this build.
val build_info() {
    val info = val::object();
    info.set("cpuLevel", std::string(blip::quant::cpu_level_name(blip::quant::active_cpu_level())));
#ifdef __wasm_simd128__
    info.set("simd", true);
#else
    info.set("simd", false);
#endif
    return info;
}

}  // namespace blip_wasm

EMSCRIPTEN_BINDINGS(blip) {
    using namespace emscripten;
    class_<blip_wasm::Model>("Model")
        .constructor<>()
        .function("load", &blip_wasm::Model::load)
        .function("info", &blip_wasm::Model::info)
        .function("encodeImage", &blip_wasm::Model::encodeImage)
        .function("encodePixelValues", &blip_wasm::Model::encodePixelValues)
        .function("caption", &blip_wasm::Model::caption)
        .function("tokenize", &blip_wasm::Model::tokenize)
        .function("decodeIds", &blip_wasm::Model::decodeIds);
    function("buildInfo", &blip_wasm::build_info);
}
