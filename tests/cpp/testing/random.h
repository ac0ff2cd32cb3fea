// SPDX-License-Identifier: Apache-2.0
// Replayable randomness for tests: QDRIFT_TEST_SEED overrides the fixed default, and every
// test CAPTUREs the seed so a failure can be rerun exactly.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <random>

namespace qdrift::testing {

inline std::uint64_t test_seed() {
  if (const char* s = std::getenv("QDRIFT_TEST_SEED")) return std::strtoull(s, nullptr, 10);
  return 20261122;
}

inline std::mt19937_64 make_rng(std::uint64_t salt = 0) { return std::mt19937_64(test_seed() ^ salt); }

}  // namespace qdrift::testing
