// CUDA registration of fastt2i::gate_split_fwd / gate_split_bwd: layout, allocation, launch.
// The kernels are in gate_split.cu; the math and autograd in fastt2i/ops/gate_split.py.
#include <c10/util/Optional.h>
#include <torch/library.h>

#include "../common.h"
#include "../gate_split_host.h"
#include "cuda_glue.h"

namespace fastt2i {
namespace {

std::tuple<at::Tensor, at::Tensor> gate_split_fwd_cuda(const at::Tensor& logits_in, const at::Tensor& x_in) {
  cuda::check_devices("gate_split", {{"x", &x_in}, {"gate_logits", &logits_in}});
  const cuda::DeviceGuard guard(x_in.device());
  const auto in = gate_split_setup(logits_in, x_in);
  auto key = at::empty_like(in.x), nonkey = at::empty_like(in.x);
  cuda::check_launch(cuda::gate_split_forward(cuda::dtype_of(in.x), in.logits.const_data_ptr(), in.x.const_data_ptr(),
                                              key.mutable_data_ptr(), nonkey.mutable_data_ptr(), in.B, in.C, in.S,
                                              static_cast<int>(in.layout), cuda::current_stream()),
                     "gate_split_fwd");
  return {key, nonkey};
}

std::tuple<at::Tensor, at::Tensor> gate_split_bwd_cuda(const c10::optional<at::Tensor>& grad_key,
                                                       const c10::optional<at::Tensor>& grad_nonkey,
                                                       const at::Tensor& logits_in, const at::Tensor& x_in) {
  auto given = [](const c10::optional<at::Tensor>& t) { return t.has_value() && t->defined() ? &*t : nullptr; };
  cuda::check_devices("gate_split", {{"x", &x_in},
                                     {"gate_logits", &logits_in},
                                     {"grad_key", given(grad_key)},
                                     {"grad_nonkey", given(grad_nonkey)}});
  const cuda::DeviceGuard guard(x_in.device());
  const auto in = gate_split_setup(logits_in, x_in);
  const auto dk = gate_split_grad(grad_key, in.x, "grad_key");
  const auto dn = gate_split_grad(grad_nonkey, in.x, "grad_nonkey");
  auto dl = at::empty_like(in.logits), dx = at::empty_like(in.x);
  if (in.x.numel() == 0) return {dl.zero_(), dx};  // no channels: the channel sums are zero
  cuda::check_launch(cuda::gate_split_backward(cuda::dtype_of(in.x), dk.defined() ? dk.const_data_ptr() : nullptr,
                                               dn.defined() ? dn.const_data_ptr() : nullptr,
                                               in.logits.const_data_ptr(), in.x.const_data_ptr(),
                                               dl.mutable_data_ptr(), dx.mutable_data_ptr(), in.B, in.C, in.S,
                                               static_cast<int>(in.layout), cuda::current_stream()),
                     "gate_split_bwd");
  return {dl, dx};
}

}  // namespace

FASTT2I_CUDA_KERNELS(m) {
  m.impl("gate_split_fwd", &gate_split_fwd_cuda);
  m.impl("gate_split_bwd", &gate_split_bwd_cuda);
}

}  // namespace fastt2i
