/*
 * mq's native envelope crypto (docs/envelope.md, "Native AES-GCM"): the per-message work of an MQE3
 * envelope with the key set up once per data key instead of once per message.
 *
 * node:crypto makes a new cipher object, and with it a new AES key schedule, for every message: about
 * 7-9 us per call at 256 B, where the AES-GCM work itself is about 0.1 us. Here an OpenSSL
 * EVP_CIPHER_CTX is keyed once per data key; each message re-initialises only the IV (EVP_*Init_ex
 * with no cipher and no key), passes the AAD, the data, and gets (seal) or checks (open) the tag. The
 * bytes are AES-256-GCM as node:crypto makes them (96-bit nonce, 128-bit tag); the caller still draws
 * every nonce from its CSPRNG pool. Ciphertext is written into the caller's buffer (the envelope), and
 * plaintext into the buffer the caller allocated, so no intermediate buffers are made.
 *
 * The per-recipient MACs (HMAC-SHA256 truncated to 16 bytes, RFC 2104) use SHA-256 states that have
 * absorbed the inner and outer pads once per key: each MAC is then a copy of two small structs and
 * three compression-function calls, in one call for every recipient.
 *
 * OpenSSL is the one inside the node binary (its symbols are exported for addons); nothing here links
 * a second copy. Key material lives only in OpenSSL's contexts and the pad states, which are cleansed
 * when freed: by dispose() or by the garbage collector's finalizer, whichever comes first.
 */
#define NAPI_VERSION 8
#include <node_api.h>

#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/sha.h>

#define KEY_LEN 32
#define NONCE_LEN 12
#define TAG_LEN 16
#define MAC_KEY_LEN 32
#define MAC_LEN 16
#define SHA_BLOCK 64
#define MAX_MAC_KEYS 256

/* tags that tell our two kinds of handle apart (a handle of one kind is never taken for the other) */
#define GCM_MAGIC 0x6d716763u
#define MAC_MAGIC 0x6d716d63u

/*
 * Node-API type tags on the externals: an external some other addon made is refused before its data
 * pointer is read (the magic alone would be read through whatever pointer that external holds)
 */
static const napi_type_tag GCM_TAG = {0x6d7163727970746fULL, 0x67636d2d6b657931ULL};
static const napi_type_tag MAC_TAG = {0x6d7163727970746fULL, 0x6d61632d6b657931ULL};

typedef struct {
  uint32_t magic;
  int decrypt;
  EVP_CIPHER_CTX *ctx;
} gcm_key;

typedef struct {
  uint32_t magic;
  uint32_t n;
  /* per key: SHA-256 after the inner pad block, then after the outer pad block (2n states) */
  SHA256_CTX *states;
} mac_keys;

/* ---- argument helpers: each throws a JS TypeError/RangeError and returns 0 on a bad argument ---- */

static int fail(napi_env env, const char *code, const char *msg) {
  napi_throw_error(env, code, msg);
  return 0;
}

static int get_bytes(napi_env env, napi_value v, const char *what, uint8_t **data, size_t *len) {
  bool is_typed = false;
  if (napi_is_typedarray(env, v, &is_typed) != napi_ok || !is_typed) {
    napi_throw_type_error(env, "E_NATIVE_ARG", what);
    return 0;
  }
  napi_typedarray_type type;
  size_t length;
  void *ptr;
  napi_value ab;
  size_t offset;
  if (napi_get_typedarray_info(env, v, &type, &length, &ptr, &ab, &offset) != napi_ok || type != napi_uint8_array) {
    napi_throw_type_error(env, "E_NATIVE_ARG", what);
    return 0;
  }
  *data = (uint8_t *)ptr;
  *len = length;
  return 1;
}

/* an offset: an integer 0..2^32-1 (napi_get_value_uint32 alone would wrap 2^32 + 5 to 5, -1 to 2^32 - 1, 1.5 to 1) */
static int get_u32(napi_env env, napi_value v, const char *what, uint32_t *out) {
  double d;
  if (napi_get_value_double(env, v, &d) != napi_ok || !(d >= 0 && d <= (double)UINT32_MAX) || d != (double)(uint32_t)d) {
    napi_throw_type_error(env, "E_NATIVE_ARG", what);
    return 0;
  }
  *out = (uint32_t)d;
  return 1;
}

/* the output of an open must not live in a SharedArrayBuffer: another thread could read plaintext there before the tag is checked */
static int not_shared(napi_env env, napi_value v, const char *what) {
  napi_value ab;
  bool is_ab = false;
  if (napi_get_typedarray_info(env, v, NULL, NULL, NULL, &ab, NULL) != napi_ok || napi_is_arraybuffer(env, ab, &is_ab) != napi_ok || !is_ab) return fail(env, "E_NATIVE_ARG", what);
  return 1;
}

/* whether [a, a + alen) and [b, b + blen) share a byte */
static int overlaps(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen) {
  return alen > 0 && blen > 0 && a < b + blen && b < a + alen;
}

static int get_handle(napi_env env, napi_value v, uint32_t magic, void **out) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_external) return fail(env, "E_NATIVE_ARG", "not a native key handle");
  bool tagged = false;
  if (napi_check_object_type_tag(env, v, magic == GCM_MAGIC ? &GCM_TAG : &MAC_TAG, &tagged) != napi_ok || !tagged) return fail(env, "E_NATIVE_ARG", "not a native key handle of this kind");
  void *p = NULL;
  if (napi_get_value_external(env, v, &p) != napi_ok || p == NULL || *(uint32_t *)p != magic) return fail(env, "E_NATIVE_ARG", "not a native key handle of this kind");
  *out = p;
  return 1;
}

static napi_value undefined(napi_env env) {
  napi_value u;
  napi_get_undefined(env, &u);
  return u;
}

/* ---- AES-256-GCM ---- */

static void gcm_release(gcm_key *k) {
  /* EVP_CIPHER_CTX_free resets the context: OpenSSL's GCM context (key schedule included) is cleansed */
  if (k->ctx) EVP_CIPHER_CTX_free(k->ctx);
  k->ctx = NULL;
}

static void gcm_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  gcm_key *k = (gcm_key *)data;
  gcm_release(k);
  k->magic = 0;
  free(k);
}

/* gcmKey(key: 32 bytes, decrypt: boolean) -> handle */
static napi_value gcm_key_new(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2) return fail(env, "E_NATIVE_ARG", "gcmKey(key, decrypt)"), NULL;
  uint8_t *key;
  size_t key_len;
  bool decrypt;
  if (!get_bytes(env, argv[0], "key must be a Uint8Array", &key, &key_len)) return NULL;
  if (key_len != KEY_LEN) return fail(env, "E_NATIVE_ARG", "an AES-256 key is 32 bytes"), NULL;
  if (napi_get_value_bool(env, argv[1], &decrypt) != napi_ok) return fail(env, "E_NATIVE_ARG", "decrypt must be a boolean"), NULL;
  gcm_key *k = (gcm_key *)calloc(1, sizeof(gcm_key));
  if (!k) return fail(env, "E_NATIVE_MEMORY", "out of memory"), NULL;
  k->magic = GCM_MAGIC;
  k->decrypt = decrypt ? 1 : 0;
  k->ctx = EVP_CIPHER_CTX_new();
  /* the key schedule is made here, once; the IV (default length 12) comes with every message */
  if (!k->ctx || EVP_CipherInit_ex(k->ctx, EVP_aes_256_gcm(), NULL, key, NULL, decrypt ? 0 : 1) != 1 || EVP_CIPHER_CTX_get_iv_length(k->ctx) != NONCE_LEN) {
    gcm_release(k);
    free(k);
    return fail(env, "E_NATIVE_CRYPTO", "AES-256-GCM key setup failed"), NULL;
  }
  napi_value out;
  if (napi_create_external(env, k, gcm_finalize, NULL, &out) != napi_ok) {
    gcm_release(k);
    free(k);
    return fail(env, "E_NATIVE_MEMORY", "cannot make a key handle"), NULL;
  }
  /* the finalizer owns k now: on failure the handle is dropped and freed by the GC */
  if (napi_type_tag_object(env, out, &GCM_TAG) != napi_ok) return fail(env, "E_NATIVE_CRYPTO", "cannot tag the key handle"), NULL;
  return out;
}

/* gcmDispose(handle): frees (and so cleanses) the key now; the handle is unusable afterwards */
static napi_value gcm_dispose(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  gcm_key *k;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1) return fail(env, "E_NATIVE_ARG", "gcmDispose(handle)"), NULL;
  if (!get_handle(env, argv[0], GCM_MAGIC, (void **)&k)) return NULL;
  gcm_release(k);
  return undefined(env);
}

/*
 * gcmSeal(handle, nonce: 12 bytes, aad, plaintext, out, off) and gcmSeal2(handle, nonce, aad, head, body,
 * out, off): ciphertext of the plaintext (of head || body) to out[off..], then the 16-byte tag. gcmSeal2
 * lets a caller whose plaintext is a short head and a big body (a store row: headers length, headers,
 * body) seal both where they are instead of first copying them together. `pieces` is 1 or 2.
 */
static napi_value seal_call(napi_env env, napi_callback_info info, size_t pieces) {
  size_t argc = 7;
  napi_value argv[7];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 5 + pieces)
    return fail(env, "E_NATIVE_ARG", pieces == 1 ? "gcmSeal(handle, nonce, aad, plaintext, out, off)" : "gcmSeal2(handle, nonce, aad, head, body, out, off)"), NULL;
  gcm_key *k;
  uint8_t *nonce, *aad, *p1, *p2 = NULL, *out;
  size_t nonce_len, aad_len, l1, l2 = 0, out_len;
  uint32_t off;
  if (!get_handle(env, argv[0], GCM_MAGIC, (void **)&k)) return NULL;
  if (!get_bytes(env, argv[1], "nonce must be a Uint8Array", &nonce, &nonce_len)) return NULL;
  if (!get_bytes(env, argv[2], "aad must be a Uint8Array", &aad, &aad_len)) return NULL;
  if (!get_bytes(env, argv[3], pieces == 1 ? "plaintext must be a Uint8Array" : "head must be a Uint8Array", &p1, &l1)) return NULL;
  if (pieces == 2 && !get_bytes(env, argv[4], "body must be a Uint8Array", &p2, &l2)) return NULL;
  if (!get_bytes(env, argv[3 + pieces], "out must be a Uint8Array", &out, &out_len)) return NULL;
  if (!get_u32(env, argv[4 + pieces], "off must be a uint32", &off)) return NULL;
  if (!k->ctx || k->decrypt) return fail(env, "E_NATIVE_ARG", "not a live sealing key"), NULL;
  if (nonce_len != NONCE_LEN) return fail(env, "E_NATIVE_ARG", "the nonce is 12 bytes"), NULL;
  if (aad_len > INT_MAX || l1 > INT_MAX - TAG_LEN || l2 > (size_t)INT_MAX - TAG_LEN - l1) return fail(env, "E_NATIVE_ARG", "input too large"), NULL;
  size_t pt_len = l1 + l2;
  if (off > out_len || out_len - off < pt_len + TAG_LEN) return fail(env, "E_NATIVE_ARG", "out is too short for ciphertext and tag"), NULL;
  uint8_t *dst = out + off;
  /* the output must not overlap the inputs that are read after it is written */
  if (overlaps(dst, pt_len + TAG_LEN, p1, l1) || overlaps(dst, pt_len + TAG_LEN, p2, l2) || overlaps(dst, pt_len + TAG_LEN, aad, aad_len)) return fail(env, "E_NATIVE_ARG", "out overlaps an input"), NULL;
  int n = 0, n2 = 0, fin = 0;
  int ok = EVP_EncryptInit_ex(k->ctx, NULL, NULL, NULL, nonce) == 1;
  if (ok && aad_len > 0) ok = EVP_EncryptUpdate(k->ctx, NULL, &n, aad, (int)aad_len) == 1;
  n = 0;
  /* GCM is a stream mode: each update returns exactly as many bytes as it is given */
  if (ok && l1 > 0) ok = EVP_EncryptUpdate(k->ctx, dst, &n, p1, (int)l1) == 1 && (size_t)n == l1;
  if (ok && l2 > 0) ok = EVP_EncryptUpdate(k->ctx, dst + l1, &n2, p2, (int)l2) == 1 && (size_t)n2 == l2;
  if (ok) ok = EVP_EncryptFinal_ex(k->ctx, dst + pt_len, &fin) == 1 && fin == 0;
  if (ok) ok = EVP_CIPHER_CTX_ctrl(k->ctx, EVP_CTRL_AEAD_GET_TAG, TAG_LEN, dst + pt_len) == 1;
  if (!ok) {
    /* nothing half-made leaves: the caller throws the envelope away */
    OPENSSL_cleanse(dst, pt_len + TAG_LEN);
    return fail(env, "E_NATIVE_CRYPTO", "AES-256-GCM encryption failed"), NULL;
  }
  return undefined(env);
}

static napi_value gcm_seal(napi_env env, napi_callback_info info) {
  return seal_call(env, info, 1);
}

static napi_value gcm_seal2(napi_env env, napi_callback_info info) {
  return seal_call(env, info, 2);
}

/*
 * gcmOpen(handle, nonce: 12 bytes, aad, ciphertext, tag: 16 bytes, out) -> boolean: plaintext to out
 * (as long as the ciphertext; it may be the ciphertext itself, in place). False when OpenSSL refuses the
 * tag; out is then zeroed.
 */
static napi_value gcm_open(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 6) return fail(env, "E_NATIVE_ARG", "gcmOpen(handle, nonce, aad, ciphertext, tag, out)"), NULL;
  gcm_key *k;
  uint8_t *nonce, *aad, *ct, *tag, *out;
  size_t nonce_len, aad_len, ct_len, tag_len, out_len;
  if (!get_handle(env, argv[0], GCM_MAGIC, (void **)&k)) return NULL;
  if (!get_bytes(env, argv[1], "nonce must be a Uint8Array", &nonce, &nonce_len)) return NULL;
  if (!get_bytes(env, argv[2], "aad must be a Uint8Array", &aad, &aad_len)) return NULL;
  if (!get_bytes(env, argv[3], "ciphertext must be a Uint8Array", &ct, &ct_len)) return NULL;
  if (!get_bytes(env, argv[4], "tag must be a Uint8Array", &tag, &tag_len)) return NULL;
  if (!get_bytes(env, argv[5], "out must be a Uint8Array", &out, &out_len)) return NULL;
  if (!k->ctx || !k->decrypt) return fail(env, "E_NATIVE_ARG", "not a live opening key"), NULL;
  if (nonce_len != NONCE_LEN) return fail(env, "E_NATIVE_ARG", "the nonce is 12 bytes"), NULL;
  if (tag_len != TAG_LEN) return fail(env, "E_NATIVE_ARG", "the tag is 16 bytes"), NULL;
  if (aad_len > INT_MAX || ct_len > INT_MAX) return fail(env, "E_NATIVE_ARG", "input too large"), NULL;
  if (out_len != ct_len) return fail(env, "E_NATIVE_ARG", "out must be as long as the ciphertext"), NULL;
  if (!not_shared(env, argv[5], "out must not be in a SharedArrayBuffer")) return NULL;
  /* the output must not overlap any input, except exactly in place (out == ct: GCM's CTR pass reads each
     block before it writes it, which OpenSSL supports): the receive loop decrypts over a delivery's body */
  if (ct_len > 0 && ((out != ct && out < ct + ct_len && ct < out + ct_len) || (aad_len > 0 && out < aad + aad_len && aad < out + ct_len) || (out < tag + TAG_LEN && tag < out + ct_len))) return fail(env, "E_NATIVE_ARG", "out overlaps an input"), NULL;
  uint8_t tag_copy[TAG_LEN];
  memcpy(tag_copy, tag, TAG_LEN);
  int n = 0, fin = 0;
  int ok = EVP_DecryptInit_ex(k->ctx, NULL, NULL, NULL, nonce) == 1;
  if (ok && aad_len > 0) ok = EVP_DecryptUpdate(k->ctx, NULL, &n, aad, (int)aad_len) == 1;
  n = 0;
  if (ok && ct_len > 0) ok = EVP_DecryptUpdate(k->ctx, out, &n, ct, (int)ct_len) == 1 && (size_t)n == ct_len;
  if (ok) ok = EVP_CIPHER_CTX_ctrl(k->ctx, EVP_CTRL_AEAD_SET_TAG, TAG_LEN, tag_copy) == 1;
  /* OpenSSL compares the tag (in constant time); nothing else decides */
  if (ok) ok = EVP_DecryptFinal_ex(k->ctx, out + n, &fin) == 1 && fin == 0;
  if (!ok && ct_len > 0) OPENSSL_cleanse(out, ct_len);
  napi_value r;
  napi_get_boolean(env, ok ? true : false, &r);
  return r;
}

/* ---- HMAC-SHA256 with the pads absorbed once per key ---- */

static void mac_release(mac_keys *m) {
  if (m->states) {
    OPENSSL_cleanse(m->states, sizeof(SHA256_CTX) * 2 * m->n);
    free(m->states);
  }
  m->states = NULL;
  m->n = 0;
}

static void mac_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  mac_keys *m = (mac_keys *)data;
  mac_release(m);
  m->magic = 0;
  free(m);
}

/* macKeys(keys: n * 32 bytes, the MAC keys one after the other) -> handle */
static napi_value mac_keys_new(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1) return fail(env, "E_NATIVE_ARG", "macKeys(keys)"), NULL;
  uint8_t *keys;
  size_t len;
  if (!get_bytes(env, argv[0], "keys must be a Uint8Array", &keys, &len)) return NULL;
  if (len == 0 || len % MAC_KEY_LEN != 0 || len / MAC_KEY_LEN > MAX_MAC_KEYS) return fail(env, "E_NATIVE_ARG", "MAC keys are 1 to 256 keys of 32 bytes"), NULL;
  mac_keys *m = (mac_keys *)calloc(1, sizeof(mac_keys));
  if (!m) return fail(env, "E_NATIVE_MEMORY", "out of memory"), NULL;
  m->magic = MAC_MAGIC;
  m->n = (uint32_t)(len / MAC_KEY_LEN);
  m->states = (SHA256_CTX *)calloc(2 * m->n, sizeof(SHA256_CTX));
  if (!m->states) {
    free(m);
    return fail(env, "E_NATIVE_MEMORY", "out of memory"), NULL;
  }
  uint8_t pad[SHA_BLOCK];
  int ok = 1;
  for (uint32_t i = 0; i < m->n && ok; i++) {
    const uint8_t *key = keys + (size_t)i * MAC_KEY_LEN;
    for (int pass = 0; pass < 2 && ok; pass++) {
      /* RFC 2104: the key, shorter than a block, zero-padded and XORed with 0x36 (inner) or 0x5c (outer) */
      memset(pad, pass == 0 ? 0x36 : 0x5c, SHA_BLOCK);
      for (int j = 0; j < MAC_KEY_LEN; j++) pad[j] ^= key[j];
      SHA256_CTX *s = &m->states[2 * i + pass];
      ok = SHA256_Init(s) == 1 && SHA256_Update(s, pad, SHA_BLOCK) == 1;
    }
  }
  OPENSSL_cleanse(pad, sizeof(pad));
  napi_value out;
  if (!ok || napi_create_external(env, m, mac_finalize, NULL, &out) != napi_ok) {
    mac_release(m);
    free(m);
    return fail(env, "E_NATIVE_CRYPTO", "cannot set up the MAC keys"), NULL;
  }
  if (napi_type_tag_object(env, out, &MAC_TAG) != napi_ok) return fail(env, "E_NATIVE_CRYPTO", "cannot tag the MAC keys handle"), NULL;
  return out;
}

/* macDispose(handle): cleanses and frees the pad states now */
static napi_value mac_dispose(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  mac_keys *m;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1) return fail(env, "E_NATIVE_ARG", "macDispose(handle)"), NULL;
  if (!get_handle(env, argv[0], MAC_MAGIC, (void **)&m)) return NULL;
  mac_release(m);
  return undefined(env);
}

/*
 * macs(handle, head, payload, out, off): for each key i, HMAC-SHA256(key_i, head || SHA-256(payload))
 * truncated to 16 bytes, written to out[off + 16 i ..]. The payload is hashed once for all keys.
 */
static napi_value macs(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 5) return fail(env, "E_NATIVE_ARG", "macs(handle, head, payload, out, off)"), NULL;
  mac_keys *m;
  uint8_t *head, *payload, *out;
  size_t head_len, payload_len, out_len;
  uint32_t off;
  if (!get_handle(env, argv[0], MAC_MAGIC, (void **)&m)) return NULL;
  if (!get_bytes(env, argv[1], "head must be a Uint8Array", &head, &head_len)) return NULL;
  if (!get_bytes(env, argv[2], "payload must be a Uint8Array", &payload, &payload_len)) return NULL;
  if (!get_bytes(env, argv[3], "out must be a Uint8Array", &out, &out_len)) return NULL;
  if (!get_u32(env, argv[4], "off must be a uint32", &off)) return NULL;
  if (!m->states) return fail(env, "E_NATIVE_ARG", "the MAC keys were disposed of"), NULL;
  if (off > out_len || (out_len - off) / MAC_LEN < m->n) return fail(env, "E_NATIVE_ARG", "out is too short for the MACs"), NULL;
  /* key i's MAC is written before key i+1's reads head: an overlap would change the later MACs */
  if (overlaps(out + off, (size_t)m->n * MAC_LEN, head, head_len) || overlaps(out + off, (size_t)m->n * MAC_LEN, payload, payload_len)) return fail(env, "E_NATIVE_ARG", "out overlaps an input"), NULL;
  uint8_t digest[SHA256_DIGEST_LENGTH], inner[SHA256_DIGEST_LENGTH], full[SHA256_DIGEST_LENGTH];
  SHA256_CTX s;
  int ok = SHA256_Init(&s) == 1 && SHA256_Update(&s, payload, payload_len) == 1 && SHA256_Final(digest, &s) == 1;
  for (uint32_t i = 0; i < m->n && ok; i++) {
    s = m->states[2 * i];
    ok = SHA256_Update(&s, head, head_len) == 1 && SHA256_Update(&s, digest, sizeof(digest)) == 1 && SHA256_Final(inner, &s) == 1;
    if (!ok) break;
    s = m->states[2 * i + 1];
    ok = SHA256_Update(&s, inner, sizeof(inner)) == 1 && SHA256_Final(full, &s) == 1;
    if (ok) memcpy(out + off + (size_t)i * MAC_LEN, full, MAC_LEN);
  }
  OPENSSL_cleanse(&s, sizeof(s));
  /* the digest of the plaintext would let a guess of it be confirmed */
  OPENSSL_cleanse(digest, sizeof(digest));
  OPENSSL_cleanse(inner, sizeof(inner));
  OPENSSL_cleanse(full, sizeof(full));
  if (!ok) return fail(env, "E_NATIVE_CRYPTO", "HMAC-SHA256 failed"), NULL;
  return undefined(env);
}

/* ---- module ---- */

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"gcmKey", NULL, gcm_key_new, NULL, NULL, NULL, napi_enumerable, NULL},
      {"gcmSeal", NULL, gcm_seal, NULL, NULL, NULL, napi_enumerable, NULL},
      {"gcmSeal2", NULL, gcm_seal2, NULL, NULL, NULL, napi_enumerable, NULL},
      {"gcmOpen", NULL, gcm_open, NULL, NULL, NULL, napi_enumerable, NULL},
      {"gcmDispose", NULL, gcm_dispose, NULL, NULL, NULL, napi_enumerable, NULL},
      {"macKeys", NULL, mac_keys_new, NULL, NULL, NULL, napi_enumerable, NULL},
      {"macs", NULL, macs, NULL, NULL, NULL, napi_enumerable, NULL},
      {"macDispose", NULL, mac_dispose, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  if (napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props) != napi_ok) return NULL;
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
