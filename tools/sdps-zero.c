/*
 * sdps-zero: the zero-work POP3 responder (issues 10 and 12), the ceiling
 * that sdps-bench and loopback allow on this machine.
 *
 * One process (or -w copies forked after setup, sharing the listeners and
 * so the TLS ticket keys), one epoll loop, the whole corpus in memory in
 * wire form (CRLF, dot-stuffed, status line in front), so every command is
 * answered at once: USER/PASS/STAT/LIST/UIDL/RETR/TOP/DELE/NOOP/RSET/CAPA/
 * QUIT.  Nothing is stored, nothing is logged, DELE lasts for the session.
 * TLS: an implicit-TLS listener (-P) and STLS on the plain one, with the
 * certificate given; a RETR is one SSL_write per record of the stored
 * message, which is the OpenSSL work any server must do per byte, and
 * nothing more.  Corpus layout as tools/bench-compare writes it:
 * MSGDIR/HOST/K.eml (K = 0, 1, ...; LF line ends) and credential files
 * with lines "user password".
 */
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/wait.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#define LINE_MAX_IN	512		/* RFC 2449: 255 octets a command */
#define NSEG		4
#define TLS_CHUNK	(256 * 1024)	/* one SSL_write at most */

struct msg {
	char	*wire;		/* "+OK N octets\r\n" body ".\r\n" */
	size_t	 wlen;
	size_t	 status_len;	/* the "+OK ..." line */
	size_t	 hdr_end;	/* offset just past the blank line */
	uint64_t octets;	/* RFC 1939 size: CRLF, unstuffed */
	char	 uid[24];
};

struct user {
	char	*name;
	char	*pass;
	struct msg *msgs;
	size_t	 nmsgs;
	uint64_t octets;
	char	*list, *uidl;	/* the full multi-line replies */
	size_t	 list_len, uidl_len;
};

struct seg {
	const char *p;
	size_t	 len;
};

enum cstate { CS_HANDSHAKE, CS_AUTH, CS_TRANS, CS_CLOSING };

struct client {
	int		 fd;
	SSL		*ssl;
	enum cstate	 st;
	uint32_t	 ev;
	struct user	*user;		/* USER seen (NULL: unknown name) */
	bool		 user_seen;
	bool		 stls_next;	/* begin TLS once the +OK is out */
	bool		 implicit;	/* TLS from the first octet: greet after */
	uint8_t		*deleted;	/* per message, NULL until DELE */
	size_t		 ndeleted;
	char		 in[LINE_MAX_IN];
	size_t		 inlen;
	struct seg	 seg[NSEG];
	int		 nseg, segi;
	char		 line[256];	/* generated status lines */
	char		*dyn;		/* generated listing (after DELE) */
};

static struct {
	struct user	*users;
	size_t		 nusers;
	SSL_CTX		*ctx;
	int		 epfd;
	int		 lfd_plain, lfd_tls;
	int		 verbose;
} g = { .lfd_plain = -1, .lfd_tls = -1 };

static const char CAPA_STLS[] = "+OK\r\nUSER\r\nUIDL\r\nTOP\r\n"
    "PIPELINING\r\nSTLS\r\n.\r\n";
#define CAPA_LEN (sizeof(CAPA_STLS) - 1)
#define STLS_LEN 6			/* "STLS\r\n" */
static const char DOT[] = ".\r\n";

static void fatalx(const char *, ...)
    __attribute__((__format__(__printf__, 1, 2), __noreturn__));
static void reply(struct client *, const char *, ...)
    __attribute__((__format__(__printf__, 2, 3)));

static void
fatalx(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("sdps-zero: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(1);
}

static void *
xmalloc(size_t n)
{
	void	*p;

	if ((p = malloc(n ? n : 1)) == NULL)
		fatalx("out of memory");
	return p;
}

static char *
xstrdup(const char *s)
{
	char	*p = strdup(s);

	if (p == NULL)
		fatalx("out of memory");
	return p;
}

static void
usage(void)
{
	fprintf(stderr,
	    "usage: sdps-zero -m msgdir -f credentials [-f ...] [-h addr] "
	    "[-p port]\n"
	    "                 [-P tls_port -C cert_chain -K key] [-w workers] "
	    "[-v]\n"
	    "  msgdir/HOST/K.eml (K = 0, 1, ...), credentials: lines "
	    "\"user password\"\n"
	    "  -P: implicit TLS; with -C/-K the plain port offers STLS too\n"
	    "  prints \"ready port=N tls_port=M\" once listening\n");
	exit(2);
}

/* ------------------------------------------------------------ corpus */

static char *
read_file(const char *path, size_t *len)
{
	struct stat sb;
	char	*buf;
	ssize_t	 r;
	size_t	 off = 0;
	int	 fd;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1)
		return NULL;
	if (fstat(fd, &sb) == -1)
		fatalx("%s: %s", path, strerror(errno));
	buf = xmalloc((size_t)sb.st_size + 1);
	while (off < (size_t)sb.st_size) {
		r = read(fd, buf + off, (size_t)sb.st_size - off);
		if (r <= 0)
			fatalx("%s: short read", path);
		off += (size_t)r;
	}
	close(fd);
	*len = off;
	return buf;
}

/* The message as RETR sends it: status line, CRLF, dot-stuffed, ".". */
static void
msg_render(struct msg *m, const char *src, size_t len, unsigned k)
{
	size_t	 i, o, nl = 0, stuffed = 0, octets;
	bool	 bol = true, in_hdr = true;
	char	*w;

	for (i = 0; i < len; i++) {
		if (bol && src[i] == '.')
			stuffed++;
		bol = src[i] == '\n';
		nl += bol;
	}
	/* Every LF becomes CRLF, and a last line without one gets one. */
	octets = len + nl + (len > 0 && src[len - 1] != '\n' ? 2 : 0);
	w = xmalloc(64 + octets + stuffed + 3);
	o = (size_t)snprintf(w, 64, "+OK %llu octets\r\n",
	    (unsigned long long)octets);
	m->status_len = o;
	m->hdr_end = 0;
	bol = true;
	for (i = 0; i < len; i++) {
		if (bol && src[i] == '.')
			w[o++] = '.';
		if (src[i] == '\n') {
			if (in_hdr && bol) {
				in_hdr = false;
				m->hdr_end = o + 2;	/* past this CRLF */
			}
			w[o++] = '\r';
		}
		w[o++] = src[i];
		bol = src[i] == '\n';
	}
	if (!bol) {
		w[o++] = '\r';
		w[o++] = '\n';
	}
	if (m->hdr_end == 0)
		m->hdr_end = o;
	memcpy(w + o, DOT, 3);
	m->wire = w;
	m->wlen = o + 3;
	m->octets = octets;
	snprintf(m->uid, sizeof(m->uid), "%08x%08x", 1700000000u + k, k);
}

/* The full LIST and UIDL replies of u, built once. */
static void
user_listings(struct user *u)
{
	size_t	 cap = 64 + u->nmsgs * 48, i, o;

	u->list = xmalloc(cap);
	u->uidl = xmalloc(cap);
	o = (size_t)snprintf(u->list, cap, "+OK %zu messages (%llu "
	    "octets)\r\n", u->nmsgs, (unsigned long long)u->octets);
	for (i = 0; i < u->nmsgs; i++)
		o += (size_t)snprintf(u->list + o, cap - o, "%zu %llu\r\n",
		    i + 1, (unsigned long long)u->msgs[i].octets);
	memcpy(u->list + o, DOT, 3);
	u->list_len = o + 3;
	o = (size_t)snprintf(u->uidl, cap, "+OK\r\n");
	for (i = 0; i < u->nmsgs; i++)
		o += (size_t)snprintf(u->uidl + o, cap - o, "%zu %s\r\n",
		    i + 1, u->msgs[i].uid);
	memcpy(u->uidl + o, DOT, 3);
	u->uidl_len = o + 3;
}

static void
user_load(struct user *u, const char *msgdir)
{
	char	 path[4096];
	char	*src;
	size_t	 len, cap = 0;

	for (;;) {
		snprintf(path, sizeof(path), "%s/%s/%zu.eml", msgdir, u->name,
		    u->nmsgs);
		if ((src = read_file(path, &len)) == NULL)
			break;
		if (u->nmsgs == cap) {
			cap = cap ? cap * 2 : 32;
			u->msgs = realloc(u->msgs, cap * sizeof(*u->msgs));
			if (u->msgs == NULL)
				fatalx("out of memory");
		}
		msg_render(&u->msgs[u->nmsgs], src, len, (unsigned)u->nmsgs);
		u->octets += u->msgs[u->nmsgs].octets;
		u->nmsgs++;
		free(src);
	}
	user_listings(u);
}

static int
user_cmp(const void *a, const void *b)
{
	return strcmp(((const struct user *)a)->name,
	    ((const struct user *)b)->name);
}

static void
load_creds(const char *path)
{
	FILE	*fp;
	char	*line = NULL, *sp;
	size_t	 cap = 0;
	ssize_t	 len;
	static size_t alloc;

	if ((fp = fopen(path, "r")) == NULL)
		fatalx("%s: %s", path, strerror(errno));
	while ((len = getline(&line, &cap, fp)) != -1) {
		while (len > 0 && (line[len - 1] == '\n' ||
		    line[len - 1] == '\r'))
			line[--len] = '\0';
		if (len == 0 || line[0] == '#')
			continue;
		if ((sp = strchr(line, ' ')) == NULL || sp == line)
			fatalx("%s: line without \"user password\"", path);
		*sp = '\0';
		if (g.nusers == alloc) {
			alloc = alloc ? alloc * 2 : 256;
			g.users = realloc(g.users, alloc * sizeof(*g.users));
			if (g.users == NULL)
				fatalx("out of memory");
		}
		memset(&g.users[g.nusers], 0, sizeof(g.users[0]));
		g.users[g.nusers].name = xstrdup(line);
		g.users[g.nusers].pass = xstrdup(sp + 1);
		g.nusers++;
	}
	free(line);
	fclose(fp);
}

static struct user *
user_find(const char *name)
{
	struct user key;

	key.name = (char *)(uintptr_t)name;
	return bsearch(&key, g.users, g.nusers, sizeof(*g.users), user_cmp);
}

/* ------------------------------------------------------------ output */

static void
client_free(struct client *c)
{
	if (c->ssl != NULL) {
		SSL_set_shutdown(c->ssl, SSL_SENT_SHUTDOWN |
		    SSL_RECEIVED_SHUTDOWN);
		SSL_free(c->ssl);
	}
	epoll_ctl(g.epfd, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	free(c->deleted);
	free(c->dyn);
	free(c);
}

static void
want(struct client *c, uint32_t ev)
{
	struct epoll_event e;

	if (c->ev == ev)
		return;
	c->ev = ev;
	memset(&e, 0, sizeof(e));
	e.events = ev;
	e.data.ptr = c;
	epoll_ctl(g.epfd, EPOLL_CTL_MOD, c->fd, &e);
}

static void
push(struct client *c, const char *p, size_t len)
{
	if (c->nseg == NSEG)
		fatalx("too many segments");
	c->seg[c->nseg].p = p;
	c->seg[c->nseg].len = len;
	c->nseg++;
}

/* A generated status line (in c->line, so one per reply). */
static void
reply(struct client *c, const char *fmt, ...)
{
	va_list	 ap;
	int	 n;

	va_start(ap, fmt);
	n = vsnprintf(c->line, sizeof(c->line), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(c->line))
		n = (int)strlen(c->line);
	push(c, c->line, (size_t)n);
}

/* A TLS call returned r <= 0: wait for what it wants (0), or drop c (-1). */
static int
tls_want(struct client *c, int r)
{
	switch (SSL_get_error(c->ssl, r)) {
	case SSL_ERROR_WANT_READ:
		want(c, EPOLLIN);
		return 0;
	case SSL_ERROR_WANT_WRITE:
		want(c, EPOLLOUT);
		return 0;
	default:
		ERR_clear_error();
		client_free(c);
		return -1;
	}
}

/*
 * Send what is queued.  1: all out; 0: the socket is full (we wait for
 * it); -1: the client is gone (freed).
 */
static int
flush_tls(struct client *c)
{
	struct seg *s;
	int	 r, len;

	while (c->segi < c->nseg) {
		s = &c->seg[c->segi];
		if (s->len == 0) {
			c->segi++;
			continue;
		}
		len = s->len > TLS_CHUNK ? TLS_CHUNK : (int)s->len;
		if ((r = SSL_write(c->ssl, s->p, len)) <= 0)
			return tls_want(c, r);
		s->p += r;
		s->len -= (size_t)r;
	}
	return 1;
}

static int
flush_plain(struct client *c)
{
	struct iovec iov[NSEG];
	ssize_t	 w;
	size_t	 left;
	int	 i, n;

	while (c->segi < c->nseg) {
		for (i = c->segi, n = 0; i < c->nseg; i++, n++) {
			iov[n].iov_base = (void *)(uintptr_t)c->seg[i].p;
			iov[n].iov_len = c->seg[i].len;
		}
		w = writev(c->fd, iov, n);
		if (w == -1 && errno == EINTR)
			continue;
		if (w == -1 && errno == EAGAIN) {
			want(c, EPOLLOUT);
			return 0;
		}
		if (w <= 0) {
			client_free(c);
			return -1;
		}
		for (left = (size_t)w; left > 0 && c->segi < c->nseg;) {
			struct seg *s = &c->seg[c->segi];
			size_t	 k = left < s->len ? left : s->len;

			s->p += k;
			s->len -= k;
			left -= k;
			if (s->len == 0)
				c->segi++;
		}
		while (c->segi < c->nseg && c->seg[c->segi].len == 0)
			c->segi++;
	}
	return 1;
}

static int
flush_out(struct client *c)
{
	int	 r;

	r = c->ssl != NULL ? flush_tls(c) : flush_plain(c);
	if (r != 1)
		return r;
	c->nseg = c->segi = 0;
	free(c->dyn);
	c->dyn = NULL;
	if (c->st == CS_CLOSING) {
		client_free(c);
		return -1;
	}
	want(c, EPOLLIN);
	return 1;
}

/* ----------------------------------------------------------- commands */

/* Message n (1-based) of the session, or NULL. */
static struct msg *
msg_arg(struct client *c, const char *arg, size_t *idx)
{
	char	*end;
	unsigned long n;

	if (arg == NULL || c->user == NULL)
		return NULL;
	n = strtoul(arg, &end, 10);
	if (end == arg || (*end != '\0' && *end != ' ') || n == 0 ||
	    n > c->user->nmsgs || (c->deleted && c->deleted[n - 1]))
		return NULL;
	*idx = n - 1;
	return &c->user->msgs[n - 1];
}

/* LIST or UIDL of the whole maildrop. */
static void
cmd_listing(struct client *c, bool uidl)
{
	struct user *u = c->user;
	size_t	 i, o, cap;

	if (c->ndeleted == 0) {
		if (uidl)
			push(c, u->uidl, u->uidl_len);
		else
			push(c, u->list, u->list_len);
		return;
	}
	cap = 64 + u->nmsgs * 48;
	c->dyn = xmalloc(cap);
	o = (size_t)snprintf(c->dyn, cap, "+OK\r\n");
	for (i = 0; i < u->nmsgs; i++) {
		if (c->deleted[i])
			continue;
		if (uidl)
			o += (size_t)snprintf(c->dyn + o, cap - o, "%zu %s\r\n",
			    i + 1, u->msgs[i].uid);
		else
			o += (size_t)snprintf(c->dyn + o, cap - o,
			    "%zu %llu\r\n", i + 1,
			    (unsigned long long)u->msgs[i].octets);
	}
	memcpy(c->dyn + o, DOT, 3);
	push(c, c->dyn, o + 3);
}

/* TOP n l: the header, the blank line and l body lines. */
static void
cmd_top(struct client *c, struct msg *m, const char *larg)
{
	const char *p, *end = m->wire + m->wlen - 3;
	unsigned long l = strtoul(larg, NULL, 10);

	p = m->wire + m->hdr_end;
	while (l > 0 && p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));

		p = nl ? nl + 1 : end;
		l--;
	}
	reply(c, "+OK\r\n");
	push(c, m->wire + m->status_len,
	    (size_t)(p - m->wire) - m->status_len);
	push(c, DOT, 3);
}

static void
cmd_trans(struct client *c, const char *cmd, const char *arg)
{
	struct user *u = c->user;
	struct msg *m;
	size_t	 i;
	uint64_t octets = 0;
	const char *sp;

	if (strcasecmp(cmd, "STAT") == 0) {
		for (i = 0; i < u->nmsgs; i++)
			if (c->deleted == NULL || !c->deleted[i])
				octets += u->msgs[i].octets;
		reply(c, "+OK %zu %llu\r\n", u->nmsgs - c->ndeleted,
		    (unsigned long long)octets);
	} else if (strcasecmp(cmd, "LIST") == 0 ||
	    strcasecmp(cmd, "UIDL") == 0) {
		bool uidl = cmd[0] == 'U' || cmd[0] == 'u';

		if (arg == NULL)
			cmd_listing(c, uidl);
		else if ((m = msg_arg(c, arg, &i)) == NULL)
			reply(c, "-ERR no such message\r\n");
		else if (uidl)
			reply(c, "+OK %zu %s\r\n", i + 1, m->uid);
		else
			reply(c, "+OK %zu %llu\r\n", i + 1,
			    (unsigned long long)m->octets);
	} else if (strcasecmp(cmd, "RETR") == 0) {
		if ((m = msg_arg(c, arg, &i)) == NULL)
			reply(c, "-ERR no such message\r\n");
		else
			push(c, m->wire, m->wlen);
	} else if (strcasecmp(cmd, "TOP") == 0) {
		if ((m = msg_arg(c, arg, &i)) == NULL ||
		    (sp = strchr(arg, ' ')) == NULL)
			reply(c, "-ERR no such message\r\n");
		else
			cmd_top(c, m, sp + 1);
	} else if (strcasecmp(cmd, "DELE") == 0) {
		if ((m = msg_arg(c, arg, &i)) == NULL)
			reply(c, "-ERR no such message\r\n");
		else {
			if (c->deleted == NULL)
				c->deleted = calloc(u->nmsgs, 1);
			if (c->deleted == NULL)
				fatalx("out of memory");
			c->deleted[i] = 1;
			c->ndeleted++;
			reply(c, "+OK deleted\r\n");
		}
	} else if (strcasecmp(cmd, "RSET") == 0) {
		if (c->deleted)
			memset(c->deleted, 0, u->nmsgs);
		c->ndeleted = 0;
		reply(c, "+OK\r\n");
	} else
		reply(c, "-ERR unknown command\r\n");
}

static void
cmd_auth(struct client *c, const char *cmd, const char *arg)
{
	if (strcasecmp(cmd, "USER") == 0 && arg != NULL) {
		c->user = user_find(arg);
		c->user_seen = true;
		reply(c, "+OK\r\n");
	} else if (strcasecmp(cmd, "PASS") == 0 && c->user_seen) {
		c->user_seen = false;
		if (c->user == NULL || arg == NULL ||
		    strcmp(arg, c->user->pass) != 0) {
			c->user = NULL;
			reply(c, "-ERR [AUTH] invalid login\r\n");
		} else {
			c->st = CS_TRANS;
			reply(c, "+OK logged in\r\n");
		}
	} else if (strcasecmp(cmd, "STLS") == 0 && c->ssl == NULL &&
	    g.ctx != NULL && !c->user_seen) {
		c->stls_next = true;
		reply(c, "+OK begin TLS\r\n");
	} else
		reply(c, "-ERR unknown command\r\n");
}

/* One command line, NUL-terminated, without its CRLF. */
static void
command(struct client *c, char *line)
{
	char	*arg = strchr(line, ' ');

	if (arg != NULL)
		*arg++ = '\0';
	if (strcasecmp(line, "QUIT") == 0) {
		c->st = CS_CLOSING;
		reply(c, "+OK bye\r\n");
	} else if (strcasecmp(line, "NOOP") == 0)
		reply(c, "+OK\r\n");
	else if (strcasecmp(line, "CAPA") == 0 && c->ssl == NULL &&
	    g.ctx != NULL)
		push(c, CAPA_STLS, CAPA_LEN);
	else if (strcasecmp(line, "CAPA") == 0) {
		/* Without STLS: the same lines but that one. */
		push(c, CAPA_STLS, CAPA_LEN - STLS_LEN - 3);
		push(c, DOT, 3);
	}
	else if (c->st == CS_TRANS)
		cmd_trans(c, line, arg);
	else
		cmd_auth(c, line, arg);
}

/* ------------------------------------------------------------- events */

static int tls_accept(struct client *);

/*
 * Answer the complete lines in c->in, one reply at a time (the next
 * waits until the previous one is out).  -1 if c was freed.
 */
static int
process(struct client *c)
{
	char	*nl;
	size_t	 n;
	int	 r;

	while (c->nseg == 0 && c->st != CS_CLOSING &&
	    (nl = memchr(c->in, '\n', c->inlen)) != NULL) {
		n = (size_t)(nl - c->in) + 1;
		*nl = '\0';
		if (nl > c->in && nl[-1] == '\r')
			nl[-1] = '\0';
		command(c, c->in);
		c->inlen -= n;
		memmove(c->in, c->in + n, c->inlen);
		if ((r = flush_out(c)) != 1)
			return r;
		if (c->stls_next) {
			/* Octets pipelined after STLS were in clear. */
			c->stls_next = false;
			c->inlen = 0;
			return tls_accept(c);
		}
	}
	if (c->inlen == sizeof(c->in)) {
		client_free(c);
		return -1;
	}
	return 0;
}

static void
on_readable(struct client *c)
{
	ssize_t	 r;
	int	 n;

	for (;;) {
		if (c->ssl != NULL) {
			n = SSL_read(c->ssl, c->in + c->inlen,
			    (int)(sizeof(c->in) - c->inlen));
			if (n <= 0) {
				(void)tls_want(c, n);
				return;
			}
			r = n;
		} else {
			r = recv(c->fd, c->in + c->inlen,
			    sizeof(c->in) - c->inlen, 0);
			if (r == -1 && (errno == EAGAIN || errno == EINTR))
				return;
			if (r <= 0) {
				client_free(c);
				return;
			}
		}
		c->inlen += (size_t)r;
		if (process(c) == -1 || c->st == CS_HANDSHAKE)
			return;
		if (c->nseg > 0)
			return;		/* the rest after this reply */
		if (c->ssl == NULL)
			return;		/* level-triggered: epoll says more */
	}
}

/* 0, or -1 if c was freed. */
static int
greet(struct client *c)
{
	c->st = CS_AUTH;
	push(c, "+OK sdps-zero ready\r\n", 21);
	return flush_out(c) == -1 ? -1 : 0;
}

/* 0, or -1 if c was freed. */
static int
handshake(struct client *c)
{
	int	 r = SSL_do_handshake(c->ssl);

	if (r == 1) {
		if (c->implicit)
			return greet(c);
		/* After STLS there is no new greeting (RFC 2595 §4). */
		c->st = CS_AUTH;
		want(c, EPOLLIN);
		return 0;
	}
	return tls_want(c, r);
}

/* 0, or -1 if c was freed. */
static int
tls_accept(struct client *c)
{
	if ((c->ssl = SSL_new(g.ctx)) == NULL ||
	    SSL_set_fd(c->ssl, c->fd) != 1) {
		ERR_clear_error();
		client_free(c);
		return -1;
	}
	SSL_set_accept_state(c->ssl);
	c->st = CS_HANDSHAKE;
	return handshake(c);
}

static void
on_event(struct client *c, uint32_t ev)
{
	if (c->st == CS_HANDSHAKE) {
		(void)handshake(c);
		return;
	}
	if (c->nseg > 0) {
		if (flush_out(c) != 1)
			return;
		/* Lines that waited behind that reply. */
		if (process(c) == -1 || c->nseg > 0 || c->st == CS_HANDSHAKE)
			return;
		/* Records OpenSSL read but epoll cannot see. */
		if (c->ssl != NULL && SSL_has_pending(c->ssl))
			ev |= EPOLLIN;
	}
	if (ev & (EPOLLIN | EPOLLHUP | EPOLLERR))
		on_readable(c);
}

static void
on_accept(int lfd)
{
	struct epoll_event e;
	struct client *c;
	int	 fd, one = 1;

	for (;;) {
		fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd == -1)
			return;		/* EAGAIN, or another copy took it */
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		c = xmalloc(sizeof(*c));
		memset(c, 0, sizeof(*c));
		c->fd = fd;
		c->ev = EPOLLIN;
		memset(&e, 0, sizeof(e));
		e.events = EPOLLIN;
		e.data.ptr = c;
		if (epoll_ctl(g.epfd, EPOLL_CTL_ADD, fd, &e) == -1)
			fatalx("epoll_ctl: %s", strerror(errno));
		if (lfd == g.lfd_tls) {
			c->implicit = true;
			(void)tls_accept(c);
		} else
			(void)greet(c);
	}
}

/* -------------------------------------------------------------- setup */

static int
listen_on(const char *host, const char *port, int *bound)
{
	struct addrinfo hints, *res;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	int	 fd, one = 1, rc;

	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE;
	if ((rc = getaddrinfo(host, port, &hints, &res)) != 0)
		fatalx("%s:%s: %s", host, port, gai_strerror(rc));
	fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK |
	    SOCK_CLOEXEC, 0);
	if (fd == -1)
		fatalx("socket: %s", strerror(errno));
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, res->ai_addr, res->ai_addrlen) == -1)
		fatalx("bind %s:%s: %s", host, port, strerror(errno));
	if (listen(fd, 4096) == -1)
		fatalx("listen: %s", strerror(errno));
	freeaddrinfo(res);
	getsockname(fd, (struct sockaddr *)&ss, &sl);
	*bound = ntohs(ss.ss_family == AF_INET6 ?
	    ((struct sockaddr_in6 *)&ss)->sin6_port :
	    ((struct sockaddr_in *)&ss)->sin_port);
	return fd;
}

static void
tls_setup(const char *cert, const char *key)
{
	if ((g.ctx = SSL_CTX_new(TLS_server_method())) == NULL)
		fatalx("SSL_CTX_new failed");
	SSL_CTX_set_min_proto_version(g.ctx, TLS1_2_VERSION);
	if (SSL_CTX_use_certificate_chain_file(g.ctx, cert) != 1)
		fatalx("%s: cannot load the certificate chain", cert);
	if (SSL_CTX_use_PrivateKey_file(g.ctx, key, SSL_FILETYPE_PEM) != 1)
		fatalx("%s: cannot load the key", key);
	if (SSL_CTX_check_private_key(g.ctx) != 1)
		fatalx("%s does not match %s", key, cert);
	SSL_CTX_set_mode(g.ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
	    SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	SSL_CTX_set_options(g.ctx, SSL_OP_NO_RENEGOTIATION);
	/*
	 * Stateless tickets (OpenSSL's default) with the context's key: the
	 * copies forked by -w share it, so a session resumes on any.
	 */
	SSL_CTX_set_session_cache_mode(g.ctx, SSL_SESS_CACHE_OFF);
}

static void
serve(void)
{
	struct epoll_event e, evs[256];
	int	 n, i;

	if ((g.epfd = epoll_create1(EPOLL_CLOEXEC)) == -1)
		fatalx("epoll_create1: %s", strerror(errno));
	memset(&e, 0, sizeof(e));
	e.events = EPOLLIN | EPOLLEXCLUSIVE;
	e.data.ptr = NULL;
	e.data.u64 = 1;
	epoll_ctl(g.epfd, EPOLL_CTL_ADD, g.lfd_plain, &e);
	if (g.lfd_tls != -1) {
		e.data.u64 = 2;
		epoll_ctl(g.epfd, EPOLL_CTL_ADD, g.lfd_tls, &e);
	}
	for (;;) {
		n = epoll_wait(g.epfd, evs, 256, -1);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1)
			fatalx("epoll_wait: %s", strerror(errno));
		for (i = 0; i < n; i++) {
			if (evs[i].data.u64 == 1)
				on_accept(g.lfd_plain);
			else if (evs[i].data.u64 == 2)
				on_accept(g.lfd_tls);
			else
				on_event(evs[i].data.ptr, evs[i].events);
		}
	}
}

int
main(int argc, char **argv)
{
	const char *host = "127.0.0.1", *port = "0", *tport = NULL;
	const char *msgdir = NULL, *cert = NULL, *key = NULL;
	struct rlimit rl;
	unsigned workers = 1, i;
	size_t	 k, msgs = 0, bytes = 0;
	int	 ch, pport, tport_n = 0, nfiles = 0;

	while ((ch = getopt(argc, argv, "h:p:P:C:K:m:f:w:v")) != -1) {
		switch (ch) {
		case 'h': host = optarg; break;
		case 'p': port = optarg; break;
		case 'P': tport = optarg; break;
		case 'C': cert = optarg; break;
		case 'K': key = optarg; break;
		case 'm': msgdir = optarg; break;
		case 'f': load_creds(optarg); nfiles++; break;
		case 'w':
			workers = (unsigned)strtoul(optarg, NULL, 10);
			if (workers == 0 || workers > 64)
				fatalx("bad -w %s", optarg);
			break;
		case 'v': g.verbose++; break;
		default: usage();
		}
	}
	if (optind != argc || msgdir == NULL || nfiles == 0 ||
	    (tport != NULL && (cert == NULL || key == NULL)) ||
	    ((cert == NULL) != (key == NULL)))
		usage();
	signal(SIGPIPE, SIG_IGN);
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	qsort(g.users, g.nusers, sizeof(*g.users), user_cmp);
	for (k = 0; k < g.nusers; k++) {
		user_load(&g.users[k], msgdir);
		msgs += g.users[k].nmsgs;
		bytes += (size_t)g.users[k].octets;
	}
	if (cert != NULL)
		tls_setup(cert, key);
	g.lfd_plain = listen_on(host, port, &pport);
	if (tport != NULL)
		g.lfd_tls = listen_on(host, tport, &tport_n);
	printf("ready port=%d tls_port=%d users=%zu msgs=%zu octets=%zu "
	    "workers=%u pid=%d\n", pport, tport_n, g.nusers, msgs, bytes,
	    workers, (int)getpid());
	fflush(stdout);
	/* Copies share the listeners, the corpus pages and the ticket key. */
	for (i = 1; i < workers; i++) {
		pid_t	 pid = fork();

		if (pid == -1)
			fatalx("fork: %s", strerror(errno));
		if (pid == 0) {
			/* Go when the first copy goes (bench-compare's stop). */
			prctl(PR_SET_PDEATHSIG, SIGTERM);
			if (getppid() == 1)
				_exit(0);
			break;
		}
	}
	serve();
	return 0;
}
