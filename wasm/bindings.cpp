// WebAssembly bindings of the library for blip.mjs, through embind.
//
// Every method returns a plain JavaScript object. On failure that object is
// {error: message} with blip::Error's message, and blip.mjs turns it into a rejected
// promise. Exceptions therefore never cross into JavaScript, where embind would only show
// a pointer and C++ destructors would be skipped.
#include <emscripten/bind.h>
#include <emscripten/val.h>

#include <blip/blip.hpp>
#include <blip/pipeline/matcher.hpp>
#include <blip/pipeline/vqa.hpp>

#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
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
    const double width = image["width"].isNumber() ? image["width"].as<double>() : -1;
    const double height = image["height"].isNumber() ? image["height"].as<double>() : -1;
    const std::string size = std::to_string(static_cast<long long>(width)) + "x" + std::to_string(static_cast<long long>(height));
    if (!(width >= 1 && height >= 1) || width != static_cast<double>(static_cast<long long>(width)) ||
        height != static_cast<double>(static_cast<long long>(height)))
        throw blip::Error("image: invalid size " + size + "; width and height must be positive integers");
    // The product is checked in double, before any size_t arithmetic: size_t has 32 bits here.
    const blip::DecodeLimits limits;
    if (width * height > static_cast<double>(limits.max_pixels))
        throw blip::Error("image: " + size + " pixels, more than the limit of " + std::to_string(limits.max_pixels) +
                          " pixels; downscale the image");

    const std::size_t count = static_cast<std::size_t>(width) * static_cast<std::size_t>(height);
    const std::size_t channels = rgba ? 4 : 3;
    const std::vector<std::uint8_t> pixels = copy_typed_array<std::uint8_t>(image[rgba ? "rgba" : "rgb"], "image pixels");
    if (pixels.size() != count * channels)
        throw blip::Error("image: " + size + (rgba ? " RGBA" : " RGB") + " pixels need " +
                          std::to_string(count * channels) + " bytes, got " + std::to_string(pixels.size()));

    blip::ImageU8 out;
    out.width = static_cast<int>(width);
    out.height = static_cast<int>(height);
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

bool has_option(const val& options, const char* key) {
    return !options.isUndefined() && !options.isNull() && !options[key].isUndefined() && !options[key].isNull();
}

std::string string_option(const val& options, const char* key) {
    const val value = options[key];
    if (!value.isString()) throw blip::Error(std::string("option ") + key + " must be a string");
    return value.as<std::string>();
}

// The first token of image-grounded text encodings: "enc" (Salesforce's [ENC], the
// library's default) or "cls" (transformers 4.30.2's [CLS]).
blip::EncoderFirstToken first_token_option(const val& options) {
    if (!has_option(options, "firstToken")) return blip::EncoderFirstToken::Enc;
    const std::string name = string_option(options, "firstToken");
    if (name == "enc") return blip::EncoderFirstToken::Enc;
    if (name == "cls") return blip::EncoderFirstToken::Cls;
    throw blip::Error("option firstToken is \"" + name + "\"; expected \"enc\" or \"cls\"");
}

// Fields of GenerationConfig that only newer library versions have. Each option is read
// when the field exists, so the bindings build against both versions; blip.mjs learns which
// ones exist from buildInfo().generationOptions.
#define BLIP_WASM_FIELD_TRAIT(field)                                                              \
    template <class T, class = void>                                                             \
    struct has_##field : std::false_type {};                                                     \
    template <class T>                                                                           \
    struct has_##field<T, std::void_t<decltype(std::declval<T&>().field)>> : std::true_type {};
BLIP_WASM_FIELD_TRAIT(num_beams)
BLIP_WASM_FIELD_TRAIT(length_penalty)
BLIP_WASM_FIELD_TRAIT(repetition_penalty)
BLIP_WASM_FIELD_TRAIT(no_repeat_ngram_size)
BLIP_WASM_FIELD_TRAIT(do_sample)
BLIP_WASM_FIELD_TRAIT(temperature)
BLIP_WASM_FIELD_TRAIT(top_k)
BLIP_WASM_FIELD_TRAIT(top_p)
BLIP_WASM_FIELD_TRAIT(seed)
#undef BLIP_WASM_FIELD_TRAIT

using Generation = blip::GenerationConfig;

// Option names of generation settings that this build's GenerationConfig has.
val generation_option_names() {
    val names = val::array();
    int count = 0;
    auto add = [&](bool present, const char* name) {
        if (present) names.set(count++, std::string(name));
    };
    add(true, "maxLength");
    add(true, "minLength");
    add(has_num_beams<Generation>::value, "numBeams");
    add(has_length_penalty<Generation>::value, "lengthPenalty");
    add(has_repetition_penalty<Generation>::value, "repetitionPenalty");
    add(has_no_repeat_ngram_size<Generation>::value, "noRepeatNgramSize");
    add(has_do_sample<Generation>::value, "doSample");
    add(has_temperature<Generation>::value, "temperature");
    add(has_top_k<Generation>::value, "topK");
    add(has_top_p<Generation>::value, "topP");
    add(has_seed<Generation>::value, "seed");
    return names;
}

template <class G>
void read_newer_generation_options(const val& options, G& out) {
    if constexpr (has_num_beams<G>::value) out.num_beams = integer_option(options, "numBeams", out.num_beams, 1, 64);
    if constexpr (has_length_penalty<G>::value)
        out.length_penalty = number_option(options, "lengthPenalty").value_or(out.length_penalty);
    if constexpr (has_repetition_penalty<G>::value)
        out.repetition_penalty = number_option(options, "repetitionPenalty").value_or(out.repetition_penalty);
    if constexpr (has_no_repeat_ngram_size<G>::value)
        out.no_repeat_ngram_size = integer_option(options, "noRepeatNgramSize", out.no_repeat_ngram_size, 0, 1 << 20);
    if constexpr (has_do_sample<G>::value) {
        if (has_option(options, "doSample")) {
            if (!options["doSample"].isTrue() && !options["doSample"].isFalse())
                throw blip::Error("option doSample must be true or false");
            out.do_sample = options["doSample"].isTrue();
        }
    }
    if constexpr (has_temperature<G>::value)
        out.temperature = number_option(options, "temperature").value_or(out.temperature);
    if constexpr (has_top_k<G>::value) out.top_k = integer_option(options, "topK", out.top_k, 0, 1 << 20);
    if constexpr (has_top_p<G>::value) out.top_p = number_option(options, "topP").value_or(out.top_p);
    if constexpr (has_seed<G>::value) {
        // JavaScript numbers hold integers exactly up to 2^53.
        const std::int64_t seed = integer_option(options, "seed", 0, 0, (std::int64_t{1} << 53) - 1);
        if (has_option(options, "seed")) out.seed = static_cast<decltype(out.seed)>(seed);
    }
}

// Generation options with the command line's names in camel case: maxLength, minLength,
// and the newer settings of generation_option_names(). blip.mjs rejects names it does not
// know before they get here.
Generation generation_options(const val& options, Generation out) {
    if (options.isUndefined() || options.isNull()) return out;
    out.max_length = integer_option(options, "maxLength", out.max_length, 1, 1 << 20);
    out.min_length = integer_option(options, "minLength", out.min_length, 0, 1 << 20);
    read_newer_generation_options(options, out);
    return out;
}

blip::CaptionOptions caption_options(const val& options) {
    blip::CaptionOptions out;
    if (has_option(options, "prompt")) out.prompt = string_option(options, "prompt");
    out.generation = generation_options(options, out.generation);
    return out;
}

std::vector<std::string> string_array(const val& array, const char* what) {
    if (!val::global("Array").call<bool>("isArray", array)) throw blip::Error(std::string(what) + " must be an array of strings");
    const auto length = array["length"].as<std::size_t>();
    std::vector<std::string> out;
    out.reserve(length);
    for (std::size_t i = 0; i < length; ++i) {
        const val item = array[i];
        if (!item.isString()) throw blip::Error(std::string(what) + " must be an array of strings");
        out.push_back(item.as<std::string>());
    }
    return out;
}

val timings_since(double start, const char* key) {
    val timings = val::object();
    timings.set(key, now_ms() - start);
    return timings;
}

// Whether CaptionOptions has on_text, the text streaming callback of newer library versions.
template <class T, class = void>
struct has_on_text : std::false_type {};
template <class T>
struct has_on_text<T, std::void_t<decltype(std::declval<T&>().on_text)>> : std::true_type {};

// Whether BlipForConditionalGeneration has generate_batch() with a token callback.
template <class M, class = void>
struct has_streaming_generate : std::false_type {};
template <class M>
struct has_streaming_generate<
    M, std::void_t<decltype(std::declval<const M&>().generate_batch(
           std::declval<const std::vector<const std::vector<float>*>&>(),
           std::declval<const std::vector<std::vector<std::int32_t>>&>(), std::declval<const blip::GenerationConfig&>(),
           std::declval<std::function<void(std::int64_t, std::int32_t)>>()))>> : std::true_type {};

constexpr bool kCaptionStreaming =
    has_on_text<blip::CaptionOptions>::value || has_streaming_generate<blip::BlipForConditionalGeneration>::value;

// Captions like Captioner::caption_embeds and streams the caption to `on_token` (a JavaScript
// function, or undefined) in the best way the library offers: final text pieces through
// CaptionOptions::on_text ({piece}), else each chosen token through generate_batch() ({id,
// index, text}). Sets `streamed` when the library called back; blip.mjs reports the tokens
// after generation otherwise.
template <class Captioner, class Options>
blip::Caption caption_with_callback(const Captioner& captioner, const std::vector<float>& image_embeds,
                                    const Options& options, const val& on_token, bool& streamed) {
    using Model = std::decay_t<decltype(captioner.model())>;
    streamed = false;
    const bool wants_tokens = on_token.typeOf().as<std::string>() == "function";
    if constexpr (has_on_text<Options>::value) {
        Options with_text = options;
        if (wants_tokens) {
            with_text.on_text = [&](std::string_view piece) {
                streamed = true;
                val event = val::object();
                event.set("piece", std::string(piece));
                on_token(event);
            };
        }
        return captioner.caption_embeds(image_embeds, with_text);
    } else if constexpr (has_streaming_generate<Model>::value) {
        std::vector<std::vector<std::int32_t>> prompts;
        if (!options.prompt.empty()) prompts.push_back(captioner.tokenizer().encode(options.prompt));
        std::vector<std::int32_t> running =
            captioner.model().decoder_input_ids(prompts.empty() ? std::vector<std::int32_t>{} : prompts.front());
        auto callback = [&](std::int64_t sequence, std::int32_t token) {
            if (sequence != 0 || !wants_tokens) return;
            running.push_back(token);
            streamed = true;
            val event = val::object();
            event.set("id", token);
            event.set("index", static_cast<double>(running.size() - 1));
            event.set("text", captioner.tokenizer().decode(running));
            on_token(event);
        };
        blip::Caption caption;
        caption.ids = captioner.model().generate_batch({&image_embeds}, prompts, options.generation, callback).sequences.front();
        caption.text = captioner.tokenizer().decode(caption.ids);
        return caption;
    } else {
        return captioner.caption_embeds(image_embeds, options);
    }
}

// One loaded model file: a captioning, VQA or ITM model, as its metadata states. The
// methods are synchronous. blip.mjs wraps them in promises and runs them wherever it was
// imported, usually in a Web Worker.
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
                case blip::Task::Caption: captioner_ = std::make_unique<blip::Captioner>(file); break;
                case blip::Task::Vqa: answerer_ = std::make_unique<blip::QuestionAnswerer>(file); break;
                case blip::Task::Itm: matcher_ = std::make_unique<blip::ImageTextMatcher>(file); break;
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
        return info;
    }

    // Decodes or converts `image`, preprocesses it and runs the vision encoder.
    // Returns {embeds: Float32Array, width, height, timings}.
    val encodeImage(const val& image) {
        return guarded("encodeImage", [&] {
            const double start = now_ms();
            const blip::ImageU8 decoded = image_from_js(image);
            const double decoded_at = now_ms();
            const std::vector<float> pixels = blip::preprocess_image(decoded, config_.preprocess);
            const double preprocessed_at = now_ms();
            const std::vector<float> embeds = vision_model().forward(pixels);
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

    // Runs the vision encoder on preprocessed pixel values (float32, CHW, as transformers'
    // pixel_values). Returns {embeds, timings}.
    val encodePixelValues(const val& pixel_values) {
        return guarded("encodePixelValues", [&] {
            const std::vector<float> pixels = copy_typed_array<float>(pixel_values, "pixel values");
            const double start = now_ms();
            const std::vector<float> embeds = vision_model().forward(pixels);
            val result = val::object();
            result.set("embeds", to_typed_array(embeds));
            result.set("timings", timings_since(start, "visionMs"));
            return result;
        });
    }

    // Writes a caption for `embeds` (encodeImage's output) and streams it to `on_token`
    // (see caption_with_callback). Returns {text, ids, streamed, timings}.
    val caption(const val& embeds, const val& options, const val& on_token) {
        return guarded("caption", [&] {
            const blip::Captioner& captioner = require(captioner_, "caption");
            const std::vector<float> image_embeds = copy_typed_array<float>(embeds, "image embeddings");
            const blip::CaptionOptions parsed = caption_options(options);
            const double start = now_ms();
            bool streamed = false;
            const blip::Caption caption = caption_with_callback(captioner, image_embeds, parsed, on_token, streamed);
            val result = val::object();
            result.set("text", caption.text);
            result.set("ids", ids_to_array(caption.ids));
            result.set("streamed", streamed);
            result.set("timings", timings_since(start, "generateMs"));
            return result;
        });
    }

    // Generates an answer to `question` about `embeds`. Options: maxLength (default 10, as
    // Salesforce's VQA code), minLength, firstToken. Returns {text, ids, timings}.
    val vqa(const val& embeds, const std::string& question, const val& options, const val& on_token) {
        (void)on_token;
        return guarded("vqa", [&] {
            const blip::QuestionAnswerer& answerer = require(answerer_, "vqa");
            const std::vector<float> image_embeds = copy_typed_array<float>(embeds, "image embeddings");
            blip::VqaOptions parsed;
            parsed.first_token = first_token_option(options);
            parsed.generation = generation_options(options, parsed.generation);
            const double start = now_ms();
            const blip::VqaAnswer answer = answerer.answer_embeds(image_embeds, question, parsed);
            val result = val::object();
            result.set("text", answer.text);
            result.set("ids", ids_to_array(answer.ids));
            result.set("timings", timings_since(start, "generateMs"));
            return result;
        });
    }

    // Ranks candidate answers to `question` about `embeds`, best first. Options: k (default
    // 128), labelSmoothing (default 0), firstToken. Returns {answers: [{text, index, score,
    // firstTokenProbability}], timings}.
    val rankAnswers(const val& embeds, const std::string& question, const val& answers, const val& options) {
        return guarded("rankAnswers", [&] {
            const blip::QuestionAnswerer& answerer = require(answerer_, "rankAnswers");
            const std::vector<float> image_embeds = copy_typed_array<float>(embeds, "image embeddings");
            const blip::AnswerList list = answerer.prepare_answers(string_array(answers, "answers"));
            blip::VqaRankOptions parsed;
            parsed.first_token = first_token_option(options);
            parsed.ranking.k = integer_option(options, "k", parsed.ranking.k, 1, 1 << 20);
            parsed.ranking.label_smoothing =
                number_option(options, "labelSmoothing").value_or(parsed.ranking.label_smoothing);
            const double start = now_ms();
            const std::vector<blip::RankedAnswer> ranked = answerer.rank_embeds(image_embeds, question, list, parsed);
            val out = val::array();
            for (std::size_t i = 0; i < ranked.size(); ++i) {
                val answer = val::object();
                answer.set("text", ranked[i].text);
                answer.set("index", static_cast<double>(ranked[i].index));
                answer.set("score", ranked[i].score);
                answer.set("firstTokenProbability", ranked[i].first_token_probability);
                out.set(i, answer);
            }
            val result = val::object();
            result.set("answers", out);
            result.set("timings", timings_since(start, "rankMs"));
            return result;
        });
    }

    // Scores `texts` against `embeds`. Options: firstToken. Returns {matches: [{text,
    // itmProbability, itmLogits, cosine}], timings}.
    val match(const val& embeds, const val& texts, const val& options) {
        return guarded("match", [&] {
            const blip::ImageTextMatcher& matcher = require(matcher_, "match");
            blip::EncodedImage image;
            image.embeds = copy_typed_array<float>(embeds, "image embeddings");
            const std::vector<std::string> strings = string_array(texts, "texts");
            blip::MatchOptions parsed;
            parsed.first_token = first_token_option(options);
            const double start = now_ms();
            image.feature = matcher.model().image_features(image.embeds);
            const std::vector<blip::MatchScore> scores = matcher.match(image, strings, parsed);
            val out = val::array();
            for (std::size_t i = 0; i < scores.size(); ++i) {
                val match = val::object();
                match.set("text", strings[i]);
                match.set("itmProbability", scores[i].itm_probability);
                val logits = val::array();
                logits.set(0, scores[i].itm_logits[0]);
                logits.set(1, scores[i].itm_logits[1]);
                match.set("itmLogits", logits);
                match.set("cosine", scores[i].itc_similarity);
                out.set(i, match);
            }
            val result = val::object();
            result.set("matches", out);
            result.set("timings", timings_since(start, "matchMs"));
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
    template <class Pipeline>
    const Pipeline& require(const std::unique_ptr<Pipeline>& pipeline, const char* operation) const {
        if (!pipeline)
            throw blip::Error(std::string(operation) + ": the loaded model is a " + blip::task_name(config_.task) +
                              " model" + (loaded() ? "" : " (none is loaded)"));
        return *pipeline;
    }

    bool loaded() const { return captioner_ || answerer_ || matcher_; }

    const blip::BlipVisionModel& vision_model() const {
        if (captioner_) return captioner_->model().vision_model;
        if (answerer_) return answerer_->model().vision_model;
        if (matcher_) return matcher_->model().vision_model;
        throw blip::Error("no model is loaded");
    }

    const blip::Tokenizer& tokenizer() const {
        if (captioner_) return captioner_->tokenizer();
        if (answerer_) return answerer_->tokenizer();
        if (matcher_) return matcher_->tokenizer();
        throw blip::Error("no model is loaded");
    }

    blip::BlipConfig config_;
    std::unique_ptr<blip::Captioner> captioner_;
    std::unique_ptr<blip::QuestionAnswerer> answerer_;
    std::unique_ptr<blip::ImageTextMatcher> matcher_;
};

// Returns {cpuLevel, simd, generationOptions, streaming} of this build.
val build_info() {
    val info = val::object();
    info.set("streaming", blip_wasm::kCaptionStreaming);
    info.set("generationOptions", generation_option_names());
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
        .function("vqa", &blip_wasm::Model::vqa)
        .function("rankAnswers", &blip_wasm::Model::rankAnswers)
        .function("match", &blip_wasm::Model::match)
        .function("tokenize", &blip_wasm::Model::tokenize)
        .function("decodeIds", &blip_wasm::Model::decodeIds);
    function("buildInfo", &blip_wasm::build_info);
}
