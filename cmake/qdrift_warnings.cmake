# qdrift_warnings: one INTERFACE target carrying the project's warning and float flags.
add_library(qdrift_warnings INTERFACE)
target_compile_options(qdrift_warnings INTERFACE
  -Wall -Wextra -Wpedantic -Wshadow -Wconversion -Wsign-conversion -Wno-sign-conversion
  # Emulation paths must control every rounding: never let the compiler fuse a*b+c.
  -ffp-contract=off
  # Lets the vectorizer if-convert float selects; results are unchanged (only the FP exception
  # flags, which nothing reads, may differ).
  -fno-trapping-math
  $<$<BOOL:${QDRIFT_WERROR}>:-Werror>)
