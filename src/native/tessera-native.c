/*
 * Tessera's optional native helpers (docs/native.md): zstd into and out of caller-given memory,
 * the holes of sparse files, and (with ISA-L) a CRC-32 several times faster than zlib's. Node's
 * zlib returns every result in a fresh buffer (a restore paid a page-faulted 1 MiB allocation, a
 * copy and its garbage collection per chunk) and has no lseek(SEEK_DATA). Each thread that loads
 * the module gets its own zstd contexts (instance data). Everything here is synchronous and
 * bounded by its arguments; errors are thrown as JS Errors with a code (ERR_ZSTD,
 * ERR_INVALID_ARG_TYPE, or the errno name of a failed lseek), never a crash.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#define NAPI_VERSION 8
#include <node_api.h>
#include <zstd.h>
#include <zstd_errors.h>
#ifdef TESSERA_ISAL
#include <isa-l/crc.h>
#endif

typedef struct {
  ZSTD_CCtx *cctx;
  ZSTD_DCtx *dctx;
} Contexts;

static void free_contexts(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  Contexts *c = data;
  ZSTD_freeCCtx(c->cctx);
  ZSTD_freeDCtx(c->dctx);
  free(c);
}

static napi_value throw_code(napi_env env, const char *code, const char *message) {
  napi_throw_error(env, code, message);
  return NULL;
}

/* Bytes of a Uint8Array (or Buffer) argument, over an ArrayBuffer or a SharedArrayBuffer. */
static int bytes_of(napi_env env, napi_value v, uint8_t **data, size_t *length) {
  bool is_typed = false;
  if (napi_is_typedarray(env, v, &is_typed) != napi_ok || !is_typed) return 0;
  napi_typedarray_type type;
  void *p = NULL;
  if (napi_get_typedarray_info(env, v, &type, length, &p, NULL, NULL) != napi_ok || type != napi_uint8_array) return 0;
  *data = p;
  return 1;
}

static int args_of(napi_env env, napi_callback_info info, size_t want, napi_value *argv, Contexts **ctx) {
  size_t argc = want;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < want) return 0;
  if (ctx != NULL && napi_get_instance_data(env, (void **)ctx) != napi_ok) return 0;
  return 1;
}

static napi_value number(napi_env env, double n) {
  napi_value v;
  napi_create_double(env, n, &v);
  return v;
}

/* compress(src, dst, level): bytes of the zstd frame written into dst; -1 if dst is too small. */
static napi_value compress(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  Contexts *c;
  uint8_t *src, *dst;
  size_t src_len, dst_len;
  int32_t level;
  if (!args_of(env, info, 3, argv, &c) || !bytes_of(env, argv[0], &src, &src_len) || !bytes_of(env, argv[1], &dst, &dst_len) ||
      napi_get_value_int32(env, argv[2], &level) != napi_ok)
    return throw_code(env, "ERR_INVALID_ARG_TYPE", "compress(src: Uint8Array, dst: Uint8Array, level: number)");
  size_t n = ZSTD_compressCCtx(c->cctx, dst, dst_len, src, src_len, level);
  if (ZSTD_isError(n)) {
    if (ZSTD_getErrorCode(n) == ZSTD_error_dstSize_tooSmall) return number(env, -1);
    return throw_code(env, "ERR_ZSTD", ZSTD_getErrorName(n));
  }
  return number(env, (double)n);
}

/*
 * decompress(src, dst): bytes of plaintext written into dst. src must be exactly one frame; a
 * frame that is damaged, truncated, followed by other bytes or larger than dst throws ERR_ZSTD.
 */
static napi_value decompress(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  Contexts *c;
  uint8_t *src, *dst;
  size_t src_len, dst_len;
  if (!args_of(env, info, 2, argv, &c) || !bytes_of(env, argv[0], &src, &src_len) || !bytes_of(env, argv[1], &dst, &dst_len))
    return throw_code(env, "ERR_INVALID_ARG_TYPE", "decompress(src: Uint8Array, dst: Uint8Array)");
  size_t frame = ZSTD_findFrameCompressedSize(src, src_len);
  if (ZSTD_isError(frame)) return throw_code(env, "ERR_ZSTD", ZSTD_getErrorName(frame));
  if (frame != src_len) return throw_code(env, "ERR_ZSTD", "Data after the end of the frame");
  size_t n = ZSTD_decompressDCtx(c->dctx, dst, dst_len, src, src_len);
  if (ZSTD_isError(n)) return throw_code(env, "ERR_ZSTD", ZSTD_getErrorName(n));
  return number(env, (double)n);
}

/* seek(fd, offset, hole): lseek(SEEK_HOLE if hole else SEEK_DATA); -1 where there is no more data. */
static napi_value seek(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int32_t fd;
  int64_t offset;
  bool hole;
  if (!args_of(env, info, 3, argv, NULL) || napi_get_value_int32(env, argv[0], &fd) != napi_ok ||
      napi_get_value_int64(env, argv[1], &offset) != napi_ok || napi_get_value_bool(env, argv[2], &hole) != napi_ok || offset < 0)
    return throw_code(env, "ERR_INVALID_ARG_TYPE", "seek(fd: number, offset: number, hole: boolean)");
  off_t r = lseek(fd, (off_t)offset, hole ? SEEK_HOLE : SEEK_DATA);
  if (r < 0) {
    if (errno == ENXIO) return number(env, -1);
    const char *name = strerrorname_np(errno);
    return throw_code(env, name != NULL ? name : "ERR_SEEK", strerror(errno));
  }
  return number(env, (double)r);
}

#ifdef TESSERA_ISAL
/* crc32(data, value): zlib's CRC-32 (IEEE, reflected) of data, continuing from value (0 to start). */
static napi_value crc32(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  uint8_t *data;
  size_t length;
  uint32_t value;
  if (!args_of(env, info, 2, argv, NULL) || !bytes_of(env, argv[0], &data, &length) || napi_get_value_uint32(env, argv[1], &value) != napi_ok)
    return throw_code(env, "ERR_INVALID_ARG_TYPE", "crc32(data: Uint8Array, value: number)");
  napi_value v;
  napi_create_uint32(env, crc32_gzip_refl(value, data, length), &v);
  return v;
}
#endif

static napi_value init(napi_env env, napi_value exports) {
  Contexts *c = calloc(1, sizeof *c);
  if (c == NULL) return throw_code(env, "ENOMEM", "Out of memory");
  c->cctx = ZSTD_createCCtx();
  c->dctx = ZSTD_createDCtx();
  if (c->cctx == NULL || c->dctx == NULL || napi_set_instance_data(env, c, free_contexts, NULL) != napi_ok) {
    free_contexts(env, c, NULL);
    return throw_code(env, "ENOMEM", "Cannot make zstd contexts");
  }
  napi_property_descriptor props[] = {
    {"compress", NULL, compress, NULL, NULL, NULL, napi_enumerable, NULL},
    {"decompress", NULL, decompress, NULL, NULL, NULL, napi_enumerable, NULL},
    {"seek", NULL, seek, NULL, NULL, NULL, napi_enumerable, NULL},
#ifdef TESSERA_ISAL
    {"crc32", NULL, crc32, NULL, NULL, NULL, napi_enumerable, NULL},
#endif
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}

NAPI_MODULE_INIT() { return init(env, exports); }
