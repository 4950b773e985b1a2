// The rows a 3x3 'same' convolution at stride 1 multiplies when it runs as one matmul
// (resnet/training/conv_forms.py, columns()), and their gradient, each as one op:
//
//   Columns3x3(x [N, H, W, C]) -> [N, H, W, 9C]: for each pixel, the nine neighbours' channels in
//     (dy, dx) row-major order, zeros outside the map
//   Columns3x3Grad(d [N, H, W, 9C]) -> [N, H, W, C]: each pixel's nine uses summed back
//
// TensorFlow computes the first as a Pad, nine Slices and a ConcatV2 (each a pass over the map,
// the last nine times its size) and the second as nine Slices of the gradient, nine Pads and an
// AddN of nine full-size maps. Here each is one pass: the forward copies each neighbour's
// channels once, the gradient adds the nine in (dy, dx) order, rounding to the type after each
// addition as TensorFlow's AddN does. The forward is bit-identical to TensorFlow's; the gradient
// adds the same terms, in the order of the taps.

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "common.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace resnet_kernels {
namespace {

// acc = round(acc + x), elementwise: bfloat16 (kept widened in acc) and float32.
__attribute__((target_clones("avx512f", "avx2", "default")))
void Accumulate(float* acc, const uint16_t* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) acc[i] = Widen(Round(acc[i] + Widen(x[i])));
}
__attribute__((target_clones("avx512f", "avx2", "default")))
void Accumulate(float* acc, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) acc[i] = acc[i] + x[i];
}
__attribute__((target_clones("avx512f", "avx2", "default")))
void Store(uint16_t* out, const float* acc, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = Round(acc[i]);
}
void Store(float* out, const float* acc, int64_t n) { std::memcpy(out, acc, n * sizeof(float)); }
void Load(float* acc, const uint16_t* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) acc[i] = Widen(x[i]);
}
void Load(float* acc, const float* x, int64_t n) { std::memcpy(acc, x, n * sizeof(float)); }

template <typename T>
using Bits = typename std::conditional<std::is_same<T, bf16>::value, uint16_t, float>::type;

bool Check4D(OpKernelContext* ctx, const Tensor& t, const char* what) {
  if (t.dims() != 4) {
    ctx->CtxFailure(errors::InvalidArgument(what, " must be [batch, height, width, channels], got ",
                                            t.shape().DebugString()));
    return false;
  }
  return true;
}

template <typename T>
class Columns3x3Op : public OpKernel {
 public:
  explicit Columns3x3Op(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    if (!Check4D(ctx, x, "Columns3x3: x")) return;
    const int64_t n = x.dim_size(0), h = x.dim_size(1), w = x.dim_size(2), c = x.dim_size(3);
    Tensor* out;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({n, h, w, 9 * c}), &out));
    const T* xp = x.flat<T>().data();
    T* op = out->flat<T>().data();
    Parallel(ctx, n * h, 18 * w * c * sizeof(T), [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const int64_t b = row / h, y = row % h;
        for (int64_t x0 = 0; x0 < w; ++x0) {
          T* dst = op + ((row * w) + x0) * 9 * c;
          for (int dy = 0; dy < 3; ++dy) {
            for (int dx = 0; dx < 3; ++dx, dst += c) {
              const int64_t sy = y + dy - 1, sx = x0 + dx - 1;
              if (sy < 0 || sy >= h || sx < 0 || sx >= w) {
                std::memset(dst, 0, c * sizeof(T));
              } else {
                std::memcpy(dst, xp + ((b * h + sy) * w + sx) * c, c * sizeof(T));
              }
            }
          }
        }
      }
    });
  }
};

template <typename T>
class Columns3x3GradOp : public OpKernel {
 public:
  explicit Columns3x3GradOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& d = ctx->input(0);
    if (!Check4D(ctx, d, "Columns3x3Grad: d")) return;
    OP_REQUIRES(ctx, d.dim_size(3) % 9 == 0,
                errors::InvalidArgument("Columns3x3Grad: d's channels (", d.dim_size(3),
                                        ") must be 9 x the input's"));
    const int64_t n = d.dim_size(0), h = d.dim_size(1), w = d.dim_size(2), c = d.dim_size(3) / 9;
    Tensor* out;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({n, h, w, c}), &out));
    using B = Bits<T>;
    const B* dp = reinterpret_cast<const B*>(d.flat<T>().data());
    B* op = reinterpret_cast<B*>(out->flat<T>().data());
    Parallel(ctx, n * h, 30 * w * c * sizeof(T), [&](int64_t begin, int64_t end) {
      std::vector<float> acc(c);
      for (int64_t row = begin; row < end; ++row) {
        const int64_t b = row / h, y = row % h;
        for (int64_t x0 = 0; x0 < w; ++x0) {
          // Pixel (y, x0) is tap (dy, dx) of the output pixel (y - dy + 1, x0 - dx + 1).
          bool first = true;
          for (int dy = 0; dy < 3; ++dy) {
            for (int dx = 0; dx < 3; ++dx) {
              const int64_t oy = y - dy + 1, ox = x0 - dx + 1;
              if (oy < 0 || oy >= h || ox < 0 || ox >= w) {  // TensorFlow adds a padded +0
                if (first) {
                  std::fill(acc.begin(), acc.end(), 0.0f);
                } else {
                  for (float& a : acc) a += 0.0f;  // -0 becomes +0, as there
                }
                first = false;
                continue;
              }
              const B* src = dp + ((b * h + oy) * w + ox) * 9 * c + (dy * 3 + dx) * c;
              if (first) {
                Load(acc.data(), src, c);
                first = false;
              } else {
                Accumulate(acc.data(), src, c);
              }
            }
          }
          Store(op + ((b * h + y) * w + x0) * c, acc.data(), c);
        }
      }
    });
  }
};

}  // namespace
}  // namespace resnet_kernels

REGISTER_OP("Columns3x3")
    .Input("x: T")
    .Output("columns: T")
    .Attr("T: {float, bfloat16}")
    .SetShapeFn([](::tensorflow::shape_inference::InferenceContext* c) {
      ::tensorflow::shape_inference::ShapeHandle x;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &x));
      ::tensorflow::shape_inference::DimensionHandle nine_c;
      TF_RETURN_IF_ERROR(c->Multiply(c->Dim(x, 3), 9, &nine_c));
      ::tensorflow::shape_inference::ShapeHandle out;
      TF_RETURN_IF_ERROR(c->ReplaceDim(x, 3, nine_c, &out));
      c->set_output(0, out);
      return ::tensorflow::OkStatus();
    });

REGISTER_OP("Columns3x3Grad")
    .Input("d: T")
    .Output("dx: T")
    .Attr("T: {float, bfloat16}")
    .SetShapeFn([](::tensorflow::shape_inference::InferenceContext* c) {
      ::tensorflow::shape_inference::ShapeHandle d;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &d));
      ::tensorflow::shape_inference::DimensionHandle ch;
      TF_RETURN_IF_ERROR(c->Divide(c->Dim(d, 3), 9, true, &ch));
      ::tensorflow::shape_inference::ShapeHandle out;
      TF_RETURN_IF_ERROR(c->ReplaceDim(d, 3, ch, &out));
      c->set_output(0, out);
      return ::tensorflow::OkStatus();
    });

#define RESNET_REGISTER_COLUMNS(T)                                                         \
  REGISTER_KERNEL_BUILDER(                                                                 \
      Name("Columns3x3").Device(::tensorflow::DEVICE_CPU).TypeConstraint<T>("T"),          \
      resnet_kernels::Columns3x3Op<T>);                                                    \
  REGISTER_KERNEL_BUILDER(                                                                 \
      Name("Columns3x3Grad").Device(::tensorflow::DEVICE_CPU).TypeConstraint<T>("T"),      \
      resnet_kernels::Columns3x3GradOp<T>);
RESNET_REGISTER_COLUMNS(float)
RESNET_REGISTER_COLUMNS(::tensorflow::bfloat16)
