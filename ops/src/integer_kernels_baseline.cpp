// SPDX-License-Identifier: Apache-2.0
// The fast int8 kernels compiled for the baseline instruction set (see integer_kernels.inc).
#define QDRIFT_ISA_NS baseline
#include "integer_kernels.inc"
