/* pysmtp-wasm: the client side of TLS over memory buffers, on OpenSSL 3, for WebAssembly.
 *
 * The model is CPython's ssl.SSLObject over ssl.MemoryBIO (Modules/_ssl.c): this glue owns no
 * socket. The JavaScript engine in web/src/tls.js feeds it the ciphertext that arrived
 * (pt_feed), takes the ciphertext to send (pt_take), drives the handshake (pt_handshake),
 * reads and writes plaintext (pt_read, pt_write), and asks why something failed: OpenSSL's own
 * reason (pt_error_*) and the certificate verification's (pt_verify_*).
 *
 * Trust lives in an SSL_CTX: one per page for a root bundle, one per pinned `ca`. Verification
 * is OpenSSL's: chain building, expiry, the serverAuth purpose, and the host name or IP address
 * set on each connection (X509_VERIFY_PARAM), all before the handshake completes.
 *
 * Everything runs on one thread: the static buffers below are safe.
 */
#include <string.h>

#include <emscripten.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#define EXPORT EMSCRIPTEN_KEEPALIVE

static char text[1024]; /* strings returned to JavaScript: valid until the next call */

/* Called once per module: no configuration file (nothing to read here), load error strings. */
EXPORT int pt_init(void) {
  return OPENSSL_init_ssl(OPENSSL_INIT_NO_LOAD_CONFIG | OPENSSL_INIT_LOAD_SSL_STRINGS |
                              OPENSSL_INIT_LOAD_CRYPTO_STRINGS,
                          NULL) == 1 &&
         RAND_status() == 1;
}

/* TLS 1.2's offer, as a browser makes it: forward-secret key exchange (ECDHE, then DHE) and AEAD
 * ciphers only; no RSA key exchange, no CBC, no SHA-1 MACs. WebAssembly has no AES instructions:
 * here ChaCha20-Poly1305 runs about 3x as fast as AES-256-GCM (240 against 80 MB/s measured), so
 * it is offered first, as clients without AES hardware do; AES-GCM follows. A server that imposes
 * its own order still may. */
#define TLS12_CIPHERS                                                                              \
  "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"                                     \
  "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                                     \
  "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                                     \
  "DHE-RSA-CHACHA20-POLY1305:DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384"

/* A client context: TLS 1.2 and 1.3, the peer verified. `pinned`: the trust anchors are the
 * user's `ca`, and any of them ends a chain, a leaf included (X509_V_FLAG_PARTIAL_CHAIN). */
EXPORT SSL_CTX *pt_ctx_new(int pinned) {
  SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
  if (!ctx) return NULL;
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
  SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
  /* Security level 2 (112 bits): RSA and DH keys of 2048 bits and more, ECC of 224 and more, no
   * SHA-1 signatures in the handshake. (OpenSSL's compiled-in default is level 1.) */
  SSL_CTX_set_security_level(ctx, 2);
  if (SSL_CTX_set_ciphersuites(ctx, "TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256:"
                                    "TLS_AES_256_GCM_SHA384") != 1 ||
      SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS) != 1) {
    SSL_CTX_free(ctx);
    return NULL;
  }
  /* Sessions are not resumed: each connection is verified in full. */
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  X509_VERIFY_PARAM *param = SSL_CTX_get0_param(ctx);
  /* As Python's ssl module: "*" only as a whole left-most label. */
  X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
  if (pinned) X509_VERIFY_PARAM_set_flags(param, X509_V_FLAG_PARTIAL_CHAIN);
  return ctx;
}

EXPORT void pt_ctx_free(SSL_CTX *ctx) { SSL_CTX_free(ctx); }

/* Add the PEM certificates in pem[0..len) to the context's trust store. Returns how many were
 * added; *skipped counts the blocks OpenSSL could not read. */
EXPORT int pt_ctx_add_pem(SSL_CTX *ctx, const char *pem, int len, int *skipped) {
  X509_STORE *store = SSL_CTX_get_cert_store(ctx);
  BIO *bio = BIO_new_mem_buf(pem, len);
  int added = 0;
  *skipped = 0;
  if (!bio) return 0;
  for (;;) {
    X509 *cert = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    if (!cert) {
      unsigned long e = ERR_peek_last_error();
      if (ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE) break;
      if (!e) break;
      ++*skipped; /* a block OpenSSL cannot read: go on after it */
      ERR_clear_error();
      continue;
    }
    if (X509_STORE_add_cert(store, cert) == 1) ++added;
    X509_free(cert);
  }
  ERR_clear_error();
  BIO_free(bio);
  return added;
}

/* A connection to `host` (a DNS name, or an IPv4/IPv6 address without brackets): SNI for names
 * (never for addresses, RFC 6066 3), and the name or address the certificate must hold. */
EXPORT SSL *pt_new(SSL_CTX *ctx, const char *host) {
  SSL *ssl = SSL_new(ctx);
  if (!ssl) return NULL;
  BIO *in = BIO_new(BIO_s_mem());
  BIO *out = BIO_new(BIO_s_mem());
  if (!in || !out) {
    BIO_free(in);
    BIO_free(out);
    SSL_free(ssl);
    return NULL;
  }
  /* An empty memory BIO means "no data yet", not end of file. */
  BIO_set_mem_eof_return(in, -1);
  BIO_set_mem_eof_return(out, -1);
  SSL_set_bio(ssl, in, out);
  SSL_set_connect_state(ssl);
  X509_VERIFY_PARAM *param = SSL_get0_param(ssl);
  int ok;
  if (X509_VERIFY_PARAM_set1_ip_asc(param, host) == 1) {
    ok = 1;
  } else {
    ERR_clear_error();
    ok = SSL_set_tlsext_host_name(ssl, host) == 1 && SSL_set1_host(ssl, host) == 1;
  }
  if (!ok) {
    SSL_free(ssl);
    return NULL;
  }
  return ssl;
}

EXPORT void pt_free(SSL *ssl) { SSL_free(ssl); }

/* The calls below on a NULL SSL (JavaScript's pointer after pt_free) fail without touching memory:
 * in WebAssembly a NULL dereference does not fault, it reads and writes the module's first bytes
 * (OpenSSL's static data), which may trap later or elsewhere. */

/* Ciphertext from the network. */
EXPORT int pt_feed(SSL *ssl, const void *data, int len) { return ssl ? BIO_write(SSL_get_rbio(ssl), data, len) : -1; }

/* Ciphertext waiting to go to the network: how much, and take up to cap bytes of it. */
EXPORT int pt_pending(SSL *ssl) { return ssl ? (int)BIO_ctrl_pending(SSL_get_wbio(ssl)) : 0; }

EXPORT int pt_take(SSL *ssl, void *buf, int cap) {
  int n = ssl ? BIO_read(SSL_get_wbio(ssl), buf, cap) : 0;
  return n > 0 ? n : 0;
}

/* The outcome of an SSL_* call: > 0 done (bytes for read/write), 0 wants more input,
 * -1 the peer closed TLS (close_notify), -2 failed (see pt_error_*). */
static int outcome(SSL *ssl, int r) {
  if (r > 0) return r;
  switch (SSL_get_error(ssl, r)) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
      return 0;
    case SSL_ERROR_ZERO_RETURN:
      return -1;
    default:
      return -2;
  }
}

EXPORT int pt_handshake(SSL *ssl) { return ssl ? outcome(ssl, SSL_do_handshake(ssl)) : -2; }

EXPORT int pt_read(SSL *ssl, void *buf, int cap) { return ssl ? outcome(ssl, SSL_read(ssl, buf, cap)) : -2; }

EXPORT int pt_write(SSL *ssl, const void *buf, int len) { return ssl ? outcome(ssl, SSL_write(ssl, buf, len)) : -2; }

/* Queue a close_notify alert (then pt_take it). */
EXPORT int pt_shutdown(SSL *ssl) { return ssl ? SSL_shutdown(ssl) : -1; }

/* What was negotiated: "TLSv1.3", and the cipher suite's IANA name. */
EXPORT const char *pt_version(SSL *ssl) { return ssl ? SSL_get_version(ssl) : ""; }

EXPORT const char *pt_cipher(SSL *ssl) {
  const SSL_CIPHER *cipher = ssl ? SSL_get_current_cipher(ssl) : NULL;
  return cipher ? SSL_CIPHER_standard_name(cipher) : "";
}

/* The certificate verification's result (X509_V_OK is 0) and OpenSSL's words for it. */
EXPORT long pt_verify_result(SSL *ssl) { return ssl ? SSL_get_verify_result(ssl) : X509_V_ERR_UNSPECIFIED; }

EXPORT const char *pt_verify_string(long result) { return X509_verify_cert_error_string(result); }

/* The first error of the failed call: its library and reason codes (an alert the peer sent is
 * reason SSL_AD_REASON_OFFSET + the alert's number) and OpenSSL's text for it. */
static unsigned long last_error;

EXPORT int pt_error_take(void) {
  last_error = ERR_get_error();
  ERR_clear_error();
  return last_error != 0;
}

EXPORT int pt_error_lib(void) { return ERR_GET_LIB(last_error); }

EXPORT int pt_error_reason(void) { return ERR_GET_REASON(last_error); }

EXPORT const char *pt_error_string(void) {
  const char *reason = ERR_reason_error_string(last_error);
  if (reason) return reason;
  ERR_error_string_n(last_error, text, sizeof text);
  return text;
}

/* The peer's certificate's names, for error messages: "DNS:a.example, IP:192.0.2.1" (its
 * subjectAltName), else its subject. Empty without a certificate. */
EXPORT const char *pt_peer_names(SSL *ssl) {
  text[0] = 0;
  /* The chain, not SSL_get0_peer_certificate(): that is set only once verification passed. */
  STACK_OF(X509) *chain = ssl ? SSL_get_peer_cert_chain(ssl) : NULL;
  X509 *cert = chain && sk_X509_num(chain) ? sk_X509_value(chain, 0) : NULL;
  if (!cert) return text;
  GENERAL_NAMES *names = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
  if (names) {
    BIO *bio = BIO_new(BIO_s_mem());
    for (int i = 0; bio && i < sk_GENERAL_NAME_num(names) && i < 20; i++) {
      GENERAL_NAME *name = sk_GENERAL_NAME_value(names, i);
      if (name->type != GEN_DNS && name->type != GEN_IPADD) continue;
      if (BIO_ctrl_pending(bio)) BIO_puts(bio, ", ");
      GENERAL_NAME_print(bio, name);
    }
    int n = bio ? BIO_read(bio, text, sizeof text - 1) : 0;
    text[n > 0 ? n : 0] = 0;
    BIO_free(bio);
    GENERAL_NAMES_free(names);
  }
  if (!text[0]) X509_NAME_oneline(X509_get_subject_name(cert), text, sizeof text);
  return text;
}
