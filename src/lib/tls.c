/*
 * tls: the server's TLS context and the shared session-ticket keys
 * (tls.h).  OpenSSL 3.0.
 *
 * The context follows Mozilla's "intermediate" profile unless [tls]
 * says otherwise.  Sessions resume only by ticket: a server-side session
 * cache would live in one worker process and be useless to the others,
 * so it is off, and the ticket keys live in one anonymous shared mapping
 * that the master rotates and every worker reads.
 */
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <errno.h>
#include <fcntl.h>
#include <strings.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "sdps/config.h"
#include "sdps/log.h"
#include "sdps/tls.h"

/* A certificate chain or key file larger than this is not one. */
#define PEM_MAX		(1024 * 1024)

#define DEF_CIPHERS	"ECDHE-ECDSA-AES128-GCM-SHA256:" \
			"ECDHE-RSA-AES128-GCM-SHA256:" \
			"ECDHE-ECDSA-AES256-GCM-SHA384:" \
			"ECDHE-RSA-AES256-GCM-SHA384:" \
			"ECDHE-ECDSA-CHACHA20-POLY1305:" \
			"ECDHE-RSA-CHACHA20-POLY1305"
#define DEF_SUITES	"TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:" \
			"TLS_CHACHA20_POLY1305_SHA256"
#define DEF_GROUPS	"X25519:prime256v1:secp384r1"

/* Sessions resumed by ticket must come from this server's tickets. */
#define SID_CTX		"sdps-pop3"

#define TK_NAME_LEN	16
#define TK_AES_LEN	32
#define TK_HMAC_LEN	32
/* A reader gives up (no ticket, a full handshake) rather than spin on a
 * writer that died mid-update. */
#define TK_READ_TRIES	10000

struct tk_key {
	unsigned char	 name[TK_NAME_LEN];
	unsigned char	 aes[TK_AES_LEN];
	unsigned char	 hmac[TK_HMAC_LEN];
	uint64_t	 created;	/* the rotate clock; 0 = not yet */
};

/* key[0] encrypts; key[1], once there is one, only decrypts. */
struct tk_keys {
	struct tk_key	 key[2];
	unsigned	 nkeys;
};

/*
 * In the shared mapping.  A seqlock: the one writer (the master) makes
 * seq odd, writes, makes it even; a reader copies keys and retries
 * unless seq was the same even number before and after.  A reader never
 * writes, so a worker dying mid-read costs nothing.
 */
struct tls_tickets {
	uint32_t	 seq;
	struct tk_keys	 k;
};

struct tls_server {
	SSL_CTX			*ctx;
	struct tls_tickets	*tk;
	char			 desc[400];
	/* A punt listener's (tls_punt_server_new): the front ends that may
	 * connect, and why the last handshake's client was refused. */
	char			 allow[1024];
	char			 refusal[512];
};

/* ---- ticket keys ---- */

static int
tk_key_new(struct tk_key *k, uint64_t now_s)
{
	if (RAND_priv_bytes(k->name, sizeof(k->name)) != 1 ||
	    RAND_priv_bytes(k->aes, sizeof(k->aes)) != 1 ||
	    RAND_priv_bytes(k->hmac, sizeof(k->hmac)) != 1) {
		log_warnx("tls: RAND_priv_bytes failed");
		return -1;
	}
	k->created = now_s;
	return 0;
}

static void
tk_write_begin(struct tls_tickets *tk)
{
	__atomic_store_n(&tk->seq, tk->seq + 1, __ATOMIC_RELAXED);
	__atomic_thread_fence(__ATOMIC_RELEASE);
}

static void
tk_write_end(struct tls_tickets *tk)
{
	__atomic_store_n(&tk->seq, tk->seq + 1, __ATOMIC_RELEASE);
}

/* A consistent copy of the keys (wipe it after use); 0 or -1. */
static int
tk_read(const struct tls_tickets *tk, struct tk_keys *out)
{
	uint32_t	 s1, s2;
	int		 i;

	for (i = 0; i < TK_READ_TRIES; i++) {
		s1 = __atomic_load_n(&tk->seq, __ATOMIC_ACQUIRE);
		if (s1 & 1) {
			sched_yield();
			continue;
		}
		memcpy(out, (const void *)&tk->k, sizeof(*out));
		__atomic_thread_fence(__ATOMIC_ACQUIRE);
		s2 = __atomic_load_n(&tk->seq, __ATOMIC_RELAXED);
		if (s1 == s2)
			return 0;
	}
	explicit_bzero(out, sizeof(*out));
	log_warnx("tls: ticket keys busy; no ticket");
	return -1;
}

struct tls_tickets *
tls_tickets_create(void)
{
	struct tls_tickets	*tk;

	tk = mmap(NULL, sizeof(*tk), PROT_READ | PROT_WRITE,
	    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (tk == MAP_FAILED) {
		log_warn("tls: mmap ticket keys");
		return NULL;
	}
	/* Never in a core file. */
	if (madvise(tk, sizeof(*tk), MADV_DONTDUMP) == -1)
		log_warn("tls: madvise MADV_DONTDUMP");
	/* Created 0: the first rotate call stamps it with its clock. */
	if (tk_key_new(&tk->k.key[0], 0) == -1) {
		tls_tickets_destroy(tk);
		return NULL;
	}
	tk->k.nkeys = 1;
	return tk;
}

void
tls_tickets_destroy(struct tls_tickets *tk)
{
	if (tk == NULL)
		return;
	explicit_bzero(tk, sizeof(*tk));
	munmap(tk, sizeof(*tk));
}

bool
tls_tickets_rotate(struct tls_tickets *tk, uint64_t now_s,
    unsigned lifetime_s)
{
	struct tk_key	 fresh;
	uint64_t	 created;

	if (tk == NULL || lifetime_s == 0)
		return false;
	created = tk->k.key[0].created;
	if (created == 0 || now_s < created) {
		/* The first call (or a clock that went back) starts the
		 * current key's lifetime. */
		tk_write_begin(tk);
		tk->k.key[0].created = now_s;
		tk_write_end(tk);
		return false;
	}
	if (now_s - created < lifetime_s)
		return false;
	if (tk_key_new(&fresh, now_s) == -1)
		return false;
	tk_write_begin(tk);
	tk->k.key[1] = tk->k.key[0];
	tk->k.key[0] = fresh;
	tk->k.nkeys = 2;
	tk_write_end(tk);
	explicit_bzero(&fresh, sizeof(fresh));
	return true;
}

/* Key the ticket cipher and MAC with k; 0 or -1. */
static int
tk_key_use(const struct tk_key *k, unsigned char *iv, EVP_CIPHER_CTX *cctx,
    EVP_MAC_CTX *hctx, int enc)
{
	OSSL_PARAM	 p[3];

	p[0] = OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY,
	    (void *)k->hmac, sizeof(k->hmac));
	p[1] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST,
	    (char *)"SHA256", 0);
	p[2] = OSSL_PARAM_construct_end();
	if (EVP_CipherInit_ex(cctx, EVP_aes_256_cbc(), NULL, k->aes, iv,
	    enc) != 1 || EVP_MAC_CTX_set_params(hctx, p) != 1)
		return -1;
	return 0;
}

/*
 * SSL_CTX_set_tlsext_ticket_key_evp_cb: encrypt with the current key;
 * decrypt with the key whose name the ticket carries (1, or 2 =
 * "renew"); an unknown name is 0 (a full handshake).
 */
static int
ticket_cb(SSL *ssl, unsigned char *name, unsigned char *iv,
    EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc)
{
	struct tls_server	*t = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
	struct tk_keys		 k;
	unsigned		 i;
	int			 ret = 0;

	if (t == NULL || t->tk == NULL || tk_read(t->tk, &k) == -1)
		return 0;
	if (enc) {
		memcpy(name, k.key[0].name, TK_NAME_LEN);
		if (RAND_bytes(iv, EVP_CIPHER_iv_length(EVP_aes_256_cbc())) ==
		    1 && tk_key_use(&k.key[0], iv, cctx, hctx, 1) == 0)
			ret = 1;
		else
			ret = -1;
	} else {
		for (i = 0; i < k.nkeys && i < 2; i++) {
			if (memcmp(name, k.key[i].name, TK_NAME_LEN) != 0)
				continue;
			/*
			 * 2 ("renew") sends a fresh ticket: for the previous
			 * key, and always in TLS 1.3, where a client uses a
			 * ticket once (RFC 8446 §C.4), so without a new one
			 * every other connection would be a full handshake.
			 */
			ret = tk_key_use(&k.key[i], iv, cctx, hctx, 0) == 0 ?
			    (i == 0 && SSL_version(ssl) != TLS1_3_VERSION ?
			    1 : 2) : -1;
			break;
		}
	}
	explicit_bzero(&k, sizeof(k));
	return ret;
}

/* ---- PEM files ---- */

/* Read path (at most PEM_MAX octets) into *buf (NUL-terminated). */
static int
read_file(const char *path, char **buf, size_t *len, const char **why)
{
	struct stat	 st;
	char		*b;
	size_t		 n = 0;
	ssize_t		 r;
	int		 fd, saved;

	*buf = NULL;
	*why = NULL;
	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY)) == -1)
		return -1;
	if (fstat(fd, &st) == -1) {
		saved = errno;
		close(fd);
		errno = saved;
		return -1;
	}
	if (!S_ISREG(st.st_mode)) {
		close(fd);
		*why = "not a regular file";
		return -1;
	}
	if ((b = malloc(PEM_MAX + 1)) == NULL) {
		saved = errno;
		close(fd);
		errno = saved;
		return -1;
	}
	/* One octet more than allowed tells "too large". */
	while (n <= PEM_MAX) {
		if ((r = read(fd, b + n, PEM_MAX + 1 - n)) == -1 &&
		    errno == EINTR)
			continue;
		if (r <= 0)
			break;
		n += (size_t)r;
	}
	saved = errno;
	close(fd);
	if (r == -1 || n == 0 || n > PEM_MAX) {
		explicit_bzero(b, n);
		free(b);
		errno = saved;
		*why = r == -1 ? NULL : n == 0 ? "empty file" :
		    "larger than 1 MiB";
		return -1;
	}
	b[n] = '\0';
	*buf = b;
	*len = n;
	return 0;
}

static int
read_pem(const struct config *cf, const char *what, const char *path,
    int line, char **buf, size_t *len, char *err, size_t errlen)
{
	const char	*why;

	if (path[0] == '\0') {
		snprintf(err, errlen, "%s:%d: %s is not set", cf->file, line,
		    what);
		return -1;
	}
	if (read_file(path, buf, len, &why) == -1) {
		snprintf(err, errlen, "%s:%d: %s %s: %s", cf->file, line,
		    what, path, why != NULL ? why : strerror(errno));
		return -1;
	}
	return 0;
}

int
tls_pem_read(const struct config *cf, struct tls_pem *pem, char *err,
    size_t errlen)
{
	memset(pem, 0, sizeof(*pem));
	if (read_pem(cf, "cert", cf->tls.cert, cf->tls.cert_line, &pem->cert,
	    &pem->cert_len, err, errlen) == -1)
		return -1;
	if (read_pem(cf, "key", cf->tls.key, cf->tls.key_line, &pem->key,
	    &pem->key_len, err, errlen) == -1) {
		tls_pem_wipe(pem);
		return -1;
	}
	return 0;
}

void
tls_pem_wipe(struct tls_pem *pem)
{
	if (pem->key != NULL) {
		explicit_bzero(pem->key, pem->key_len);
		free(pem->key);
	}
	free(pem->cert);
	memset(pem, 0, sizeof(*pem));
}

/* ---- the context ---- */

/* The OpenSSL error queue's reason, then the queue cleared. */
static const char *
ssl_reason(char *buf, size_t len)
{
	unsigned long	 e = ERR_peek_last_error();
	const char	*r;

	if (e == 0)
		snprintf(buf, len, "unknown error");
	else if ((r = ERR_reason_error_string(e)) != NULL)
		snprintf(buf, len, "%s", r);
	else
		ERR_error_string_n(e, buf, len);
	ERR_clear_error();
	return buf;
}

/* Never prompt for a pass phrase: an encrypted key is an error. */
static int
no_passphrase(char *buf, int size, int rwflag, void *u)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	(void)u;
	return -1;
}

/* The leaf, then the rest of the chain. */
static int
load_chain(SSL_CTX *ctx, const struct config *cf, const struct tls_pem *pem,
    char *err, size_t errlen)
{
	BIO		*bio;
	X509		*x;
	char		 why[200];
	unsigned long	 e;
	int		 rc = -1;

	ERR_clear_error();
	if ((bio = BIO_new_mem_buf(pem->cert, (int)pem->cert_len)) == NULL)
		goto out;
	if ((x = PEM_read_bio_X509(bio, NULL, no_passphrase, NULL)) == NULL)
		goto out;
	if (SSL_CTX_use_certificate(ctx, x) != 1) {
		X509_free(x);
		goto out;
	}
	X509_free(x);
	while ((x = PEM_read_bio_X509(bio, NULL, no_passphrase, NULL)) !=
	    NULL) {
		/* add0: the context owns x from here on. */
		if (SSL_CTX_add0_chain_cert(ctx, x) != 1) {
			X509_free(x);
			goto out;
		}
	}
	/* The end of the text is "no start line"; anything else is bad. */
	e = ERR_peek_last_error();
	if (ERR_GET_LIB(e) == ERR_LIB_PEM &&
	    ERR_GET_REASON(e) == PEM_R_NO_START_LINE) {
		ERR_clear_error();
		rc = 0;
	}
out:
	BIO_free(bio);
	if (rc == -1)
		snprintf(err, errlen, "%s:%d: cert %s: not a PEM certificate "
		    "chain: %s", cf->file, cf->tls.cert_line, cf->tls.cert,
		    ssl_reason(why, sizeof(why)));
	return rc;
}

static int
load_key(SSL_CTX *ctx, const struct config *cf, const struct tls_pem *pem,
    char *err, size_t errlen)
{
	BIO		*bio;
	EVP_PKEY	*pk = NULL;
	char		 why[200];
	int		 rc = -1;

	ERR_clear_error();
	if ((bio = BIO_new_mem_buf(pem->key, (int)pem->key_len)) != NULL)
		pk = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL);
	BIO_free(bio);
	if (pk == NULL) {
		snprintf(err, errlen, "%s:%d: key %s: not a PEM private key "
		    "(or one with a pass phrase): %s", cf->file,
		    cf->tls.key_line, cf->tls.key, ssl_reason(why,
		    sizeof(why)));
		return -1;
	}
	if (SSL_CTX_use_PrivateKey(ctx, pk) == 1 &&
	    SSL_CTX_check_private_key(ctx) == 1)
		rc = 0;
	else
		snprintf(err, errlen, "%s:%d: key %s does not match cert %s: "
		    "%s", cf->file, cf->tls.key_line, cf->tls.key,
		    cf->tls.cert, ssl_reason(why, sizeof(why)));
	EVP_PKEY_free(pk);
	return rc;
}

static int
set_groups(SSL_CTX *ctx, const char *v)
{
	return SSL_CTX_set1_groups_list(ctx, v);
}

/* min_protocol, ciphers, ciphersuites, groups (defaults for ""). */
static int
set_params(SSL_CTX *ctx, const struct config *cf, char *err, size_t errlen)
{
	const struct config_tls_set *ts = &cf->tls;
	const struct {
		const char	*key, *value, *def;
		int		 line;
		int		 (*set)(SSL_CTX *, const char *);
	} lists[3] = {
		{ "ciphers", ts->ciphers, DEF_CIPHERS, ts->ciphers_line,
		    SSL_CTX_set_cipher_list },
		{ "ciphersuites", ts->ciphersuites, DEF_SUITES,
		    ts->ciphersuites_line, SSL_CTX_set_ciphersuites },
		{ "groups", ts->groups, DEF_GROUPS, ts->groups_line,
		    set_groups },
	};
	const char	*v;
	char		 why[200];
	int		 minv, i;

	v = ts->min_protocol;
	if (v[0] == '\0' || strcmp(v, "TLSv1.2") == 0)
		minv = TLS1_2_VERSION;
	else if (strcmp(v, "TLSv1.3") == 0)
		minv = TLS1_3_VERSION;
	else {
		/* TLS 1.0 and 1.1 are never accepted (RFC 8996). */
		snprintf(err, errlen, "%s:%d: min_protocol %s: must be "
		    "TLSv1.2 or TLSv1.3", cf->file, ts->min_protocol_line, v);
		return -1;
	}
	if (SSL_CTX_set_min_proto_version(ctx, minv) != 1 ||
	    SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) != 1) {
		snprintf(err, errlen, "%s:%d: min_protocol %s: %s", cf->file,
		    ts->min_protocol_line, v, ssl_reason(why, sizeof(why)));
		return -1;
	}
	for (i = 0; i < 3; i++) {
		v = lists[i].value[0] != '\0' ? lists[i].value : lists[i].def;
		if (lists[i].set(ctx, v) != 1) {
			snprintf(err, errlen, "%s:%d: %s %s: %s", cf->file,
			    lists[i].line, lists[i].key, v, ssl_reason(why,
			    sizeof(why)));
			return -1;
		}
	}
	return 0;
}

/* Options and modes; sessions resume by shared ticket only. */
static void
set_options(struct tls_server *t, const struct config *cf)
{
	SSL_CTX		*ctx = t->ctx;
	uint64_t	 op = SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION;

	if (cf->tls.ktls)
		op |= SSL_OP_ENABLE_KTLS;
	if (t->tk == NULL || cf->tls.ticket_lifetime_s == 0)
		op |= SSL_OP_NO_TICKET;
	SSL_CTX_set_options(ctx, op);
	/* The client's cipher order (Mozilla intermediate). */
	SSL_CTX_clear_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE);
	/* Partial writes: conn's send loop resumes where a record ended.
	 * Release buffers: an idle session holds no 16 KiB buffers. */
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
	    SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
	/* One read(2) per command, not two (record header, then body).
	 * conn always asks SSL_read before it polls, so octets OpenSSL
	 * read ahead are never waited for. */
	SSL_CTX_set_read_ahead(ctx, 1);
	SSL_CTX_set_session_id_context(ctx, (const unsigned char *)SID_CTX,
	    sizeof(SID_CTX) - 1);
	/* A per-process cache would only ever hit in the one worker. */
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	if (op & SSL_OP_NO_TICKET) {
		SSL_CTX_set_num_tickets(ctx, 0);
		return;
	}
	SSL_CTX_set_num_tickets(ctx, 1);
	SSL_CTX_set_timeout(ctx, (long)cf->tls.ticket_lifetime_s);
	SSL_CTX_set_app_data(ctx, t);
	SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_cb);
}

/* "CN=localhost sha256=AB:CD:..." of the leaf. */
static void
describe_leaf(struct tls_server *t)
{
	X509		*x = SSL_CTX_get0_certificate(t->ctx);
	unsigned char	 md[EVP_MAX_MD_SIZE];
	unsigned int	 mdlen = 0, i;
	char		 cn[128] = "?", fp[3 * EVP_MAX_MD_SIZE + 1] = "";
	size_t		 o = 0;

	if (x == NULL)
		return;
	if (X509_NAME_get_text_by_NID(X509_get_subject_name(x),
	    NID_commonName, cn, sizeof(cn)) < 0)
		snprintf(cn, sizeof(cn), "?");
	if (X509_digest(x, EVP_sha256(), md, &mdlen) == 1)
		for (i = 0; i < mdlen; i++)
			o += (size_t)snprintf(fp + o, sizeof(fp) - o, "%s%02X",
			    i > 0 ? ":" : "", md[i]);
	snprintf(t->desc, sizeof(t->desc), "CN=%s sha256=%s", cn, fp);
}

struct tls_server *
tls_server_new(const struct config *cf, const struct tls_pem *pem,
    struct tls_tickets *tk, char *err, size_t errlen)
{
	struct tls_server	*t;
	char			 why[200];

	if ((t = calloc(1, sizeof(*t))) == NULL) {
		snprintf(err, errlen, "%s:%d: %s", cf->file,
		    cf->tls.cert_line, strerror(errno));
		return NULL;
	}
	t->tk = tk;
	snprintf(t->desc, sizeof(t->desc), "-");
	ERR_clear_error();
	if ((t->ctx = SSL_CTX_new(TLS_server_method())) == NULL) {
		snprintf(err, errlen, "%s:%d: SSL_CTX_new: %s", cf->file,
		    cf->tls.cert_line, ssl_reason(why, sizeof(why)));
		free(t);
		return NULL;
	}
	if (set_params(t->ctx, cf, err, errlen) == -1 ||
	    load_chain(t->ctx, cf, pem, err, errlen) == -1 ||
	    load_key(t->ctx, cf, pem, err, errlen) == -1) {
		tls_server_free(t);
		return NULL;
	}
	set_options(t, cf);
	describe_leaf(t);
	return t;
}

void
tls_server_free(struct tls_server *t)
{
	if (t == NULL)
		return;
	SSL_CTX_free(t->ctx);
	free(t);
}

struct ssl_st *
tls_server_ssl(struct tls_server *t)
{
	SSL	*ssl;
	char	 why[200];

	t->refusal[0] = '\0';
	ERR_clear_error();
	if ((ssl = SSL_new(t->ctx)) == NULL)
		log_warnx("tls: SSL_new: %s", ssl_reason(why, sizeof(why)));
	return ssl;
}

void
tls_server_describe(const struct tls_server *t, char *buf, size_t len)
{
	snprintf(buf, len, "%s", t != NULL ? t->desc : "-");
}

/* ---- the punt server (issue 11, docs/punt-protocol.md §1) ---- */

/* No resumption (it would skip the client certificate check). */
#define PUNT_SID_CTX	"sdps-punt"

/* The DNS subjectAltNames of x into names[] (pointers into the
 * returned stack, which the caller frees); how many.  A name holding a
 * NUL octet is skipped (it could match a prefix). */
static GENERAL_NAMES *
dns_names(X509 *x, const char **names, int *lens, int max, int *n)
{
	GENERAL_NAMES		*gens;
	const GENERAL_NAME	*g;
	int			 i, len;

	*n = 0;
	if ((gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL,
	    NULL)) == NULL)
		return NULL;
	for (i = 0; i < sk_GENERAL_NAME_num(gens) && *n < max; i++) {
		g = sk_GENERAL_NAME_value(gens, i);
		if (g->type != GEN_DNS)
			continue;
		len = ASN1_STRING_length(g->d.dNSName);
		names[*n] = (const char *)ASN1_STRING_get0_data(g->d.dNSName);
		if (len <= 0 || memchr(names[*n], '\0', (size_t)len) != NULL)
			continue;
		lens[(*n)++] = len;
	}
	return gens;
}

/* The subject CN of x into buf, or "" (none, or one holding a NUL). */
static void
leaf_cn(X509 *x, char *buf, size_t len)
{
	int	 n;

	buf[0] = '\0';
	n = X509_NAME_get_text_by_NID(X509_get_subject_name(x),
	    NID_commonName, buf, (int)len);
	if (n < 0 || strlen(buf) != (size_t)n)
		buf[0] = '\0';
}

/* "CN=fe1 DNS=fe1.example.net,fe1" of x, for log lines. */
static void
leaf_identity(X509 *x, char *buf, size_t len)
{
	const char	*names[8];
	int		 lens[8], n = 0, i;
	GENERAL_NAMES	*gens;
	char		 cn[128];
	size_t		 o;

	if (x == NULL) {
		snprintf(buf, len, "(no certificate)");
		return;
	}
	leaf_cn(x, cn, sizeof(cn));
	o = (size_t)snprintf(buf, len, "CN=%s", cn[0] != '\0' ? cn : "-");
	gens = dns_names(x, names, lens, 8, &n);
	for (i = 0; i < n && o < len; i++)
		o += (size_t)snprintf(buf + o, len - o, "%s%.*s",
		    i == 0 ? " DNS=" : ",", lens[i], names[i]);
	GENERAL_NAMES_free(gens);
	/* Names come from the peer: nothing but printable ASCII in logs. */
	for (o = 0; buf[o] != '\0'; o++)
		if ((unsigned char)buf[o] < ' ' || (unsigned char)buf[o] > '~')
			buf[o] = '?';
}

/* Is word (wlen octets) one of the space-separated names of list? */
static bool
allow_has(const char *list, const char *word, size_t wlen)
{
	const char	*p = list;
	size_t		 n;

	while (*p != '\0') {
		p += strspn(p, " \t");
		n = strcspn(p, " \t");
		if (n > 0 && n == wlen && strncasecmp(p, word, n) == 0)
			return true;
		p += n;
	}
	return false;
}

/*
 * The allow-list rule: the DNS subjectAltNames when the certificate has
 * any (as RFC 6125 §6.4.4 prefers them to the CN), else its CN.  The
 * matching name into who.
 */
static bool
leaf_allowed(const char *allow, X509 *x, char *who, size_t wholen)
{
	const char	*names[32];
	int		 lens[32], n = 0, i;
	GENERAL_NAMES	*gens;
	char		 cn[128];
	bool		 ok = false;

	who[0] = '\0';
	gens = dns_names(x, names, lens, 32, &n);
	for (i = 0; i < n && !ok; i++)
		if (allow_has(allow, names[i], (size_t)lens[i])) {
			snprintf(who, wholen, "%.*s", lens[i], names[i]);
			ok = true;
		}
	GENERAL_NAMES_free(gens);
	if (n > 0 || ok)
		return ok;
	leaf_cn(x, cn, sizeof(cn));
	if (cn[0] != '\0' && allow_has(allow, cn, strlen(cn))) {
		snprintf(who, wholen, "%s", cn);
		return true;
	}
	return false;
}

/*
 * The verify callback: OpenSSL's chain verdict, then, at the leaf, the
 * allow-list, so a front end that is not on it fails the handshake
 * (the peer never reaches a command).  The first reason is kept for
 * tls_punt_refusal: the session logs it with the peer's address.
 */
static int
punt_verify_cb(int ok, X509_STORE_CTX *xs)
{
	SSL			*ssl;
	struct tls_server	*t = NULL;
	X509			*leaf = X509_STORE_CTX_get0_cert(xs);
	char			 id[400], who[256];

	ssl = X509_STORE_CTX_get_ex_data(xs,
	    SSL_get_ex_data_X509_STORE_CTX_idx());
	if (ssl == NULL ||
	    (t = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl))) == NULL)
		return 0;
	if (!ok) {
		if (t->refusal[0] == '\0') {
			leaf_identity(leaf, id, sizeof(id));
			snprintf(t->refusal, sizeof(t->refusal), "client %s: "
			    "%s", id, X509_verify_cert_error_string(
			    X509_STORE_CTX_get_error(xs)));
		}
		return 0;
	}
	if (X509_STORE_CTX_get_error_depth(xs) != 0)
		return 1;
	if (leaf_allowed(t->allow, leaf, who, sizeof(who)))
		return 1;
	X509_STORE_CTX_set_error(xs, X509_V_ERR_APPLICATION_VERIFICATION);
	leaf_identity(leaf, id, sizeof(id));
	snprintf(t->refusal, sizeof(t->refusal), "client %s: not in "
	    "[punt_server] allow", id);
	return 0;
}

/* The CA the front ends' certificates must chain to; 0 or -1 (err). */
static int
punt_load_ca(SSL_CTX *ctx, const struct config *cf, char *err,
    size_t errlen)
{
	STACK_OF(X509_NAME)	*names;
	char			 why[200];

	ERR_clear_error();
	if (SSL_CTX_load_verify_locations(ctx, cf->ps_ca, NULL) != 1) {
		snprintf(err, errlen, "%s:0: [punt_server] ca %s: %s",
		    cf->file, cf->ps_ca, ssl_reason(why, sizeof(why)));
		return -1;
	}
	/* Tells a client with several certificates which one to send. */
	if ((names = SSL_load_client_CA_file(cf->ps_ca)) != NULL)
		SSL_CTX_set_client_CA_list(ctx, names);
	ERR_clear_error();
	return 0;
}

struct tls_server *
tls_punt_server_new(const struct config *cf, const struct tls_pem *pem,
    char *err, size_t errlen)
{
	struct tls_server	*t;
	uint64_t		 op;
	char			 why[200];

	if ((t = calloc(1, sizeof(*t))) == NULL) {
		snprintf(err, errlen, "%s:0: %s", cf->file, strerror(errno));
		return NULL;
	}
	snprintf(t->allow, sizeof(t->allow), "%s", cf->ps_allow);
	snprintf(t->desc, sizeof(t->desc), "-");
	ERR_clear_error();
	if ((t->ctx = SSL_CTX_new(TLS_server_method())) == NULL) {
		snprintf(err, errlen, "%s:0: SSL_CTX_new: %s", cf->file,
		    ssl_reason(why, sizeof(why)));
		free(t);
		return NULL;
	}
	/* [tls] ciphersuites and groups apply; the floor is TLS 1.3
	 * whatever min_protocol says (the link accepts nothing older). */
	if (set_params(t->ctx, cf, err, errlen) == -1 ||
	    SSL_CTX_set_min_proto_version(t->ctx, TLS1_3_VERSION) != 1 ||
	    load_chain(t->ctx, cf, pem, err, errlen) == -1 ||
	    load_key(t->ctx, cf, pem, err, errlen) == -1 ||
	    punt_load_ca(t->ctx, cf, err, errlen) == -1) {
		tls_server_free(t);
		return NULL;
	}
	op = SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
	    SSL_OP_NO_TICKET;
	if (cf->tls.ktls)
		op |= SSL_OP_ENABLE_KTLS;
	SSL_CTX_set_options(t->ctx, op);
	SSL_CTX_set_mode(t->ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
	    SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
	SSL_CTX_set_read_ahead(t->ctx, 1);
	SSL_CTX_set_session_id_context(t->ctx,
	    (const unsigned char *)PUNT_SID_CTX, sizeof(PUNT_SID_CTX) - 1);
	SSL_CTX_set_session_cache_mode(t->ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_num_tickets(t->ctx, 0);
	SSL_CTX_set_app_data(t->ctx, t);
	SSL_CTX_set_verify(t->ctx, SSL_VERIFY_PEER |
	    SSL_VERIFY_FAIL_IF_NO_PEER_CERT, punt_verify_cb);
	SSL_CTX_set_verify_depth(t->ctx, 4);
	describe_leaf(t);
	return t;
}

const char *
tls_punt_refusal(const struct tls_server *t)
{
	return t->refusal;
}

void
tls_peer_identity(struct ssl_st *ssl, char *buf, size_t len)
{
	leaf_identity(SSL_get0_peer_certificate(ssl), buf, len);
}
