// An app that includes the library's single header in two translation units.
#include <blip/blip.hpp>

#include <cstdio>

int second_unit_check();

int main() {
    blip::gguf::Writer writer;
    blip::write_config(writer, blip::BlipConfig{});
    auto file = blip::gguf::File::from_buffer(writer.to_bytes(), "app.gguf");
    const blip::BlipConfig config = blip::read_config(*file);
    std::printf("vision hidden size %lld\n", static_cast<long long>(config.vision.hidden_size));
    return config.vision.hidden_size == 768 && second_unit_check() == 0 ? 0 : 1;
}
