// The momentum update of resnet/training/optimizer.py's SGD, registered for TensorFlow's own op
// type at a priority above its kernel (as backward.cc's): once the library is loaded, every
// float32 ResourceApplyKerasMomentum in the process runs here.
//
// `accum = accum * momentum - grad * lr; var += accum` (Nesterov: `var += accum * momentum -
// grad * lr`), as TensorFlow's training_ops.cc, in one pass over the three arrays where
// TensorFlow's Eigen expressions make two. Every product and difference is rounded as
// TensorFlow's are (the library is built with -ffp-contract=off: no fused multiply-add), so the
// weights and slots are bit-identical. The variables are locked and copied-on-write as
// TensorFlow's training ops do (training_op_helpers.h).
//
// Not here: float32 <-> bfloat16 Cast, the other pass over the weights each step. Written and
// timed the same way, TensorFlow's ran as fast (memory-bound at the job's sizes; the notebook,
// 2026-12-07 16:58 UTC), so it stays TensorFlow's.

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>

#include "common.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/resource_mgr.h"
#include "tensorflow/core/framework/resource_var.h"

namespace resnet_kernels {
namespace {

constexpr int kPriority = 1;  // above TensorFlow's own kernels (priority 0)

// One loop for both (the compiler unswitches it on `nesterov`).
__attribute__((target_clones("avx512f", "avx2", "default")))
void MomentumSpan(float* var, float* accum, const float* grad, float lr, float momentum,
                  bool nesterov, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float a = accum[i] * momentum - grad[i] * lr;
    accum[i] = a;
    var[i] += nesterov ? a * momentum - grad[i] * lr : a;
  }
}

class KerasMomentumOp : public OpKernel {
 public:
  explicit KerasMomentumOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("use_nesterov", &nesterov_));
  }

  void Compute(OpKernelContext* ctx) override {
    ::tensorflow::core::RefCountPtr<::tensorflow::Var> var, accum;
    OP_REQUIRES_OK(ctx, LookupResource(ctx, HandleFromInput(ctx, 0), &var));
    OP_REQUIRES_OK(ctx, LookupResource(ctx, HandleFromInput(ctx, 1), &accum));
    // Both locked, in address order (TensorFlow's order: no deadlock against its own ops).
    ::tsl::mutex* first = std::min(var->mu(), accum->mu());
    ::tsl::mutex* second = std::max(var->mu(), accum->mu());
    ::tsl::mutex_lock lock_first(*first);
    std::unique_ptr<::tsl::mutex_lock> lock_second;
    if (second != first) lock_second = std::make_unique<::tsl::mutex_lock>(*second);

    OP_REQUIRES_OK(ctx, Writable(ctx, var.get()));
    OP_REQUIRES_OK(ctx, Writable(ctx, accum.get()));
    Tensor* v = var->tensor();
    Tensor* a = accum->tensor();
    const Tensor& lr = ctx->input(2);
    const Tensor& grad = ctx->input(3);
    const Tensor& momentum = ctx->input(4);
    OP_REQUIRES(ctx, ::tensorflow::TensorShapeUtils::IsScalar(lr.shape()) &&
                         ::tensorflow::TensorShapeUtils::IsScalar(momentum.shape()),
                errors::InvalidArgument("lr and momentum must be scalars: ",
                                        lr.shape().DebugString(), ", ",
                                        momentum.shape().DebugString()));
    OP_REQUIRES(ctx, v->shape() == a->shape() && v->shape() == grad.shape(),
                errors::InvalidArgument("var, accum and grad must have the same shape: ",
                                        v->shape().DebugString(), ", ",
                                        a->shape().DebugString(), ", ",
                                        grad.shape().DebugString()));
    float* vp = v->flat<float>().data();
    float* ap = a->flat<float>().data();
    const float* gp = grad.flat<float>().data();
    const float l = lr.scalar<float>()(), m = momentum.scalar<float>()();
    Parallel(ctx, v->NumElements(), 12, [&](int64_t begin, int64_t end) {
      MomentumSpan(vp + begin, ap + begin, gp + begin, l, m, nesterov_, end - begin);
    });
  }

 private:
  // TensorFlow's PrepareToUpdateVariable: a buffer some read still holds (or any, in
  // copy-on-read mode) is copied before it is written, so that read keeps its values.
  static ::tensorflow::Status Writable(OpKernelContext* ctx, ::tensorflow::Var* var) {
    Tensor* t = var->tensor();
    if (!var->copy_on_read_mode.load() && t->RefCountIsOne()) return ::tensorflow::OkStatus();
    Tensor copy;
    TF_RETURN_IF_ERROR(ctx->allocate_temp(t->dtype(), t->shape(), &copy));
    std::memcpy(copy.flat<float>().data(), t->flat<float>().data(),
                t->NumElements() * sizeof(float));
    *t = copy;
    return ::tensorflow::OkStatus();
  }

  bool nesterov_ = false;
};

}  // namespace
}  // namespace resnet_kernels

REGISTER_KERNEL_BUILDER(Name("ResourceApplyKerasMomentum")
                            .Device(::tensorflow::DEVICE_CPU)
                            .HostMemory("var")
                            .HostMemory("accum")
                            .TypeConstraint<float>("T")
                            .Priority(resnet_kernels::kPriority),
                        resnet_kernels::KerasMomentumOp);
