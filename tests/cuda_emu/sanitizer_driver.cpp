// Every CUDA launcher of csrc/cuda/kernels.h on random inputs at small shapes, under the CPU emulator,
// for the sanitizer builds (emu_build.py sanitize asan|tsan): AddressSanitizer + UBSan find
// out-of-bounds global and shared memory (every buffer is its own exact-size allocation), ThreadSanitizer
// finds races between a block's threads with no barrier between them.  Prints a checksum per output;
// the sanitised build must print what the plain build prints.  Correctness against the references is
// tested in test_emulated_ops.py (through torch), not here.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "kernels.h"

using namespace fastt2i::cuda;

namespace {

uint64_t rng_state = 0x9e3779b97f4a7c15ull;
double uniform() {  // in [-1, 1)
  rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
  return static_cast<double>(rng_state >> 11) / 4503599627370496.0 - 1.0;
}

// A device buffer: one exact-size heap allocation of n elements of the dtype.
struct Buffer {
  DType dtype;
  size_t n;
  std::vector<unsigned char>* bytes;
  Buffer(DType t, size_t count) : dtype(t), n(count), bytes(new std::vector<unsigned char>(count * size())) {}
  size_t size() const { return dtype == DType::Float64 ? 8 : dtype == DType::Float32 ? 4 : 2; }
  void* data() { return bytes->empty() ? nullptr : bytes->data(); }
  double get(size_t i) const {
    const unsigned char* p = bytes->data() + i * size();
    switch (dtype) {
      case DType::Float32: { float v; std::memcpy(&v, p, 4); return v; }
      case DType::Float64: { double v; std::memcpy(&v, p, 8); return v; }
      case DType::Float16: { __half v; std::memcpy(&v, p, 2); return __half2float(v); }
      case DType::BFloat16: { __nv_bfloat16 v; std::memcpy(&v, p, 2); return __bfloat162float(v); }
    }
    return 0;
  }
  void set(size_t i, double x) {
    unsigned char* p = bytes->data() + i * size();
    switch (dtype) {
      case DType::Float32: { float v = static_cast<float>(x); std::memcpy(p, &v, 4); break; }
      case DType::Float64: std::memcpy(p, &x, 8); break;
      case DType::Float16: { __half v = __float2half_rn(static_cast<float>(x)); std::memcpy(p, &v, 2); break; }
      case DType::BFloat16: { __nv_bfloat16 v = __float2bfloat16_rn(static_cast<float>(x)); std::memcpy(p, &v, 2); break; }
    }
  }
};

std::vector<Buffer*> all_buffers;
Buffer& random(DType t, size_t n, double scale = 1.0) {
  auto* b = new Buffer(t, n);
  for (size_t i = 0; i < n; ++i) b->set(i, scale * uniform());
  all_buffers.push_back(b);
  return *b;
}
Buffer& empty(DType t, size_t n) {
  auto* b = new Buffer(t, n);
  std::memset(b->data(), 0, b->bytes->size());
  all_buffers.push_back(b);
  return *b;
}

int failures = 0;
void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::printf("%s: launch failed: %s\n", what, cudaGetErrorString(e));
    ++failures;
  }
}
void print(const char* what, const Buffer& b) {
  double sum = 0, weighted = 0;
  int64_t not_finite = 0;
  for (size_t i = 0; i < b.n; ++i) {
    const double v = b.get(i);
    if (!std::isfinite(v)) {
      ++not_finite;
      continue;
    }
    sum += std::fabs(v);
    weighted += v * static_cast<double>(i % 97 + 1);
  }
  std::printf("%-52s %.9e %.9e %lld\n", what, sum, weighted, static_cast<long long>(not_finite));
}

DType acc_of(DType t) { return t == DType::Float64 ? DType::Float64 : DType::Float32; }
const char* name_of(DType t) {
  return t == DType::Float32 ? "f32" : t == DType::Float64 ? "f64" : t == DType::Float16 ? "f16" : "bf16";
}

void df_affine(DType t, bool channels_last) {
  const int64_t K = 2, B = 2, C = 37, S = 35, n = B * C * S, splits = 2;
  auto &x = random(t, n), &g = random(acc_of(t), K * B * C), &b = random(acc_of(t), K * B * C);
  auto &y = empty(t, n), &dy = random(t, n), &dx = empty(t, n);
  auto &pg = empty(acc_of(t), splits * K * B * C), &pb = empty(acc_of(t), splits * K * B * C);
  check(df_affine_forward(t, x.data(), y.data(), g.data(), b.data(), K, B, C, S, channels_last, 0.2, nullptr),
        "df_affine_forward");
  check(df_affine_backward(t, dy.data(), x.data(), g.data(), b.data(), dx.data(), pg.data(), pb.data(), splits, K, B,
                           C, S, channels_last, 0.2, nullptr),
        "df_affine_backward");
  const std::string tag = std::string(name_of(t)) + (channels_last ? " nhwc" : " nchw");
  print(("df_affine y " + tag).c_str(), y);
  print(("df_affine dx " + tag).c_str(), dx);
  print(("df_affine dgamma partial " + tag).c_str(), pg);
  print(("df_affine dbeta partial " + tag).c_str(), pb);
}

void bias_leaky_relu(DType t, bool channels_last) {
  const int64_t C = 5, S = 21, n = 3 * C * S;
  auto &x = random(t, n), &bias = random(acc_of(t), C), &y = empty(t, n), &g = random(t, n), &out = empty(t, n);
  check(bias_leaky_relu_forward(t, x.data(), bias.data(), y.data(), n, C, S, channels_last, 0.2, nullptr),
        "bias_leaky_relu_forward");
  check(bias_leaky_relu_backward(t, g.data(), y.data(), out.data(), n, 0.2, nullptr), "bias_leaky_relu_backward");
  const std::string tag = std::string(name_of(t)) + (channels_last ? " nhwc" : " nchw");
  print(("bias_leaky_relu y " + tag).c_str(), y);
  print(("bias_leaky_relu dx " + tag).c_str(), out);
}

void gate_split(DType t, int layout, bool both_grads) {
  const int64_t B = 2, C = 37, S = 45, n = B * C * S;  // C: a warp and a tail (NHWC backward)
  auto &l = random(t, layout == 0 ? n : B * S, 4.0), &x = random(t, n), &key = empty(t, n), &nonkey = empty(t, n);
  auto &dk = random(t, n), &dn = random(t, n), &dl = empty(t, layout == 0 ? n : B * S), &dx = empty(t, n);
  check(gate_split_forward(t, l.data(), x.data(), key.data(), nonkey.data(), B, C, S, layout, nullptr),
        "gate_split_forward");
  check(gate_split_backward(t, both_grads ? dk.data() : nullptr, dn.data(), l.data(), x.data(), dl.data(), dx.data(),
                            B, C, S, layout, nullptr),
        "gate_split_backward");
  const std::string tag = std::string(name_of(t)) + " layout " + std::to_string(layout) + (both_grads ? "" : " dn only");
  print(("gate_split key " + tag).c_str(), key);
  print(("gate_split nonkey " + tag).c_str(), nonkey);
  print(("gate_split dlogits " + tag).c_str(), dl);
  print(("gate_split dx " + tag).c_str(), dx);
}

void gradient_penalty(DType t) {
  const int64_t B = 2;
  const int64_t per_sample[2] = {5000, 33};  // two chunks of 4096 per sample, then a tail
  GradientPenaltyGroup group{};
  group.count = 2;
  group.column_offset = 0;
  std::vector<Buffer*> grads, outs;
  for (int i = 0; i < 2; ++i) {
    grads.push_back(&random(i == 0 ? t : DType::Float32, B * per_sample[i], 0.1));
    outs.push_back(&empty(i == 0 ? t : DType::Float32, B * per_sample[i]));
    group.grads[i] = grads[i]->data();
    group.outs[i] = outs[i]->data();
    group.dtypes[i] = grads[i]->dtype;
    group.per_sample[i] = per_sample[i];
    group.chunk_begin[i + 1] = group.chunk_begin[i] + gradient_penalty_chunks(per_sample[i]);
  }
  const int64_t P = group.chunk_begin[2];
  const bool dbl = t == DType::Float64;
  const DType acc = dbl ? DType::Float64 : DType::Float32;
  auto &partial = empty(acc, B * P), &sumsq = empty(acc, B), &loss = empty(acc, 1), &grad_loss = random(acc, 1);
  check(gradient_penalty_partial(group, B, partial.data(), P, dbl, nullptr), "gradient_penalty_partial");
  check(gradient_penalty_finalize(partial.data(), B, P, 2.0, 6.0, 0.5, sumsq.data(), loss.data(), dbl, nullptr),
        "gradient_penalty_finalize");
  check(gradient_penalty_backward(group, B, sumsq.data(), grad_loss.data(), 2.0, 6.0, 0.5, dbl, nullptr),
        "gradient_penalty_backward");
  const std::string tag = name_of(t);
  print(("gradient_penalty sumsq " + tag).c_str(), sumsq);
  print(("gradient_penalty loss " + tag).c_str(), loss);
  print(("gradient_penalty grad 0 " + tag).c_str(), *outs[0]);
  print(("gradient_penalty grad 1 " + tag).c_str(), *outs[1]);
}

void damsm(DType acc) {
  const int64_t images = 2, B = 3, N = 37, D = 35;
  const std::vector<int64_t> lengths_host = {3, 1, 34};  // 34 words: more than a warp of lanes
  std::vector<int64_t> offsets_host;
  int64_t P = 0, max_len = 0;
  for (int64_t L : lengths_host) offsets_host.push_back(P), P += L, max_len = std::max(max_len, L);
  // int64 device arrays, exact size
  auto* lengths = new std::vector<int64_t>(lengths_host);
  auto* offsets = new std::vector<int64_t>(offsets_host);
  const int64_t pairs = images * B;
  auto &s = random(acc, images * N * P, 3.0), &beta = empty(acc, images * N * P);
  check(damsm_attention_softmax(acc, s.data(), beta.data(), lengths->data(), offsets->data(), pairs, B, N, P, 4.0,
                                nullptr),
        "damsm_attention_softmax");
  auto &c = random(acc, images * P * D), &erows = random(acc, P * D), &scores = empty(acc, images * B);
  check(damsm_cosine_scores(acc, c.data(), erows.data(), lengths->data(), offsets->data(), nullptr, scores.data(),
                            nullptr, nullptr, nullptr, nullptr, pairs, B, P, D, max_len, 5.0, nullptr),
        "damsm_cosine_scores");
  auto &grad = random(acc, images * B), &g = empty(acc, images * P * D);
  auto &coef_c = empty(acc, images * P), &coef_e = empty(acc, images * P), &g_dot_c = empty(acc, images * P);
  check(damsm_cosine_scores(acc, c.data(), erows.data(), lengths->data(), offsets->data(), grad.data(), nullptr,
                            g.data(), coef_c.data(), coef_e.data(), g_dot_c.data(), pairs, B, P, D, max_len, 5.0,
                            nullptr),
        "damsm_cosine_scores backward");
  auto& h = random(acc, images * N * P);
  check(damsm_softmax_backward(acc, s.data(), beta.data(), h.data(), g.data(), erows.data(), lengths->data(),
                               offsets->data(), coef_c.data(), g_dot_c.data(), pairs, B, N, P, D, max_len, 4.0,
                               nullptr),
        "damsm_softmax_backward");
  const std::string tag = name_of(acc);
  print(("damsm alpha " + tag).c_str(), s);
  print(("damsm beta " + tag).c_str(), beta);
  print(("damsm scores " + tag).c_str(), scores);
  print(("damsm dL/dC " + tag).c_str(), g);
  print(("damsm coef_c " + tag).c_str(), coef_c);
  print(("damsm coef_e " + tag).c_str(), coef_e);
  print(("damsm g_dot_c " + tag).c_str(), g_dot_c);
  print(("damsm dL/dS " + tag).c_str(), h);
  delete lengths;
  delete offsets;
}

void word_region_attention(DType t, bool channels_last, int64_t T, bool per_region_mask) {
  const int64_t B = 2, C = 19, N = 130;
  WraLayout L{B, C, N, T, C * N, channels_last ? 1 : N, channels_last ? C : 1};
  auto &regions = random(t, B * C * N), &words = random(acc_of(t), B * C * T);
  const int64_t mask_rows = per_region_mask ? N : 1;
  auto* mask = new std::vector<unsigned char>(B * mask_rows * T);
  for (size_t i = 0; i < mask->size(); ++i) (*mask)[i] = uniform() < -0.4;  // 30% padding
  for (int64_t t = 0; t < T; ++t) (*mask)[(B - 1) * mask_rows * T + t] = 1;  // an all-padding caption / rows
  WraMask M{mask->data(), mask_rows * T, per_region_mask ? T : 0};
  auto &context = empty(t, B * C * N), &lse = empty(acc_of(t), B * N), &attention = empty(t, B * T * N);
  // attention (B, T, N) laid out like regions
  const int64_t a_sb = T * N, a_st = channels_last ? 1 : N, a_sn = channels_last ? T : 1;
  check(word_region_attention_forward(t, regions.data(), words.data(), M, context.data(), lse.data(),
                                      attention.data(), a_sb, a_st, a_sn, L, nullptr),
        "word_region_attention_forward");
  const int sms = 2;
  const int64_t splits = word_region_attention_backward_splits(t, B, N, sms);
  auto &grad_context = random(t, B * C * N), &grad_attention = random(t, B * T * N);
  auto &grad_regions = empty(t, B * C * N), &partial = empty(acc_of(t), B * splits * C * T);
  check(word_region_attention_backward(t, grad_context.data(), grad_attention.data(), a_sb, a_st, a_sn,
                                       regions.data(), words.data(), M, lse.data(), grad_regions.data(),
                                       partial.data(), sms, L, nullptr),
        "word_region_attention_backward");
  const std::string tag = std::string(name_of(t)) + (channels_last ? " nhwc" : " nchw") + " T=" + std::to_string(T);
  print(("word_region_attention context " + tag).c_str(), context);
  print(("word_region_attention lse " + tag).c_str(), lse);
  print(("word_region_attention attention " + tag).c_str(), attention);
  print(("word_region_attention dregions " + tag).c_str(), grad_regions);
  print(("word_region_attention dwords partial " + tag).c_str(), partial);
  delete mask;
}

}  // namespace

int main() {
  df_affine(DType::Float32, false);
  df_affine(DType::BFloat16, true);
  df_affine(DType::Float64, true);
  bias_leaky_relu(DType::Float16, false);
  bias_leaky_relu(DType::Float32, true);
  gate_split(DType::Float32, 0, true);
  gate_split(DType::BFloat16, 1, false);
  gate_split(DType::Float16, 2, true);
  gate_split(DType::Float64, 2, false);
  gradient_penalty(DType::Float32);
  gradient_penalty(DType::Float64);
  damsm(DType::Float32);
  damsm(DType::Float64);
  word_region_attention(DType::Float32, false, 7, false);
  word_region_attention(DType::Float16, true, 33, true);
  word_region_attention(DType::Float64, false, 20, false);
  for (Buffer* b : all_buffers) {
    delete b->bytes;
    delete b;
  }
  return failures == 0 ? 0 : 1;
}
