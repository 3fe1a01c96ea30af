// For the AMX tests: skips a test, saying why, where tiles cannot run.
#ifndef STRATA_KERNELS_CPU_AMX_TEST_UTIL_H_
#define STRATA_KERNELS_CPU_AMX_TEST_UTIL_H_

#include <string>

#include "gtest/gtest.h"
#include "kernels/cpu/amx.h"
#include "kernels/cpu/isa.h"

#define SKIP_WITHOUT_AMX()                                                                              \
  if (!::strata::kernels::cpu::IsaSupported(::strata::kernels::cpu::Isa::kAmx)) {                      \
    GTEST_SKIP() << (::strata::kernels::cpu::IsaSupported(::strata::kernels::cpu::Isa::kAvx512Bf16)     \
                         ? std::string(::strata::kernels::cpu::AmxStatus().message())                   \
                         : std::string("this CPU lacks AVX-512 BF16 and AMX"));                         \
  }

#endif  // STRATA_KERNELS_CPU_AMX_TEST_UTIL_H_
