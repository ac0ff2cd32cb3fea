// SPDX-License-Identifier: Apache-2.0
// The fast int8 kernels compiled for the avx2 instruction set (see integer_kernels.inc).
#define QDRIFT_ISA_NS avx2
#include "integer_kernels.inc"
