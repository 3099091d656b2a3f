// CUDA registration of fastt2i::gradient_penalty_fwd / gradient_penalty_bwd: grouping of the
// gradients (up to kGradientPenaltyMaxTensors per launch), allocation, launch.  The kernels are in
// gradient_penalty.cu; the math and autograd in fastt2i/ops/gradient_penalty.py.
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "../common.h"
#include "../gradient_penalty_host.h"
#include "cuda_glue.h"

namespace fastt2i {
namespace {

std::vector<at::Tensor> checked_inputs(at::TensorList grads_in) {
  return gp_checked_inputs(grads_in, /*device_first=*/true, [&](const at::Tensor& g, size_t i) {
    TORCH_CHECK(cuda::on_device(g) && g.device() == grads_in[0].device(), "grads[", i,
                "]: expected a CUDA tensor on ", grads_in[0].device(), ", got ", g.device());
  });
}

// Groups of at most kGradientPenaltyMaxTensors gradients; columns of the partial sums follow on.
std::vector<cuda::GradientPenaltyGroup> make_groups(const std::vector<at::Tensor>& grads,
                                                    std::vector<at::Tensor>* outs, int64_t* total_chunks) {
  const int64_t B = grads[0].size(0);
  std::vector<cuda::GradientPenaltyGroup> groups;
  int64_t column = 0;
  for (size_t start = 0; start < grads.size(); start += cuda::kGradientPenaltyMaxTensors) {
    cuda::GradientPenaltyGroup g{};
    g.column_offset = column;
    g.count = static_cast<int>(std::min<size_t>(cuda::kGradientPenaltyMaxTensors, grads.size() - start));
    g.chunk_begin[0] = 0;
    for (int t = 0; t < g.count; ++t) {
      const auto& x = grads[start + t];
      g.grads[t] = x.const_data_ptr();
      g.outs[t] = outs != nullptr ? (*outs)[start + t].mutable_data_ptr() : nullptr;
      g.dtypes[t] = cuda::dtype_of(x);
      g.per_sample[t] = x.numel() / B;
      g.chunk_begin[t + 1] = g.chunk_begin[t] + cuda::gradient_penalty_chunks(g.per_sample[t]);
    }
    column += g.chunk_begin[g.count];
    groups.push_back(g);
  }
  *total_chunks = column;
  return groups;
}

std::tuple<at::Tensor, at::Tensor> gradient_penalty_fwd_cuda(at::TensorList grads_in, double k, double p,
                                                            double scale) {
  TORCH_CHECK(p > 0, "p: expected > 0, got ", p);
  const auto grads = checked_inputs(grads_in);
  const cuda::DeviceGuard guard(grads[0].device());
  const int64_t B = grads[0].size(0);
  const auto acc = gp_acc_type(grads);
  const bool acc_double = acc == at::kDouble;
  auto opts = grads[0].options().dtype(acc);
  int64_t P = 0;
  const auto groups = make_groups(grads, nullptr, &P);
  auto partial = at::empty({B, std::max<int64_t>(P, 1)}, opts);  // every column is written once
  auto sumsq = at::empty({B}, opts);
  auto loss = at::empty({}, opts);
  const auto stream = cuda::current_stream();
  for (const auto& g : groups)
    cuda::check_launch(cuda::gradient_penalty_partial(g, B, partial.mutable_data_ptr(), P, acc_double, stream),
                       "gradient_penalty_fwd");
  cuda::check_launch(cuda::gradient_penalty_finalize(partial.const_data_ptr(), B, P, k, p, scale,
                                                     sumsq.mutable_data_ptr(), loss.mutable_data_ptr(), acc_double,
                                                     stream),
                     "gradient_penalty_fwd");
  return {loss, sumsq};
}

std::vector<at::Tensor> gradient_penalty_bwd_cuda(const at::Tensor& grad_loss_in, at::TensorList grads_in,
                                                  const at::Tensor& sumsq_in, double k, double p, double scale) {
  const auto grads = checked_inputs(grads_in);
  const cuda::DeviceGuard guard(grads[0].device());
  const int64_t B = grads[0].size(0);
  const auto acc = gp_acc_type(grads);
  cuda::check_devices("gradient_penalty", {{"grads[0]", &grads[0]}, {"sumsq", &sumsq_in}, {"grad_loss", &grad_loss_in}});
  TORCH_CHECK(sumsq_in.dim() == 1 && sumsq_in.size(0) == B && sumsq_in.scalar_type() == acc,
              "sumsq: expected (", B, ",) of ", acc, " on the device, got ", sumsq_in.sizes(), " ",
              sumsq_in.scalar_type());
  TORCH_CHECK(grad_loss_in.numel() == 1,
              "grad_loss: expected one element on the device, got ", grad_loss_in.sizes());
  const auto sumsq = sumsq_in.contiguous();
  const auto grad_loss = grad_loss_in.to(acc).contiguous();
  std::vector<at::Tensor> outs;
  outs.reserve(grads.size());
  for (const auto& g : grads) outs.push_back(at::empty_like(g));
  int64_t P = 0;
  const auto groups = make_groups(grads, &outs, &P);
  const auto stream = cuda::current_stream();
  for (const auto& g : groups)
    cuda::check_launch(cuda::gradient_penalty_backward(g, B, sumsq.const_data_ptr(), grad_loss.const_data_ptr(), k,
                                                       p, scale, acc == at::kDouble, stream),
                       "gradient_penalty_bwd");
  return outs;
}

}  // namespace

FASTT2I_CUDA_KERNELS(m) {
  m.impl("gradient_penalty_fwd", &gradient_penalty_fwd_cuda);
  m.impl("gradient_penalty_bwd", &gradient_penalty_bwd_cuda);
}

}  // namespace fastt2i
