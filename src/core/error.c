/* error.c - the per-thread "last error" slot behind damo_last_error(). Library calls never
 * print or exit; they record a message here and return a status code. */
#include "core/core.h"

#include <stdio.h>

static _Thread_local char last_error[1024];

const char *damo_last_error(void) { return last_error; }

void damo_clear_error(void) { last_error[0] = '\0'; }

damo_status damo_error(damo_status code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(last_error, sizeof last_error, fmt, ap);
  va_end(ap);
  return code;
}

damo_status damo_error_prefix(damo_status code, const char *fmt, ...) {
  char prefix[512], old[sizeof last_error];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(prefix, sizeof prefix, fmt, ap);
  va_end(ap);
  memcpy(old, last_error, sizeof old);
  /* Truncation is acceptable: the message is for people, and the prefix matters most. */
  size_t n = strlen(prefix);
  if (n >= sizeof last_error) n = sizeof last_error - 1;
  memcpy(last_error, prefix, n);
  size_t room = sizeof last_error - 1 - n, m = strlen(old);
  if (m > room) m = room;
  memcpy(last_error + n, old, m);
  last_error[n + m] = '\0';
  return code;
}

const char *damo_status_name(damo_status s) {
  switch (s) {
  case DAMO_OK: return "DAMO_OK";
  case DAMO_ERR_INVALID_ARG: return "DAMO_ERR_INVALID_ARG";
  case DAMO_ERR_SHAPE: return "DAMO_ERR_SHAPE";
  case DAMO_ERR_IO: return "DAMO_ERR_IO";
  case DAMO_ERR_FORMAT: return "DAMO_ERR_FORMAT";
  case DAMO_ERR_NOMEM: return "DAMO_ERR_NOMEM";
  case DAMO_ERR_NOT_FOUND: return "DAMO_ERR_NOT_FOUND";
  case DAMO_ERR_NUMERIC: return "DAMO_ERR_NUMERIC";
  case DAMO_ERR_UNSUPPORTED: return "DAMO_ERR_UNSUPPORTED";
  case DAMO_ERR_STATE: return "DAMO_ERR_STATE";
  }
  return "DAMO_ERR_UNKNOWN";
}
