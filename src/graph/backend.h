/* backend.h - the seam between what an op means and where it runs.
 *
 * An op's name, shape inference, flags and gradient structure live once in src/ops/ (its
 * damo_op_def). How its forward and backward are computed, and where the memory is, is a
 * backend's business: a struct of function pointers with a device kind, a kernel table
 * indexed by damo_op, memory entry points, and the flat-block kernels the optimizer and the
 * trainer use. The graph executor calls g->backend->kernels[op].forward/backward; the CPU
 * backend's table is filled from the op definitions' cpu_forward/cpu_backward the first time
 * it is asked for. A backend for another device is new files that fill their own struct and
 * call damo_backend_register; nothing in src/ops changes. ARCHITECTURE.md, "Backends". */
#ifndef DAMO_BACKEND_H
#define DAMO_BACKEND_H

#include "graph/graph.h"
#include "kernels/kernels.h"

/* Most backends a process registers (the CPU's included). */
#define DAMO_MAX_BACKENDS 8

struct damo_backend {
  const char *name; /* unique: "cpu", "cuda", ... */
  damo_device device;
  void *ctx; /* the backend's own state (a stream, a library handle); the CPU has none */

  /* Memory on the device. alloc: uninitialised, 64-byte aligned, NULL and a damo_error on
   * failure; free takes NULL. Copies and fill may be asynchronous on the device's queue,
   * except to_host, which returns when dst_host holds the bytes. */
  void *(*alloc)(const damo_backend *b, size_t bytes);
  void (*free)(const damo_backend *b, void *p);
  damo_status (*to_host)(const damo_backend *b, void *dst_host, const void *src, size_t bytes);
  damo_status (*from_host)(const damo_backend *b, void *dst, const void *src_host, size_t bytes);
  void (*fill)(const damo_backend *b, float *dst, float value, int64_t n);

  /* Op kernels, indexed by damo_op (input, param and constant have none). A graph compiles
   * on a backend only if every op it runs has a forward, and a backward where gradients
   * flow through it. */
  damo_kernel kernels[DAMO_OP_COUNT];

  /* Flat blocks: the optimizer's fused update and gradient norm (scratch: one host double
   * per DAMO_OPT_BLOCK elements, for backends that sum per block), and y = alpha x + beta y
   * for averaging micro-batch gradients (beta 0 never reads y). */
  void (*opt_update)(const damo_backend *b, const damo_opt_update *u);
  double (*sum_squares)(const damo_backend *b, const float *x, int64_t n, double *scratch);
  void (*axpby)(const damo_backend *b, int64_t n, float alpha, const float *x, float beta, float *y);
};

/* The backend's device is CPU: host pointers may be read directly. */
static inline int damo_backend_is_host(const damo_backend *b) { return b->device == DAMO_DEVICE_CPU; }

/* Checks that a tensor bound to something running on b lives on b's device; what names the
 * binding in the message ("param 'dense/kernel' value"). */
damo_status damo_backend_check_tensor(const damo_backend *b, const damo_tensor *t, const char *what);

#endif
