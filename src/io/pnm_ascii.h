/* pnm_ascii.h - plain (ASCII) PBM/PGM/PPM (P1-P3) decoding for damo_image_load (src/io). */
#ifndef DAMO_IO_PNM_ASCII_H
#define DAMO_IO_PNM_ASCII_H

#include "core/core.h"

/* 1 when data starts with the magic of P1, P2 or P3. */
int damo_pnm_is_ascii(const unsigned char *data, size_t size);
/* 8-bit pixels (malloc'd, *channels 1 or 3) of a plain PNM file; errors name path and offset. */
damo_status damo_pnm_ascii_decode(const unsigned char *data, size_t size, const char *path, int64_t max_pixels,
                                  unsigned char **out, int *w, int *h, int *channels);

#endif
