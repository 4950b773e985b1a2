// bfloat16 kernels for three ops of the backward pass, registered for TensorFlow's own op types
// at a priority above its kernels: once the library is loaded (resnet/kernels/__init__.py), every
// bfloat16 ReluGrad, BiasAddGrad and AddN in the process runs here. TensorFlow's are Eigen's,
// built without AVX-512 in this wheel, and slower in bfloat16 than in float32 for the same
// element count (BENCHMARKS.md); these widen to float32, compute, and round once, in loops the
// compiler vectorizes for the CPU they run on (target_clones).
//
// Numerics, against TensorFlow's kernels:
//   ReluGrad: gradients * (features > 0), the product rounded: bit-identical (signed zeros, and
//     every NaN as the positive quiet NaN, included).
//   AddN: left to right, rounded to bfloat16 after each addition, as Eigen's bfloat16 sum of
//     TensorFlow's AddN: bit-identical.
//   BiasAddGrad: summed in float32 over fixed blocks of rows, the blocks added in order, then
//     rounded once: the same bits whatever the thread count; TensorFlow's float32 sum runs in
//     another order, so a result can differ from it in the last bit of bfloat16.

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "common.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/register_types.h"
#include "tensorflow/core/util/tensor_format.h"

namespace resnet_kernels {
namespace {

constexpr int kPriority = 1;  // above TensorFlow's own kernels (priority 0)

inline const uint16_t* Bits(const Tensor& t) {
  return reinterpret_cast<const uint16_t*>(t.flat<bf16>().data());
}
inline uint16_t* Bits(Tensor* t) { return reinterpret_cast<uint16_t*>(t->flat<bf16>().data()); }

__attribute__((target_clones("avx512f", "avx2", "default")))
void ReluGradSpan(const uint16_t* g, const uint16_t* f, uint16_t* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    // features > 0 from the bits (positive, not zero, not NaN): a float compare here keeps GCC
    // from vectorizing the loop (it may trap), this does not.
    const uint32_t positive = f[i] > 0 && f[i] <= 0x7f80u;
    const uint32_t one = positive * 0x3f800000u;  // 1.0f or 0.0f
    float mask;
    std::memcpy(&mask, &one, sizeof mask);
    out[i] = Round(Widen(g[i]) * mask);
  }
}

__attribute__((target_clones("avx512f", "avx2", "default")))
void AddSpan(const uint16_t* a, const uint16_t* b, uint16_t* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = Round(Widen(a[i]) + Widen(b[i]));
}

__attribute__((target_clones("avx512f", "avx2", "default")))
void SumRows(const uint16_t* x, float* sum, int64_t rows, int64_t c) {
  for (int64_t r = 0; r < rows; ++r) {
    const uint16_t* row = x + r * c;
    for (int64_t j = 0; j < c; ++j) sum[j] += Widen(row[j]);
  }
}

__attribute__((target_clones("avx512f", "avx2", "default")))
float SumSpan(const uint16_t* x, int64_t n) {
  // Sixteen running sums, then added in order: a fixed order the compiler can vectorize (it
  // may not reorder one float sum by itself).
  constexpr int kLanes = 16;
  float lanes[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) lanes[j] += Widen(x[i + j]);
  }
  for (; i < n; ++i) lanes[i % kLanes] += Widen(x[i]);
  float s = 0.0f;
  for (int j = 0; j < kLanes; ++j) s += lanes[j];
  return s;
}

class ReluGradOp : public OpKernel {
 public:
  explicit ReluGradOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& g = ctx->input(0);
    const Tensor& f = ctx->input(1);
    OP_REQUIRES(ctx, g.shape() == f.shape(),
                errors::InvalidArgument("ReluGrad: gradients ", g.shape().DebugString(),
                                        " and features ", f.shape().DebugString(),
                                        " must have the same shape"));
    Tensor* out;
    OP_REQUIRES_OK(ctx, ctx->forward_input_or_allocate_output({0}, 0, g.shape(), &out));
    const uint16_t *gp = Bits(g), *fp = Bits(f);
    uint16_t* op = Bits(out);
    Parallel(ctx, g.NumElements(), 4, [&](int64_t begin, int64_t end) {
      ReluGradSpan(gp + begin, fp + begin, op + begin, end - begin);
    });
  }
};

class AddNOp : public OpKernel {
 public:
  explicit AddNOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const int n = ctx->num_inputs();
    const Tensor& first = ctx->input(0);
    for (int i = 1; i < n; ++i) {
      OP_REQUIRES(ctx, ctx->input(i).shape() == first.shape(),
                  errors::InvalidArgument("AddN: input ", i, " has shape ",
                                          ctx->input(i).shape().DebugString(), ", input 0 ",
                                          first.shape().DebugString()));
    }
    if (n == 1) {
      ctx->set_output(0, first);
      return;
    }
    Tensor* out;
    OP_REQUIRES_OK(ctx, ctx->forward_input_or_allocate_output({0}, 0, first.shape(), &out));
    uint16_t* op = Bits(out);
    std::vector<const uint16_t*> in(n);
    for (int i = 0; i < n; ++i) in[i] = Bits(ctx->input(i));
    Parallel(ctx, first.NumElements(), 3 * n, [&](int64_t begin, int64_t end) {
      // Left to right, rounded each time; out may be input 0's buffer (forwarded), read first.
      AddSpan(in[0] + begin, in[1] + begin, op + begin, end - begin);
      for (int i = 2; i < n; ++i) AddSpan(op + begin, in[i] + begin, op + begin, end - begin);
    });
  }
};

class BiasAddGradOp : public OpKernel {
 public:
  explicit BiasAddGradOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    std::string format;
    if (ctx->GetAttr("data_format", &format).ok()) {
      OP_REQUIRES(ctx, ::tensorflow::FormatFromString(format, &format_),
                  errors::InvalidArgument("BiasAddGrad: unknown data_format ", format));
    }
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    OP_REQUIRES(ctx, x.dims() >= 2,
                errors::InvalidArgument("BiasAddGrad: input must be at least 2-D, got ",
                                        x.shape().DebugString()));
    const bool nchw = format_ == ::tensorflow::FORMAT_NCHW;
    const int64_t c = x.dim_size(nchw ? 1 : x.dims() - 1);
    Tensor* out;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, ::tensorflow::TensorShape({c}), &out));
    uint16_t* op = Bits(out);
    const uint16_t* xp = Bits(x);
    std::vector<float> total(c, 0.0f);
    if (c == 0) return;
    if (!nchw) {
      BlockedColumnSum(ctx, x.NumElements() / c, c, 2 * c,
                       [&](int64_t first, int64_t n, float* partial) {
        SumRows(xp + first * c, partial, n, c);
      }, total.data());
    } else {  // [N, C, spatial...]: one partial per (n, c), the images added in order
      const int64_t batch = x.dim_size(0), inner = x.NumElements() / (batch * c);
      std::vector<float> partial(batch * c, 0.0f);
      Parallel(ctx, batch * c, 2 * inner, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) partial[i] = SumSpan(xp + i * inner, inner);
      });
      for (int64_t n = 0; n < batch; ++n) {
        for (int64_t j = 0; j < c; ++j) total[j] += partial[n * c + j];
      }
    }
    for (int64_t j = 0; j < c; ++j) op[j] = Round(total[j]);
  }

 private:
  ::tensorflow::TensorFormat format_ = ::tensorflow::FORMAT_NHWC;
};

}  // namespace
}  // namespace resnet_kernels

REGISTER_KERNEL_BUILDER(Name("ReluGrad")
                            .Device(::tensorflow::DEVICE_CPU)
                            .TypeConstraint<::tensorflow::bfloat16>("T")
                            .Priority(resnet_kernels::kPriority),
                        resnet_kernels::ReluGradOp);
REGISTER_KERNEL_BUILDER(Name("AddN")
                            .Device(::tensorflow::DEVICE_CPU)
                            .TypeConstraint<::tensorflow::bfloat16>("T")
                            .Priority(resnet_kernels::kPriority),
                        resnet_kernels::AddNOp);
REGISTER_KERNEL_BUILDER(Name("BiasAddGrad")
                            .Device(::tensorflow::DEVICE_CPU)
                            .TypeConstraint<::tensorflow::bfloat16>("T")
                            .Priority(resnet_kernels::kPriority),
                        resnet_kernels::BiasAddGradOp);
