// The trained fold's pass over a kernel (resnet/training/frozen.py), as one op each way:
//
//   ScaleToBfloat16(kernel, scale)          = bfloat16(kernel * scale)   (scale: the last axis)
//   ScaleToBfloat16Grad(grad, kernel, scale) = (grad * scale, sum of grad * kernel over all
//                                               axes but the last), in float32
//
// TensorFlow computes the same with a Mul and a Cast forward and a Cast, two Muls and a Sum
// backward: six passes over the weights in its Eigen kernels, which this wheel builds without
// AVX-512 and which are slower in bfloat16 than in float32. Here each way is one pass, compiled
// for the CPU it runs on (target_clones: the loader picks the AVX-512, AVX2 or baseline body).
//
// Numerics: the forward rounds to nearest even and any NaN to the positive quiet NaN, as
// TensorFlow's Cast to bfloat16 does, so the output and the kernel gradient are bit-identical to
// TensorFlow's. The scale's gradient sums fixed blocks of rows and then adds the blocks in order:
// the same bits whatever the thread count, within float32 rounding of TensorFlow's own sum.

#include <cstdint>

#include "common.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace resnet_kernels {
namespace {

__attribute__((target_clones("avx512f", "avx2", "default")))
void ScaleRows(const float* kernel, const float* scale, uint16_t* out, int64_t rows, int64_t c) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* k = kernel + r * c;
    uint16_t* o = out + r * c;
    for (int64_t j = 0; j < c; ++j) o[j] = Round(k[j] * scale[j]);
  }
}

__attribute__((target_clones("avx512f", "avx2", "default")))
void GradRows(const uint16_t* grad, const float* kernel, const float* scale, float* d_kernel,
              float* d_scale, int64_t rows, int64_t c) {
  for (int64_t r = 0; r < rows; ++r) {
    const uint16_t* g = grad + r * c;
    const float* k = kernel + r * c;
    float* d = d_kernel + r * c;
    for (int64_t j = 0; j < c; ++j) {
      const float x = Widen(g[j]);
      d[j] = x * scale[j];
      d_scale[j] += x * k[j];
    }
  }
}

// The kernel's rows (all axes but the last) and the scale's length, checked.
bool Rows(OpKernelContext* ctx, const Tensor& kernel, const Tensor& scale, int64_t* rows) {
  const int64_t c = scale.NumElements();
  if (scale.dims() != 1 || kernel.dims() < 1 || kernel.dim_size(kernel.dims() - 1) != c) {
    ctx->CtxFailure(errors::InvalidArgument(
        "scale must be a vector as long as kernel's last axis: kernel ",
        kernel.shape().DebugString(), ", scale ", scale.shape().DebugString()));
    return false;
  }
  *rows = c ? kernel.NumElements() / c : 0;
  return true;
}

class ScaleToBfloat16Op : public OpKernel {
 public:
  explicit ScaleToBfloat16Op(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& kernel = ctx->input(0);
    const Tensor& scale = ctx->input(1);
    int64_t rows;
    if (!Rows(ctx, kernel, scale, &rows)) return;
    Tensor* out;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, kernel.shape(), &out));
    const int64_t c = scale.NumElements();
    const float* k = kernel.flat<float>().data();
    const float* s = scale.flat<float>().data();
    auto* o = reinterpret_cast<uint16_t*>(out->flat<::tensorflow::bfloat16>().data());
    Parallel(ctx, rows, 6 * c, [&](int64_t begin, int64_t end) {
      ScaleRows(k + begin * c, s, o + begin * c, end - begin, c);
    });
  }
};

class ScaleToBfloat16GradOp : public OpKernel {
 public:
  explicit ScaleToBfloat16GradOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& grad = ctx->input(0);
    const Tensor& kernel = ctx->input(1);
    const Tensor& scale = ctx->input(2);
    int64_t rows;
    if (!Rows(ctx, kernel, scale, &rows)) return;
    OP_REQUIRES(ctx, grad.shape() == kernel.shape(),
                errors::InvalidArgument("grad ", grad.shape().DebugString(),
                                        " must have kernel's shape ",
                                        kernel.shape().DebugString()));
    Tensor *d_kernel, *d_scale;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, kernel.shape(), &d_kernel));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, scale.shape(), &d_scale));
    const int64_t c = scale.NumElements();
    const auto* g = reinterpret_cast<const uint16_t*>(grad.flat<::tensorflow::bfloat16>().data());
    const float* k = kernel.flat<float>().data();
    const float* s = scale.flat<float>().data();
    float* dk = d_kernel->flat<float>().data();
    BlockedColumnSum(ctx, rows, c, 10 * c, [&](int64_t first, int64_t n, float* partial) {
      GradRows(g + first * c, k + first * c, s, dk + first * c, partial, n, c);
    }, d_scale->flat<float>().data());
  }
};

}  // namespace
}  // namespace resnet_kernels

REGISTER_OP("ScaleToBfloat16")
    .Input("kernel: float")
    .Input("scale: float")
    .Output("out: bfloat16")
    .SetShapeFn([](::tensorflow::shape_inference::InferenceContext* c) {
      c->set_output(0, c->input(0));
      return ::tensorflow::OkStatus();
    });

REGISTER_OP("ScaleToBfloat16Grad")
    .Input("grad: bfloat16")
    .Input("kernel: float")
    .Input("scale: float")
    .Output("d_kernel: float")
    .Output("d_scale: float")
    .SetShapeFn([](::tensorflow::shape_inference::InferenceContext* c) {
      c->set_output(0, c->input(1));
      c->set_output(1, c->input(2));
      return ::tensorflow::OkStatus();
    });

REGISTER_KERNEL_BUILDER(Name("ScaleToBfloat16").Device(::tensorflow::DEVICE_CPU),
                        resnet_kernels::ScaleToBfloat16Op);
REGISTER_KERNEL_BUILDER(Name("ScaleToBfloat16Grad").Device(::tensorflow::DEVICE_CPU),
                        resnet_kernels::ScaleToBfloat16GradOp);
