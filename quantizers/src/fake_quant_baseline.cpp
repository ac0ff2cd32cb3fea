// SPDX-License-Identifier: Apache-2.0
// The fast affine element kernels compiled for the baseline instruction set (see fake_quant_fast.inc).
#define QDRIFT_ISA_NS baseline
#include "fake_quant_fast.inc"
