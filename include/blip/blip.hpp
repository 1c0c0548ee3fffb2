// BLIP on the CPU: the one header an application includes.
//
// Contents, from the bottom up:
//   core      errors, element types, large buffers, mapped files, threads
//   gguf      the model file format (read and write)
//   model     configuration, the vision transformer, the BERT-style text transformer
//             and the task models built from them
//   generate  decoding strategies
//   text      the WordPiece tokenizer
//   image     image decoding and preprocessing
//   pipeline  whole tasks from image and text to results
#pragma once

// core
#include "blip/core/dtype.hpp"
#include "blip/core/error.hpp"
#include "blip/core/large_buffer.hpp"
#include "blip/core/mapped_file.hpp"
#include "blip/core/output_path.hpp"
#include "blip/core/parallel.hpp"

// gguf
#include "blip/gguf/format.hpp"
#include "blip/gguf/reader.hpp"
#include "blip/gguf/writer.hpp"

// model
#include "blip/model/config.hpp"
#include "blip/model/metadata.hpp"
#include "blip/model/expected_tensors.hpp"
#include "blip/model/vision.hpp"
#include "blip/model/text.hpp"
#include "blip/model/caption.hpp"
#include "blip/model/image_grounded.hpp"
#include "blip/model/vqa.hpp"
#include "blip/model/itm.hpp"

// generate
#include "blip/generate/config.hpp"
#include "blip/generate/logits_process.hpp"
#include "blip/generate/sampling.hpp"
#include "blip/generate/beam_search.hpp"
#include "blip/generate/generate.hpp"
#include "blip/generate/greedy.hpp"
#include "blip/generate/streaming.hpp"

// text
#include "blip/text/tokenizer.hpp"
#include "blip/text/tokenizer_gguf.hpp"

// image
#include "blip/image/image.hpp"
#include "blip/image/resize.hpp"
#include "blip/image/preprocess.hpp"

// pipeline
#include "blip/pipeline/captioner.hpp"
#include "blip/pipeline/vqa.hpp"
#include "blip/pipeline/matcher.hpp"
#include "blip/pipeline/retrieval.hpp"
