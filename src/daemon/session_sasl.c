/*
 * session_sasl: AUTH (RFC 5034) with the PLAIN (RFC 4616) and LOGIN
 * mechanisms, for the AUTHORIZATION state (issue 10).  The identity is
 * parsed as USER's argument is (session_set_user) and the password takes
 * PASS's path (session_password): the same throttle, LOGIN-DELAY, auth
 * cache, hashing gate, failure delay and log lines.
 *
 * What is refused where (docs/notes/h-tls-session.md):
 * - the cleartext policy, before anything is read: -ERR [AUTH], as USER;
 * - a malformed response (bad base64, NULs in the wrong place, an empty
 *   identity or password, an invalid name, a foreign authzid) or a
 *   cancel: plain -ERR, a bad command; no password was looked at, so it
 *   is no auth failure and nothing is charged to the throttle;
 * - a wrong password: an auth failure, exactly as PASS.
 */
#include <sys/types.h>

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "sdps/auth.h"
#include "sdps/conn.h"
#include "sdps/util.h"
#include "session_int.h"

/*
 * RFC 5034 §4: the AUTH command line, initial response included, keeps
 * RFC 2449's 255 octets (a client with more sends the response after
 * the empty challenge instead), but a response to a challenge may be as
 * long as the mechanism needs.  PLAIN's largest meaningful one is two
 * names (USER's line at most) and a password (PASS's line at most):
 * under 800 octets, 1068 in base64.  2048 leaves room and stays well
 * inside conn's 4 KiB buffer.
 */
#define SASL_LINE_MAX	2048
#define SASL_DEC_MAX	(SASL_LINE_MAX / 4 * 3)

typedef enum cmd_res sasl_fn(struct session *, const char *ir);

static sasl_fn	sasl_plain, sasl_login;

static const struct {
	const char	*name;
	sasl_fn		*fn;
} mechs[] = {
	{ "PLAIN", sasl_plain },
	{ "LOGIN", sasl_login },
};

const char *
sasl_mech_name(size_t i)
{
	return i < NITEMS(mechs) ? mechs[i].name : NULL;
}

/* ---- base64 (RFC 4648 §4), strict ---- */

static int
b64_val(unsigned char ch)
{
	if (ch >= 'A' && ch <= 'Z')
		return ch - 'A';
	if (ch >= 'a' && ch <= 'z')
		return ch - 'a' + 26;
	if (ch >= '0' && ch <= '9')
		return ch - '0' + 52;
	if (ch == '+')
		return 62;
	if (ch == '/')
		return 63;
	return -1;
}

int
sasl_b64_decode(const char *in, size_t inlen, unsigned char *out,
    size_t outcap, size_t *outlen)
{
	unsigned	 v[4];
	size_t		 i, n = 0;
	int		 k, pad, x;

	if (inlen % 4 != 0)
		return -1;
	for (i = 0; i < inlen; i += 4) {
		pad = 0;
		for (k = 0; k < 4; k++) {
			if (in[i + k] == '=' && i + 4 == inlen && k >= 2) {
				pad++;
				v[k] = 0;
				continue;
			}
			/* A character after padding is not padding. */
			if (pad > 0 || (x = b64_val((unsigned char)
			    in[i + k])) == -1)
				return -1;
			v[k] = (unsigned)x;
		}
		/* Canonical only: the bits padding drops must be zero. */
		if ((pad == 1 && (v[2] & 0x03) != 0) ||
		    (pad == 2 && (v[1] & 0x0f) != 0))
			return -1;
		if (n + 3 - (size_t)pad > outcap)
			return -1;
		out[n++] = (unsigned char)(v[0] << 2 | v[1] >> 4);
		if (pad < 2)
			out[n++] = (unsigned char)((v[1] & 0x0f) << 4 |
			    v[2] >> 2);
		if (pad < 1)
			out[n++] = (unsigned char)((v[2] & 0x03) << 6 | v[3]);
	}
	out[n] = '\0';
	*outlen = n;
	return 0;
}

/* ---- PLAIN (RFC 4616) ---- */

enum sasl_plain_res
sasl_plain_parse(char *buf, size_t len, const char **authzid,
    const char **authcid, char **pw, size_t *pwlen)
{
	char	*nul1, *nul2;

	if ((nul1 = memchr(buf, '\0', len)) == NULL ||
	    (nul2 = memchr(nul1 + 1, '\0', len - (size_t)(nul1 + 1 - buf))) ==
	    NULL || memchr(nul2 + 1, '\0', len - (size_t)(nul2 + 1 - buf)) !=
	    NULL)
		return SASL_PLAIN_NULS;
	*authzid = buf;
	*authcid = nul1 + 1;
	*pw = nul2 + 1;
	*pwlen = len - (size_t)(nul2 + 1 - buf);
	if (**authcid == '\0')
		return SASL_PLAIN_NO_AUTHCID;
	if (*pwlen == 0)
		return SASL_PLAIN_NO_PASSWORD;
	/* No proxy logins: acting as another identity needs a policy
	 * sdps does not have. */
	if (**authzid != '\0' && strcmp(*authzid, *authcid) != 0)
		return SASL_PLAIN_AUTHZID;
	return SASL_PLAIN_OK;
}

/* ---- the exchange ---- */

/*
 * Decode one response (the initial response or a continuation line) into
 * dec, wiping the base64 text.  "=" is an empty initial response (RFC
 * 5034 §4).  0, or -1 with the -ERR sent (*res).
 */
static int
sasl_decode(struct session *s, char *b64, bool initial, unsigned char *dec,
    size_t *declen, enum cmd_res *res)
{
	size_t	 len = strlen(b64);
	int	 rc;

	if (initial && strcmp(b64, "=") == 0) {
		dec[0] = '\0';
		*declen = 0;
		rc = 0;
	} else
		rc = sasl_b64_decode(b64, len, dec, SASL_DEC_MAX, declen);
	explicit_bzero(b64, len);
	if (rc == -1)
		*res = session_err(s, NULL, "invalid base64 in response");
	return rc;
}

/*
 * Send a challenge ("+ " and its base64) and read the response line
 * into dec.  0, or -1 with *res the outcome (a cancel "*", a bad or too
 * long line, or the peer gone).
 */
static int
sasl_step(struct session *s, const char *challenge, unsigned char *dec,
    size_t *declen, enum cmd_res *res)
{
	enum conn_res	 r;
	char		*line;
	size_t		 len = 0;

	conn_printf(s->c, "+ %s\r\n", challenge);
	conn_set_line_max(s->c, SASL_LINE_MAX);
	r = conn_read_line(s->c, &line, &len);
	conn_set_line_max(s->c, POP3_LINE_MAX);
	switch (r) {
	case CONN_OK:
		break;
	case CONN_TOO_LONG:
		*res = session_err(s, NULL, "response too long");
		return -1;
	case CONN_NUL:
		*res = session_err(s, NULL, "NUL octet in response");
		return -1;
	case CONN_EOF:
	case CONN_TIMEOUT:
	case CONN_KILLED:
	case CONN_ERR:
		s->how = session_how_from_io(r);
		*res = CMD_IOFAIL;
		return -1;
	}
	if (strcmp(line, "*") == 0) {
		/* RFC 5034 §4: a cancel is answered -ERR. */
		*res = session_err(s, NULL, "AUTH cancelled");
		return -1;
	}
	return sasl_decode(s, line, false, dec, declen, res);
}

/* The response to the first challenge, or the initial response. */
static int
sasl_first(struct session *s, const char *ir, const char *challenge,
    unsigned char *dec, size_t *declen, enum cmd_res *res)
{
	char	 b64[POP3_LINE_MAX];

	if (ir == NULL)
		return sasl_step(s, challenge, dec, declen, res);
	snprintf(b64, sizeof(b64), "%s", ir);
	return sasl_decode(s, b64, true, dec, declen, res);
}

/* The authentication identity, as USER's argument. */
static int
sasl_user(struct session *s, const char *authcid, size_t len,
    enum cmd_res *res)
{
	if (strlen(authcid) != len || session_set_user(s, authcid) == -1) {
		*res = session_err(s, NULL, "invalid user name");
		return -1;
	}
	return 0;
}

static const char *
plain_reason(enum sasl_plain_res pr)
{
	switch (pr) {
	case SASL_PLAIN_OK:
		break;
	case SASL_PLAIN_NULS:
		return "malformed PLAIN response";
	case SASL_PLAIN_NO_AUTHCID:
		return "empty user name";
	case SASL_PLAIN_NO_PASSWORD:
		return "empty password";
	case SASL_PLAIN_AUTHZID:
		return "authorization identity must be empty or the user name";
	}
	return "malformed PLAIN response";
}

static enum cmd_res
sasl_plain(struct session *s, const char *ir)
{
	unsigned char		 dec[SASL_DEC_MAX + 1];
	const char		*authzid, *authcid;
	char			*pw;
	size_t			 declen, pwlen;
	enum sasl_plain_res	 pr;
	enum cmd_res		 res;

	if (sasl_first(s, ir, "", dec, &declen, &res) == -1)
		return res;
	pr = sasl_plain_parse((char *)dec, declen, &authzid, &authcid, &pw,
	    &pwlen);
	if (pr != SASL_PLAIN_OK)
		res = session_err(s, NULL, "%s", plain_reason(pr));
	else if (sasl_user(s, authcid, strlen(authcid), &res) == 0) {
		s->mech = "plain";
		res = session_password(s, pw, pwlen);
	}
	explicit_bzero(dec, sizeof(dec));
	return res;
}

/*
 * LOGIN (draft-murchison-sasl-login): "Username:" and "Password:" as
 * challenges; an initial response is the user name.
 */
static enum cmd_res
sasl_login(struct session *s, const char *ir)
{
	unsigned char	 dec[SASL_DEC_MAX + 1];
	size_t		 declen;
	enum cmd_res	 res;

	if (sasl_first(s, ir, "VXNlcm5hbWU6", dec, &declen, &res) == -1 ||
	    sasl_user(s, (char *)dec, declen, &res) == -1)
		goto out;
	if (sasl_step(s, "UGFzc3dvcmQ6", dec, &declen, &res) == -1)
		goto out;
	if (declen == 0 || strlen((char *)dec) != declen)
		res = session_err(s, NULL, declen == 0 ? "empty password" :
		    "NUL octet in password");
	else {
		s->mech = "login";
		res = session_password(s, (char *)dec, declen);
	}
out:
	explicit_bzero(dec, sizeof(dec));
	return res;
}

/* AUTH without an argument (RFC 1734, Outlook): the mechanisms usable. */
static enum cmd_res
auth_list(struct session *s)
{
	size_t	 i;

	conn_printf(s->c, "+OK SASL mechanisms follow\r\n");
	if (session_cleartext_ok(s))
		for (i = 0; i < NITEMS(mechs); i++)
			conn_printf(s->c, "%s\r\n", mechs[i].name);
	conn_ml_end(s->c);
	return CMD_REPLIED;
}

enum cmd_res
cmd_auth(struct session *s, struct conn_args *a)
{
	size_t	 i;

	if (a->argc == 0)
		return auth_list(s);
	if (!session_cleartext_ok(s))
		return session_cleartext_refused(s);
	/* Even one that fails: STLS is refused after it (RFC 2595 §4). */
	s->auth_tried = true;
	s->have_user = false;
	for (i = 0; i < NITEMS(mechs); i++)
		if (strcasecmp(a->argv[0], mechs[i].name) == 0)
			return mechs[i].fn(s, a->argc > 1 ? a->argv[1] : NULL);
	return session_err(s, NULL, "unsupported SASL mechanism");
}
