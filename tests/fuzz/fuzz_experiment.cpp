// SPDX-License-Identifier: Apache-2.0
// libFuzzer target over the experiment config reader: any input either parses, normalizes and
// re-parses to the same text, or raises a qdrift::Error. Anything else (another exception, a
// crash, a sanitizer report) is a bug.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "qdrift/core/error.h"
#include "qdrift/experiments/experiment.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  std::string normalized;
  try {
    normalized = qdrift::to_json(qdrift::parse_experiment(text, "/nonexistent-fuzz-dir"));
  } catch (const qdrift::Error&) {
    return 0;
  }
  // What the reader wrote, it must read back unchanged (sweep values were validated one by one).
  if (qdrift::to_json(qdrift::parse_experiment(normalized)) != normalized) std::abort();
  return 0;
}
