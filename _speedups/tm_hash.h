/* Hashing from C, without the GIL: OpenSSL's EVP (resolved at run time) and xxHash's XXH3 (vendored).
 *
 * Why run-time resolution for OpenSSL: the extension must build with only python3-dev, cython3 and
 * gcc (no libssl-dev headers, no -lcrypto). Python's own _hashlib has already loaded libcrypto into
 * the process; copy.pxi finds its path and hands it to tm_evp_load(), which takes the seven EVP
 * functions below with dlsym(). When that fails, new_hasher() returns the hashlib object instead.
 * The EVP prototypes are the stable OpenSSL >= 1.1 API; contexts and digests are opaque pointers.
 *
 * Why XXH3 vendored: xxhash.h and xxh_x86dispatch.c (BSD-2, see xxhash/LICENSE; from the python xxhash
 * 4.1.0 sdist, xxHash 0.8.x) are compiled in here, so the digests are those of the python xxhash package
 * (same algorithm and canonical byte order).
 */
#ifndef TM_HASH_H
#define TM_HASH_H

#include <dlfcn.h>
#include <stddef.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
/* The runtime choice between SSE2, AVX2 and AVX-512 that the python xxhash package also makes
 * (its setup.py compiles this same file): the same instructions for the same bytes, 3x fewer than
 * the SSE2 baseline of a plain -O2 build. It defines XXH_INLINE_ALL and includes xxhash.h. */
#include "xxhash/xxh_x86dispatch.c"
#define TM_XXH3_64_UPDATE XXH3_64bits_update_dispatch
#define TM_XXH3_128_UPDATE XXH3_128bits_update_dispatch
#else
#define XXH_INLINE_ALL
#include "xxhash/xxhash.h"
#define TM_XXH3_64_UPDATE XXH3_64bits_update
#define TM_XXH3_128_UPDATE XXH3_128bits_update
#endif

typedef void *(*tm_evp_ctx_new_t)(void);
typedef void (*tm_evp_ctx_free_t)(void *);
typedef const void *(*tm_evp_byname_t)(const char *);
typedef int (*tm_evp_init_t)(void *, const void *, void *);
typedef int (*tm_evp_update_t)(void *, const void *, size_t);
typedef int (*tm_evp_final_t)(void *, unsigned char *, unsigned int *);
typedef int (*tm_evp_copy_t)(void *, const void *);

/* The EVP entry points, filled once (under the GIL) by tm_evp_load; read-only afterwards. */
static struct {
    int loaded;
    tm_evp_ctx_new_t ctx_new;
    tm_evp_ctx_free_t ctx_free;
    tm_evp_byname_t byname;
    tm_evp_init_t init;
    tm_evp_update_t update;
    tm_evp_final_t final;
    tm_evp_copy_t copy;
} tm_evp;

/* 1 when every EVP function was found in the library at path (already loaded by _hashlib), else 0. */
static int tm_evp_load(const char *path) {
    void *lib;
    if (tm_evp.loaded)
        return 1;
    lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (lib == NULL)
        return 0;
    tm_evp.ctx_new = (tm_evp_ctx_new_t)dlsym(lib, "EVP_MD_CTX_new");
    tm_evp.ctx_free = (tm_evp_ctx_free_t)dlsym(lib, "EVP_MD_CTX_free");
    tm_evp.byname = (tm_evp_byname_t)dlsym(lib, "EVP_get_digestbyname");
    tm_evp.init = (tm_evp_init_t)dlsym(lib, "EVP_DigestInit_ex");
    tm_evp.update = (tm_evp_update_t)dlsym(lib, "EVP_DigestUpdate");
    tm_evp.final = (tm_evp_final_t)dlsym(lib, "EVP_DigestFinal_ex");
    tm_evp.copy = (tm_evp_copy_t)dlsym(lib, "EVP_MD_CTX_copy_ex");
    if (!tm_evp.ctx_new || !tm_evp.ctx_free || !tm_evp.byname || !tm_evp.init || !tm_evp.update ||
        !tm_evp.final || !tm_evp.copy) {
        dlclose(lib);
        return 0;
    }
    tm_evp.loaded = 1; /* the handle stays open for the life of the process, as _hashlib's does */
    return 1;
}

enum { TM_HASH_EVP = 1, TM_HASH_XXH3_64 = 2, TM_HASH_XXH3_128 = 3 };

typedef struct {
    int kind;
    void *evp;         /* EVP_MD_CTX* (TM_HASH_EVP) */
    XXH3_state_t *xxh; /* XXH3 state (TM_HASH_XXH3_*) */
} tm_hash;

/* 0 on success; -1 when this method cannot be hashed from C (unknown to EVP, refused by a FIPS policy). */
static int tm_hash_init(tm_hash *h, const char *method) {
    memset(h, 0, sizeof(*h));
    if (strcmp(method, "xxh3_64") == 0 || strcmp(method, "xxh3_128") == 0) {
        h->kind = method[5] == '6' ? TM_HASH_XXH3_64 : TM_HASH_XXH3_128;
        h->xxh = XXH3_createState();
        if (h->xxh == NULL)
            return -1;
        if (h->kind == TM_HASH_XXH3_64)
            XXH3_64bits_reset(h->xxh);
        else
            XXH3_128bits_reset(h->xxh);
        return 0;
    }
    if (!tm_evp.loaded)
        return -1;
    {
        const void *md = tm_evp.byname(method);
        if (md == NULL)
            return -1;
        h->evp = tm_evp.ctx_new();
        if (h->evp == NULL)
            return -1;
        if (tm_evp.init(h->evp, md, NULL) != 1) {
            tm_evp.ctx_free(h->evp);
            h->evp = NULL;
            return -1;
        }
        h->kind = TM_HASH_EVP;
    }
    return 0;
}

static void tm_hash_free(tm_hash *h) {
    if (h->evp != NULL)
        tm_evp.ctx_free(h->evp);
    if (h->xxh != NULL)
        XXH3_freeState(h->xxh);
    h->evp = NULL;
    h->xxh = NULL;
}

/* 0 on success, -1 on an EVP failure. Safe without the GIL (one thread per state at a time). */
static int tm_hash_update(tm_hash *h, const void *data, size_t size) {
    switch (h->kind) {
    case TM_HASH_EVP:
        return tm_evp.update(h->evp, data, size) == 1 ? 0 : -1;
    case TM_HASH_XXH3_64:
        return TM_XXH3_64_UPDATE(h->xxh, data, size) == XXH_OK ? 0 : -1;
    case TM_HASH_XXH3_128:
        return TM_XXH3_128_UPDATE(h->xxh, data, size) == XXH_OK ? 0 : -1;
    }
    return -1;
}

/* Copy src's running state into dst (initialised to nothing); 0 on success. */
static int tm_hash_copy(tm_hash *dst, const tm_hash *src) {
    memset(dst, 0, sizeof(*dst));
    dst->kind = src->kind;
    if (src->kind == TM_HASH_EVP) {
        dst->evp = tm_evp.ctx_new();
        if (dst->evp == NULL || tm_evp.copy(dst->evp, src->evp) != 1) {
            tm_hash_free(dst);
            return -1;
        }
        return 0;
    }
    if (src->xxh == NULL) /* a hasher that was never initialised */
        return -1;
    dst->xxh = XXH3_createState();
    if (dst->xxh == NULL)
        return -1;
    XXH3_copyState(dst->xxh, src->xxh);
    return 0;
}

/* The digest so far (the state is left as it is), in the byte order of hashlib and python xxhash:
 * XXH3 in its canonical big-endian form. Writes at most 64 bytes; returns the length, -1 on failure. */
static int tm_hash_digest(const tm_hash *h, unsigned char *out) {
    if (h->kind == TM_HASH_XXH3_64) {
        XXH64_canonical_t canon;
        XXH64_canonicalFromHash(&canon, XXH3_64bits_digest(h->xxh));
        memcpy(out, canon.digest, sizeof(canon.digest));
        return (int)sizeof(canon.digest);
    }
    if (h->kind == TM_HASH_XXH3_128) {
        XXH128_canonical_t canon;
        XXH128_canonicalFromHash(&canon, XXH3_128bits_digest(h->xxh));
        memcpy(out, canon.digest, sizeof(canon.digest));
        return (int)sizeof(canon.digest);
    }
    if (h->kind == TM_HASH_EVP && h->evp != NULL) {
        tm_hash tmp;
        unsigned int size = 0;
        int ok;
        if (tm_hash_copy(&tmp, h) != 0)
            return -1;
        ok = tm_evp.final(tmp.evp, out, &size) == 1;
        tm_hash_free(&tmp);
        return ok ? (int)size : -1;
    }
    return -1;
}

#endif
