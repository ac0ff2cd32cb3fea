// SPDX-License-Identifier: Apache-2.0
// The fast affine element kernels compiled for the avx512 instruction set (see fake_quant_fast.inc).
#define QDRIFT_ISA_NS avx512
#include "fake_quant_fast.inc"
