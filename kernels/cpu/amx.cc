#include "kernels/cpu/amx.h"

#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <mutex>

#include "absl/strings/str_cat.h"

namespace strata::kernels::cpu {
namespace {

// From the kernel's uapi (asm/prctl.h, asm/fpu/xstate.h); Debian's glibc
// headers do not name them.
constexpr int kArchReqXcompPerm = 0x1023;
constexpr int kXfeatureXtiledata = 18;

// The LDTILECFG operand (Intel SDM, "TILE CONFIGURATION"): palette 1, then
// bytes per row of each of the 16 tiles, then rows of each tile.
struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};
static_assert(sizeof(TileConfig) == 64);

absl::Status Probe() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) {
    return absl::FailedPreconditionError("AMX unavailable: cpuid has no leaf 7");
  }
  const bool bf16 = edx & (1u << 22), tile = edx & (1u << 24);
  if (!tile || !bf16) {
    return absl::FailedPreconditionError(absl::StrCat("AMX unavailable: this CPU lacks ",
                                                      !tile ? "AMX-TILE" : "AMX-BF16", " (cpuid)"));
  }
  if (syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) != 0) {
    const int err = errno;
    return absl::FailedPreconditionError(
        absl::StrCat("AMX unavailable: the kernel refused the tile state (arch_prctl ARCH_REQ_XCOMP_PERM: ",
                     std::strerror(err), ")"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status AmxStatus() {
  static std::once_flag once;
  static absl::Status* status = nullptr;
  std::call_once(once, [] { status = new absl::Status(Probe()); });
  return *status;
}

__attribute__((target("amx-tile"))) void ConfigureTiles() {
  TileConfig c;
  for (int t = 0; t < 8; ++t) {
    c.colsb[t] = 64;
    c.rows[t] = 16;
  }
  asm volatile("ldtilecfg %0" ::"m"(c));
}

__attribute__((target("amx-tile"))) void ReleaseTiles() { asm volatile("tilerelease" ::: "memory"); }

}  // namespace strata::kernels::cpu
