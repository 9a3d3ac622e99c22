/* test_optim.c - the optimizers and learning-rate schedules.
 *
 * Against PyTorch 1.13 (tests/fixtures/optim.safetensors, written by tests/ref/gen_optim.py):
 * SGD (plain, momentum, Nesterov + weight decay), Adam (plain, L2), AdamW, Adam with global
 * norm clipping, and SGD under StepLR and CosineAnnealingLR, compared after every one of 5
 * steps. Then by construction: schedule values, clipping, non-finite gradients, checkpoint
 * state round trips, config validation and the threaded path for large arrays. */
#include "damo.h"
#include "harness.h"

#include <omp.h>
#include <stdint.h>
#include <stdlib.h>

#ifndef DAMO_SOURCE_DIR
#define DAMO_SOURCE_DIR "."
#endif
#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif
#define FIXTURE DAMO_SOURCE_DIR "/tests/fixtures/optim.safetensors"

#define ATOL 1e-6
#define RTOL 1e-5

static damo_tensor_dict *fx; /* the fixture, loaded once */

static damo_tensor *fixture(const char *name) { return fx ? damo_tensor_dict_get(fx, name) : NULL; }

/* ------------------------------------------------------------------ PyTorch cases */

typedef struct optim_case {
  const char *name;       /* fixture prefix */
  const char *grads;      /* fixture gradient tensor */
  damo_optimizer_config cfg;
  int64_t total_steps;    /* passed to every step */
} optim_case;

static damo_optimizer_config with_wd(damo_optimizer_config c, float wd) {
  c.weight_decay = wd;
  return c;
}

static damo_optimizer_config with_clip(damo_optimizer_config c, float clip) {
  c.clip_norm = clip;
  return c;
}

static damo_optimizer_config with_step_schedule(damo_optimizer_config c, int64_t step_size, float gamma) {
  c.schedule.kind = DAMO_SCHED_STEP;
  c.schedule.step_size = step_size;
  c.schedule.gamma = gamma;
  return c;
}

static damo_optimizer_config with_cosine(damo_optimizer_config c, int64_t total, float min_lr) {
  c.schedule.kind = DAMO_SCHED_COSINE;
  c.schedule.total_steps = total;
  c.schedule.min_lr = min_lr;
  return c;
}

static void run_case(const optim_case *c) {
  damo_tensor *init = fixture("init"), *grads = fixture(c->grads);
  char key[128];
  snprintf(key, sizeof key, "%s.params", c->name);
  damo_tensor *ref = fixture(key);
  snprintf(key, sizeof key, "%s.lr", c->name);
  damo_tensor *ref_lr = fixture(key);
  snprintf(key, sizeof key, "%s.norm", c->name);
  damo_tensor *ref_norm = fixture(key);
  CHECK_MSG(init && grads && ref, "%s: fixture tensors missing", c->name);
  if (!init || !grads || !ref) return;
  const int64_t n = damo_tensor_numel(init), steps = ref->shape[0];
  CHECK(ref->ndim == 2 && ref->shape[1] == n && grads->shape[0] >= steps && grads->shape[1] == n);

  damo_optimizer *o = damo_optimizer_new(&c->cfg, n);
  CHECK_MSG(o != NULL, "%s: %s", c->name, damo_last_error());
  if (!o) return;
  float *p = malloc((size_t)n * sizeof *p), *g = malloc((size_t)n * sizeof *g);
  memcpy(p, init->data, (size_t)n * sizeof *p);
  for (int64_t s = 0; s < steps; s++) {
    if (ref_lr) {
      float lr = damo_schedule_lr(&c->cfg.schedule, c->cfg.lr, s, c->total_steps), want = damo_tensor_f32(ref_lr)[s];
      /* a few ulp: torch's CosineAnnealingLR uses a recursive form of the same formula */
      CHECK_MSG(fabsf(lr - want) <= 4e-7f * want, "%s step %lld: lr %.9g, torch %.9g", c->name, (long long)s, lr, want);
    }
    memcpy(g, damo_tensor_f32(grads) + s * n, (size_t)n * sizeof *g);
    float norm = -1;
    damo_status st = damo_optimizer_step(o, p, g, c->total_steps, &norm);
    CHECK_MSG(st == DAMO_OK, "%s step %lld: %s", c->name, (long long)s, damo_last_error());
    if (ref_norm) {
      float want = damo_tensor_f32(ref_norm)[s];
      CHECK_MSG(fabsf(norm - want) <= 1e-5f * want, "%s step %lld: norm %.9g, torch %.9g", c->name, (long long)s, norm, want);
    }
    double r = test_close_ratio(p, damo_tensor_f32(ref) + s * n, (long)n, ATOL, RTOL);
    CHECK_MSG(r <= 1.0, "%s step %lld: worst error is %.3g x tolerance", c->name, (long long)s, r);
  }
  CHECK(damo_optimizer_steps(o) == steps);
  free(p);
  free(g);
  damo_optimizer_free(o);
}

static void test_against_torch(void) {
  CHECK_MSG(fx != NULL, "cannot load %s", FIXTURE);
  if (!fx) return;
  const optim_case cases[] = {
      {"sgd", "grads", damo_sgd(0.1f, 0.0f, 0), 5},
      {"sgd_momentum", "grads", damo_sgd(0.1f, 0.9f, 0), 5},
      {"sgd_nesterov_wd", "grads", with_wd(damo_sgd(0.1f, 0.9f, 1), 0.01f), 5},
      {"adam", "grads", damo_adam(1e-2f), 5},
      {"adam_wd", "grads", with_wd(damo_adam(1e-2f), 0.1f), 5},
      {"adamw", "grads", damo_adamw(1e-2f, 0.1f), 5},
      {"adam_clip", "grads_clip", with_clip(damo_adam(1e-2f), 0.5f), 5},
      {"sgd_steplr", "grads", with_step_schedule(damo_sgd(0.1f, 0.0f, 0), 2, 0.5f), 5},
      /* the cosine horizon from the schedule field, then from the step argument */
      {"sgd_cosine", "grads", with_cosine(damo_sgd(0.1f, 0.0f, 0), 5, 0.001f), 0},
      {"sgd_cosine", "grads", with_cosine(damo_sgd(0.1f, 0.0f, 0), 0, 0.001f), 5},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_case(&cases[i]);
}

/* ------------------------------------------------------------------ schedules */

static void test_schedule_constant_warmup(void) {
  damo_schedule s = {0};
  s.kind = DAMO_SCHED_CONSTANT;
  CHECK(damo_schedule_lr(&s, 0.5f, 0, 100) == 0.5f);
  CHECK(damo_schedule_lr(&s, 0.5f, 1000, 100) == 0.5f);
  CHECK(damo_schedule_lr(NULL, 0.5f, 7, 100) == 0.5f);
  s.warmup_steps = 4;
  const float want[] = {0.25f, 0.5f, 0.75f, 1.0f, 1.0f, 1.0f};
  for (int i = 0; i < 6; i++) CHECK_NEAR(damo_schedule_lr(&s, 1.0f, i, 100), want[i], 1e-7);
  CHECK_NEAR(damo_schedule_lr(&s, 1.0f, -3, 100), 0.25, 1e-7); /* negative steps count as 0 */
}

static void test_schedule_step(void) {
  damo_schedule s = {0};
  s.kind = DAMO_SCHED_STEP;
  s.step_size = 3;
  s.gamma = 0.5f;
  const float want[] = {1, 1, 1, 0.5f, 0.5f, 0.5f, 0.25f, 0.25f, 0.25f, 0.125f};
  for (int i = 0; i < 10; i++) CHECK_NEAR(damo_schedule_lr(&s, 1.0f, i, 0), want[i], 1e-7);
  /* warm-up first, then decay by the absolute step */
  s.warmup_steps = 2;
  const float want_w[] = {0.5f, 1, 1, 0.5f, 0.5f, 0.5f, 0.25f};
  for (int i = 0; i < 7; i++) CHECK_NEAR(damo_schedule_lr(&s, 1.0f, i, 0), want_w[i], 1e-7);
  /* gamma 0 means PyTorch's default 0.1 */
  s.warmup_steps = 0;
  s.gamma = 0.0f;
  CHECK_NEAR(damo_schedule_lr(&s, 1.0f, 3, 0), 0.1, 1e-7);
  CHECK_NEAR(damo_schedule_lr(&s, 1.0f, 6, 0), 0.01, 1e-8);
}

static void test_schedule_cosine(void) {
  damo_schedule s = {0};
  s.kind = DAMO_SCHED_COSINE;
  s.min_lr = 0.1f;
  /* no warm-up: endpoints and midpoint, horizon from the argument */
  CHECK_NEAR(damo_schedule_lr(&s, 1.0f, 0, 100), 1.0, 1e-7);
  CHECK_NEAR(damo_schedule_lr(&s, 1.0f, 50, 100), 0.55, 1e-7);
  CHECK_NEAR(damo_schedule_lr(&s, 1.0f, 25, 100), 0.1 + 0.9 * 0.5 * (1 + cos(M_PI / 4)), 1e-6);
  CHECK_NEAR(damo_schedule_lr(&s, 1.0f, 100, 100), 0.1, 1e-7);
  CHECK_NEAR(damo_schedule_lr(&s, 1.0f, 1000, 100), 0.1, 1e-7); /* clamped past the end */
  /* the field overrides the argument */
  s.total_steps = 10;
  CHECK_NEAR(damo_schedule_lr(&s, 1.0f, 5, 100), 0.55, 1e-7);
  /* no horizon at all: hold the base rate */
  s.total_steps = 0;
  CHECK_NEAR(damo_schedule_lr(&s, 1.0f, 5, 0), 1.0, 1e-7);
  /* warm-up 10 then cosine over the remaining 100 steps */
  s.warmup_steps = 10;
  s.total_steps = 110;
  CHECK_NEAR(damo_schedule_lr(&s, 1.0f, 0, 0), 0.1, 1e-7);
  CHECK_NEAR(damo_schedule_lr(&s, 1.0f, 4, 0), 0.5, 1e-7);
  CHECK_NEAR(damo_schedule_lr(&s, 1.0f, 9, 0), 1.0, 1e-7);
  CHECK_NEAR(damo_schedule_lr(&s, 1.0f, 10, 0), 1.0, 1e-7);
  CHECK_NEAR(damo_schedule_lr(&s, 1.0f, 60, 0), 0.55, 1e-7);
  CHECK_NEAR(damo_schedule_lr(&s, 1.0f, 110, 0), 0.1, 1e-7);
  /* a horizon inside the warm-up: straight to the floor afterwards */
  s.total_steps = 5;
  CHECK_NEAR(damo_schedule_lr(&s, 1.0f, 10, 0), 0.1, 1e-7);
}

/* ------------------------------------------------------------------ clipping */

static void fill_normal(float *x, int64_t n, float scale, uint64_t seed) {
  damo_rng r;
  damo_rng_seed(&r, seed);
  for (int64_t i = 0; i < n; i++) x[i] = scale * damo_rng_normal(&r);
}

static double l2(const float *x, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; i++) s += (double)x[i] * x[i];
  return sqrt(s);
}

static void test_clipping(void) {
  const int64_t n = 1000;
  float *p = malloc(n * sizeof *p), *p0 = malloc(n * sizeof *p0), *g = malloc(n * sizeof *g), *g0 = malloc(n * sizeof *g0);
  fill_normal(p, n, 1.0f, 1);
  fill_normal(g, n, 10.0f, 2);
  memcpy(p0, p, n * sizeof *p);
  memcpy(g0, g, n * sizeof *g);
  const double norm0 = l2(g, n);

  /* SGD with lr 1 moves the params by exactly the clipped gradient */
  damo_optimizer_config c = damo_sgd(1.0f, 0.0f, 0);
  c.clip_norm = 1.5f;
  damo_optimizer *o = damo_optimizer_new(&c, n);
  float norm = 0;
  CHECK(damo_optimizer_step(o, p, g, 1, &norm) == DAMO_OK);
  CHECK_NEAR(norm, norm0, 1e-5 * norm0);             /* the pre-clip norm */
  CHECK_NEAR(l2(g, n), 1.5, 1.5e-5);                 /* grads scaled in place, like torch */
  double moved = 0;
  for (int64_t i = 0; i < n; i++) moved += ((double)p0[i] - p[i]) * ((double)p0[i] - p[i]);
  CHECK_NEAR(sqrt(moved), 1.5, 1.5e-5);
  float coef = (float)(1.5 / (norm0 + 1e-6));
  int same_direction = 1;
  for (int64_t i = 0; i < n; i++) same_direction &= fabsf(g[i] - g0[i] * coef) <= 1e-6f * fabsf(g0[i]) + 1e-9f;
  CHECK(same_direction);
  damo_optimizer_free(o);

  /* under the threshold nothing is scaled */
  memcpy(p, p0, n * sizeof *p);
  memcpy(g, g0, n * sizeof *g);
  c.clip_norm = (float)(norm0 * 2);
  o = damo_optimizer_new(&c, n);
  CHECK(damo_optimizer_step(o, p, g, 1, &norm) == DAMO_OK);
  CHECK(memcmp(g, g0, n * sizeof *g) == 0);
  int exact = 1;
  for (int64_t i = 0; i < n; i++) exact &= p[i] == p0[i] - g0[i];
  CHECK(exact);
  damo_optimizer_free(o);

  /* the norm is reported without clipping too, and NULL is accepted */
  c.clip_norm = 0;
  o = damo_optimizer_new(&c, n);
  memcpy(g, g0, n * sizeof *g);
  CHECK(damo_optimizer_step(o, p, g, 1, &norm) == DAMO_OK);
  CHECK_NEAR(norm, norm0, 1e-5 * norm0);
  CHECK(damo_optimizer_step(o, p, g, 1, NULL) == DAMO_OK);
  damo_optimizer_free(o);
  free(p);
  free(p0);
  free(g);
  free(g0);
}

/* ------------------------------------------------------------------ non-finite gradients */

static void check_nonfinite(damo_optimizer_config c, float bad) {
  const int64_t n = 64;
  float p[64], p0[64], g[64], q[64];
  fill_normal(p, n, 1.0f, 3);
  memcpy(p0, p, sizeof p);
  memcpy(q, p, sizeof q);
  damo_optimizer *o = damo_optimizer_new(&c, n), *fresh = damo_optimizer_new(&c, n);
  fill_normal(g, n, 1.0f, 4);
  g[37] = bad;
  float norm = 0;
  damo_clear_error();
  CHECK(damo_optimizer_step(o, p, g, 10, &norm) == DAMO_ERR_NUMERIC);
  CHECK(!isfinite(norm));
  CHECK_MSG(strstr(damo_last_error(), "gradient 37") != NULL, "message: %s", damo_last_error());
  CHECK(memcmp(p, p0, sizeof p) == 0);
  CHECK(damo_optimizer_steps(o) == 0);
  /* the failed step left no trace: the next one matches a fresh optimizer's first */
  fill_normal(g, n, 1.0f, 4);
  CHECK(damo_optimizer_step(o, p, g, 10, NULL) == DAMO_OK);
  fill_normal(g, n, 1.0f, 4);
  CHECK(damo_optimizer_step(fresh, q, g, 10, NULL) == DAMO_OK);
  CHECK(memcmp(p, q, sizeof p) == 0);
  damo_optimizer_free(o);
  damo_optimizer_free(fresh);
}

static void test_nonfinite_gradient(void) {
  damo_optimizer_config c = damo_adam(1e-3f);
  c.clip_norm = 1.0f;
  check_nonfinite(c, NAN);
  check_nonfinite(c, INFINITY);
  check_nonfinite(damo_adam(1e-3f), -INFINITY); /* checked without clipping too */
  check_nonfinite(damo_sgd(0.1f, 0.9f, 0), NAN);
}

/* ------------------------------------------------------------------ checkpoint state */

static void check_round_trip(damo_optimizer_config c, const char *m_name, const char *v_name) {
  const int64_t n = 300;
  float *p = malloc(n * sizeof *p), *q = malloc(n * sizeof *q), *g = malloc(n * sizeof *g);
  fill_normal(p, n, 1.0f, 5);
  damo_optimizer *a = damo_optimizer_new(&c, n);
  for (int s = 0; s < 3; s++) {
    fill_normal(g, n, 1.0f, 10 + s);
    CHECK(damo_optimizer_step(a, p, g, 10, NULL) == DAMO_OK);
  }
  damo_tensor_dict *d = damo_tensor_dict_new();
  CHECK_MSG(damo_optimizer_state(a, d) == DAMO_OK, "%s", damo_last_error());
  damo_tensor *st = damo_tensor_dict_get(d, "optimizer.step");
  CHECK(st && st->dtype == DAMO_I32 && damo_tensor_numel(st) == 1 && damo_tensor_i32(st)[0] == 3);
  CHECK(d->count == 1 + (m_name != NULL) + (v_name != NULL));
  const char *names[2] = {m_name, v_name};
  for (int i = 0; i < 2; i++) {
    if (!names[i]) continue;
    damo_tensor *t = damo_tensor_dict_get(d, names[i]);
    CHECK_MSG(t && t->dtype == DAMO_F32 && damo_tensor_numel(t) == n, "%s", names[i]);
  }
  /* a second save into the same dict is refused and leaves it as it was */
  CHECK(damo_optimizer_state(a, d) == DAMO_ERR_INVALID_ARG);
  CHECK(d->count == 1 + (m_name != NULL) + (v_name != NULL));
  /* the views hold the same values without copying: the moments' own memory */
  damo_tensor_dict *views = damo_tensor_dict_new();
  CHECK(damo_optimizer_state_views(a, views) == DAMO_OK && views->count == d->count);
  for (int i = 0; i < 2; i++) {
    if (!names[i]) continue;
    const damo_tensor *copy = damo_tensor_dict_get(d, names[i]), *view = damo_tensor_dict_get(views, names[i]);
    CHECK_MSG(copy && view && view->data != copy->data && memcmp(view->data, copy->data, n * sizeof(float)) == 0, "%s",
              names[i]);
    damo_tensor_dict *again = damo_tensor_dict_new();
    CHECK(damo_optimizer_state_views(a, again) == DAMO_OK);
    CHECK(view && damo_tensor_dict_get(again, names[i])->data == view->data);
    damo_tensor_dict_free(again);
  }
  damo_tensor_dict_free(views);

  damo_optimizer *b = damo_optimizer_new(&c, n);
  CHECK_MSG(damo_optimizer_load_state(b, d) == DAMO_OK, "%s", damo_last_error());
  CHECK(damo_optimizer_steps(b) == 3);
  memcpy(q, p, n * sizeof *p);
  fill_normal(g, n, 1.0f, 20);
  CHECK(damo_optimizer_step(a, p, g, 10, NULL) == DAMO_OK);
  fill_normal(g, n, 1.0f, 20);
  CHECK(damo_optimizer_step(b, q, g, 10, NULL) == DAMO_OK);
  CHECK(memcmp(p, q, n * sizeof *p) == 0);

  /* a state for a different parameter count is refused, leaving the optimizer as it was */
  if (m_name) {
    damo_optimizer *small = damo_optimizer_new(&c, n - 1);
    CHECK(damo_optimizer_load_state(small, d) == DAMO_ERR_SHAPE);
    CHECK(damo_optimizer_steps(small) == 0);
    damo_optimizer_free(small);
  }
  damo_tensor_dict_free(d);
  damo_optimizer_free(a);
  damo_optimizer_free(b);
  free(p);
  free(q);
  free(g);
}

static void test_state_round_trip(void) {
  check_round_trip(damo_adam(1e-2f), "optimizer.m", "optimizer.v");
  check_round_trip(damo_adamw(1e-2f, 0.1f), "optimizer.m", "optimizer.v");
  check_round_trip(damo_sgd(0.1f, 0.9f, 1), "optimizer.momentum", NULL);
  check_round_trip(damo_sgd(0.1f, 0.0f, 0), NULL, NULL);
}

static void test_state_errors(void) {
  damo_optimizer_config sgd = damo_sgd(0.1f, 0.9f, 0), adam = damo_adam(1e-3f);
  damo_optimizer *s = damo_optimizer_new(&sgd, 8), *a = damo_optimizer_new(&adam, 8);
  damo_tensor_dict *d = damo_tensor_dict_new();
  CHECK(damo_optimizer_load_state(a, d) == DAMO_ERR_NOT_FOUND); /* empty */
  CHECK(damo_optimizer_state(s, d) == DAMO_OK);
  CHECK(damo_optimizer_load_state(a, d) == DAMO_ERR_NOT_FOUND); /* SGD state into Adam */
  damo_tensor_dict_free(d);

  /* negative second moments and wrong dtypes are corrupt files */
  d = damo_tensor_dict_new();
  CHECK(damo_optimizer_state(a, d) == DAMO_OK);
  damo_tensor_f32(damo_tensor_dict_get(d, "optimizer.v"))[3] = -1.0f;
  CHECK(damo_optimizer_load_state(a, d) == DAMO_ERR_FORMAT);
  damo_tensor_f32(damo_tensor_dict_get(d, "optimizer.v"))[3] = 0.0f;
  damo_tensor_f32(damo_tensor_dict_get(d, "optimizer.m"))[0] = NAN;
  CHECK(damo_optimizer_load_state(a, d) == DAMO_ERR_FORMAT);
  damo_tensor_f32(damo_tensor_dict_get(d, "optimizer.m"))[0] = 0.0f;
  damo_tensor_dict_get(d, "optimizer.step")->dtype = DAMO_F32;
  CHECK(damo_optimizer_load_state(a, d) == DAMO_ERR_FORMAT);
  damo_tensor_dict_get(d, "optimizer.step")->dtype = DAMO_I32;
  damo_tensor_i32(damo_tensor_dict_get(d, "optimizer.step"))[0] = -2;
  CHECK(damo_optimizer_load_state(a, d) == DAMO_ERR_FORMAT);
  CHECK(damo_optimizer_steps(a) == 0);
  damo_tensor_dict_free(d);

  /* step counts past int32 travel as (low, high) words */
  d = damo_tensor_dict_new();
  int64_t two = 2, n8 = 8;
  damo_tensor *st = damo_tensor_new(DAMO_I32, 1, &two);
  const int64_t big = 5000000000LL;
  uint32_t w[2] = {(uint32_t)(big & 0xffffffffu), (uint32_t)(big >> 32)};
  memcpy(st->data, w, sizeof w);
  damo_tensor_dict_add(d, "optimizer.step", st);
  damo_tensor_dict_add(d, "optimizer.m", damo_tensor_new(DAMO_F32, 1, &n8));
  damo_tensor_dict_add(d, "optimizer.v", damo_tensor_new(DAMO_F32, 1, &n8));
  CHECK(damo_optimizer_load_state(a, d) == DAMO_OK);
  CHECK(damo_optimizer_steps(a) == big);
  damo_tensor_dict *d2 = damo_tensor_dict_new();
  CHECK(damo_optimizer_state(a, d2) == DAMO_OK);
  damo_tensor *st2 = damo_tensor_dict_get(d2, "optimizer.step");
  CHECK(st2 && damo_tensor_numel(st2) == 2 && memcmp(st2->data, w, sizeof w) == 0);
  damo_tensor_dict_free(d);
  damo_tensor_dict_free(d2);

  CHECK(damo_optimizer_state(NULL, NULL) == DAMO_ERR_INVALID_ARG);
  CHECK(damo_optimizer_load_state(NULL, NULL) == DAMO_ERR_INVALID_ARG);
  damo_optimizer_free(s);
  damo_optimizer_free(a);
}

/* ------------------------------------------------------------------ configs */

static void expect_rejected(damo_optimizer_config c, int64_t n, const char *what) {
  damo_clear_error();
  damo_optimizer *o = damo_optimizer_new(&c, n);
  CHECK_MSG(o == NULL && damo_last_error()[0] != '\0', "%s accepted", what);
  damo_optimizer_free(o);
}

static void test_configs(void) {
  damo_optimizer_config c = damo_adam(0.01f);
  CHECK(c.kind == DAMO_OPT_ADAM && c.lr == 0.01f && c.beta1 == 0.9f && c.beta2 == 0.999f && c.eps == 1e-8f);
  CHECK(c.weight_decay == 0 && c.clip_norm == 0 && c.schedule.kind == DAMO_SCHED_CONSTANT);
  c = damo_adamw(0.001f, 0.01f);
  CHECK(c.kind == DAMO_OPT_ADAMW && c.weight_decay == 0.01f && c.beta1 == 0.9f && c.eps == 1e-8f);
  c = damo_sgd(0.1f, 0.9f, 5);
  CHECK(c.kind == DAMO_OPT_SGD && c.momentum == 0.9f && c.nesterov == 1 && c.weight_decay == 0);

  /* zero betas/eps mean the defaults: same trajectory bit for bit */
  damo_optimizer_config z = damo_adam(0.01f);
  z.beta1 = z.beta2 = z.eps = 0;
  float p1[16], p2[16], g[16];
  fill_normal(p1, 16, 1.0f, 6);
  memcpy(p2, p1, sizeof p1);
  damo_optimizer_config d = damo_adam(0.01f);
  damo_optimizer *a = damo_optimizer_new(&z, 16), *b = damo_optimizer_new(&d, 16);
  for (int s = 0; s < 3; s++) {
    fill_normal(g, 16, 1.0f, 30 + s);
    damo_optimizer_step(a, p1, g, 0, NULL);
    fill_normal(g, 16, 1.0f, 30 + s);
    damo_optimizer_step(b, p2, g, 0, NULL);
  }
  CHECK(memcmp(p1, p2, sizeof p1) == 0);
  damo_optimizer_free(a);
  damo_optimizer_free(b);

  c = damo_sgd(-0.1f, 0, 0);
  expect_rejected(c, 4, "negative lr");
  c = damo_sgd(NAN, 0, 0);
  expect_rejected(c, 4, "NaN lr");
  expect_rejected(damo_sgd(0.1f, 0, 1), 4, "Nesterov without momentum");
  expect_rejected(damo_sgd(0.1f, -0.5f, 0), 4, "negative momentum");
  expect_rejected(damo_sgd(0.1f, 0, 0), -1, "negative count");
  c = damo_adam(0.1f);
  c.beta1 = 1.0f;
  expect_rejected(c, 4, "beta1 = 1");
  c = damo_adamw(0.1f, -1.0f);
  expect_rejected(c, 4, "negative weight decay");
  c = damo_adam(0.1f);
  c.clip_norm = -1;
  expect_rejected(c, 4, "negative clip norm");
  c = damo_sgd(0.1f, 0, 0);
  c.schedule.kind = DAMO_SCHED_STEP;
  expect_rejected(c, 4, "STEP without step_size");
  c.schedule.kind = (damo_schedule_kind)42;
  expect_rejected(c, 4, "unknown schedule");
  c = damo_sgd(0.1f, 0, 0);
  c.kind = (damo_optimizer_kind)9;
  expect_rejected(c, 4, "unknown kind");
  damo_clear_error();
  CHECK(damo_optimizer_new(NULL, 4) == NULL);

  /* zero parameters is a valid (empty) optimizer */
  c = damo_adam(0.1f);
  a = damo_optimizer_new(&c, 0);
  CHECK(a != NULL);
  float norm = -1;
  CHECK(damo_optimizer_step(a, NULL, NULL, 0, &norm) == DAMO_OK && norm == 0);
  damo_optimizer_free(a);
  damo_optimizer_free(NULL);
  CHECK(damo_optimizer_steps(NULL) == 0);
  CHECK(damo_optimizer_step(NULL, p1, g, 0, NULL) == DAMO_ERR_INVALID_ARG);
}

/* ------------------------------------------------------------------ the threaded path */

/* A large vector (threaded, many blocks) whose first 50 entries are the fixture's: those must
 * follow torch exactly as in the small run, and the result must not depend on the threads. */
static void run_large(damo_optimizer_config c, int threads, float *p, float *norms, int64_t n) {
  damo_tensor *init = fixture("init"), *grads = fixture("grads");
  const int64_t k = damo_tensor_numel(init);
  float *g = malloc((size_t)n * sizeof *g);
  fill_normal(p, n, 1.0f, 40);
  memcpy(p, init->data, (size_t)k * sizeof *p);
  omp_set_num_threads(threads);
  damo_optimizer *o = damo_optimizer_new(&c, n);
  for (int s = 0; s < 5; s++) {
    fill_normal(g, n, 1.0f, 50 + s);
    memcpy(g, damo_tensor_f32(grads) + s * k, (size_t)k * sizeof *g);
    CHECK(damo_optimizer_step(o, p, g, 5, &norms[s]) == DAMO_OK);
  }
  damo_optimizer_free(o);
  free(g);
}

static void test_large_threaded(void) {
  if (!fx) return;
  const int64_t n = 300001; /* > 2^15 and not a multiple of the block size */
  const int max_threads = omp_get_max_threads();
  const damo_optimizer_config cfgs[] = {damo_adam(1e-2f), damo_sgd(0.1f, 0.9f, 0), damo_adamw(1e-2f, 0.1f)};
  const char *refs[] = {"adam.params", "sgd_momentum.params", "adamw.params"};
  float *p1 = malloc((size_t)n * sizeof *p1), *p2 = malloc((size_t)n * sizeof *p2);
  for (int i = 0; i < 3; i++) {
    float n1[5], n2[5];
    run_large(cfgs[i], 1, p1, n1, n);
    run_large(cfgs[i], 3, p2, n2, n);
    CHECK_MSG(memcmp(p1, p2, (size_t)n * sizeof *p1) == 0, "%s: threads change the result", refs[i]);
    CHECK_MSG(memcmp(n1, n2, sizeof n1) == 0, "%s: threads change the norm", refs[i]);
    damo_tensor *ref = fixture(refs[i]);
    CHECK_CLOSE(p1, damo_tensor_f32(ref) + 4 * 50, 50, ATOL, RTOL);
  }
  omp_set_num_threads(max_threads);
  free(p1);
  free(p2);
}

int main(void) {
  if (damo_safetensors_load(FIXTURE, &fx) != DAMO_OK) {
    fprintf(stderr, "cannot load %s: %s\n", FIXTURE, damo_last_error());
    fx = NULL;
  }
  RUN(test_against_torch);
  RUN(test_schedule_constant_warmup);
  RUN(test_schedule_step);
  RUN(test_schedule_cosine);
  RUN(test_clipping);
  RUN(test_nonfinite_gradient);
  RUN(test_state_round_trip);
  RUN(test_state_errors);
  RUN(test_configs);
  RUN(test_large_threaded);
  damo_tensor_dict_free(fx);
  return test_summary("test_optim");
}
