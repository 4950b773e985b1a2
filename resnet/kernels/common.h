// What the job's kernels share: TensorFlow's names, bfloat16 as TensorFlow rounds and widens it, the CPU thread
// pool, and a column sum whose result does not depend on the thread count.

#ifndef RESNET_KERNELS_COMMON_H_
#define RESNET_KERNELS_COMMON_H_

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/util/work_sharder.h"

namespace resnet_kernels {

using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;
namespace errors = ::tensorflow::errors;
using bf16 = ::tensorflow::bfloat16;

// float32 to bfloat16, to nearest even; every NaN to the positive quiet NaN, as TensorFlow's
// Cast and Eigen's bfloat16 arithmetic give it.
inline uint16_t Round(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  const bool nan = (u & 0x7fffffffu) > 0x7f800000u;
  return nan ? static_cast<uint16_t>(0x7fc0u) : static_cast<uint16_t>(rounded);
}

inline float Widen(uint16_t h) {
  const uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// f(begin, end) over [0, units) on the op's CPU threads; `cost`: per unit, as Shard wants it.
template <typename F>
void Parallel(OpKernelContext* ctx, int64_t units, int64_t cost, F&& f) {
  auto* pool = ctx->device()->tensorflow_cpu_worker_threads()->workers;
  ::tensorflow::Shard(pool->NumThreads(), pool, units, cost, f);
}

// total[c] = the sum over `rows` rows, each block of kBlockRows rows summed on its own by
// add_rows(first_row, n_rows, partial) into a zeroed `partial` of c floats, then the blocks
// added in order: the same bits whatever the thread count.
constexpr int64_t kBlockRows = 256;

template <typename F>
void BlockedColumnSum(OpKernelContext* ctx, int64_t rows, int64_t c,
                      int64_t cost_per_row, F&& add_rows, float* total) {
  const int64_t blocks = (rows + kBlockRows - 1) / kBlockRows;
  std::vector<float> partial(blocks * c, 0.0f);
  Parallel(ctx, blocks, cost_per_row * kBlockRows, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const int64_t first = b * kBlockRows;
      add_rows(first, std::min(kBlockRows, rows - first), partial.data() + b * c);
    }
  });
  std::fill(total, total + c, 0.0f);
  for (int64_t b = 0; b < blocks; ++b) {
    for (int64_t j = 0; j < c; ++j) total[j] += partial[b * c + j];
  }
}

}  // namespace resnet_kernels

#endif  // RESNET_KERNELS_COMMON_H_
