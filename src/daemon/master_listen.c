/*
 * master_listen: the master's start-up checks and sockets: binds the
 * inet and unix listeners (a unix socket with its mode and group, made
 * without following names an attacker could swap), resolves the ids the
 * daemon runs as, checks run_dir and drops privileges.
 */
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>

#include <netinet/in.h>

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <netdb.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sdps/log.h"
#include "master_int.h"

/* ---------------------------------------------------------- listeners */

/*
 * Split path into its directory (into dir) and last name (*base), open
 * the directory, and refuse a name there that is neither a socket nor a
 * symlink.  The directory's descriptor, or -1 (logged).
 */
static int
master_sock_dir(const char *path, char *dir, size_t dirsz, const char **base)
{
	struct stat	 st;
	const char	*slash;
	int		 pfd;

	if (strlen(path) >= dirsz ||
	    (slash = strrchr(path, '/')) == NULL || slash[1] == '\0') {
		log_warnx("listen %s: bad socket path", path);
		return -1;
	}
	memcpy(dir, path, (size_t)(slash - path));
	dir[slash - path] = '\0';
	if (dir[0] == '\0')
		strcpy(dir, "/");
	*base = slash + 1;
	if ((pfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1) {
		log_warn("listen %s: %s", path, dir);
		return -1;
	}
	/* A stale socket or a symlink is replaced; never anything else. */
	if (fstatat(pfd, *base, &st, AT_SYMLINK_NOFOLLOW) == 0) {
		if (S_ISLNK(st.st_mode))
			log_warnx("listen %s: replacing a symlink (not "
			    "following it)", path);
		else if (!S_ISSOCK(st.st_mode)) {
			log_warnx("listen %s: exists and is not a socket",
			    path);
			close(pfd);
			return -1;
		}
	}
	return pfd;
}

/*
 * Bind fd to base inside the private directory tfd, with the configured
 * mode from the start (the umask) and the service user and socket group
 * as owner, and check both.  0, or -1 (logged).
 */
static int
master_sock_bind(struct master *m, const char *path, int fd, int tfd,
    const char *base)
{
	struct sockaddr_un	 sun;
	struct stat		 st;
	mode_t			 mode = (mode_t)m->cf->lmtp_socket_mode, omask;
	int			 cwd, rc;

	/* bind by a name relative to the private directory: nothing on
	 * the way can be redirected. */
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	strcpy(sun.sun_path, base);
	if ((cwd = open(".", O_PATH | O_DIRECTORY | O_CLOEXEC)) == -1 ||
	    fchdir(tfd) == -1) {
		log_warn("listen %s: fchdir", path);
		if (cwd != -1)
			close(cwd);
		return -1;
	}
	omask = umask(0777 & ~mode);
	rc = bind(fd, (struct sockaddr *)&sun, sizeof(sun));
	(void)umask(omask);
	if (fchdir(cwd) == -1) {
		log_warn("listen %s: fchdir back", path);
		close(cwd);
		return -1;
	}
	close(cwd);
	if (rc == -1) {
		log_warn("listen %s: bind", path);
		return -1;
	}
	if ((m->uid != geteuid() || m->sock_gid != getegid()) &&
	    fchownat(tfd, base, m->uid, m->sock_gid,
	    AT_SYMLINK_NOFOLLOW) == -1) {
		log_warn("listen %s: chown to uid %ld gid %ld", path,
		    (long)m->uid, (long)m->sock_gid);
		return -1;
	}
	if (fstatat(tfd, base, &st, AT_SYMLINK_NOFOLLOW) == -1 ||
	    !S_ISSOCK(st.st_mode) || (st.st_mode & 07777) != mode) {
		log_warnx("listen %s: socket has mode %o, not %o", path,
		    (unsigned)(st.st_mode & 07777), (unsigned)mode);
		return -1;
	}
	return 0;
}

/*
 * A unix socket at path, with the configured mode and group, made safely
 * although its directory may belong to the service user (RUN_DIR/lmtp.sock
 * is the usual place, and root binds it).  There is no fchmod for a
 * socket and chmod/chown by name follow a symlink swapped in after bind,
 * so: bind in a fresh 0700 directory of our own next to path (nobody else
 * can touch names in it), under a umask that gives the socket its mode
 * from the start; set the owner there with AT_SYMLINK_NOFOLLOW; check it
 * with fstatat; then rename it onto path, which replaces a stale socket
 * or a planted symlink without following it.
 */
static int
master_listen_unix(struct master *m, const char *path)
{
	struct sockaddr_un	 sun;
	struct stat		 st;
	char			 dir[PATH_MAX], tmp[PATH_MAX + 16];
	const char		*base, *tbase = NULL;
	int			 fd = -1, pfd, tfd = -1, rc;
	bool			 made = false;

	if ((pfd = master_sock_dir(path, dir, sizeof(dir), &base)) == -1)
		return -1;
	rc = snprintf(tmp, sizeof(tmp), "%s/.%s.XXXXXX", dir, base);
	if (rc < 0 || (size_t)rc >= sizeof(tmp) ||
	    strlen(base) + 1 >= sizeof(sun.sun_path)) {
		log_warnx("listen %s: path too long", path);
		goto fail;
	}
	if (mkdtemp(tmp) == NULL) {
		log_warn("listen %s: mkdtemp %s", path, tmp);
		goto fail;
	}
	made = true;
	tbase = strrchr(tmp, '/') + 1;
	/* Ours, by descriptor: a directory swapped in by the parent's
	 * owner between mkdtemp and here is refused. */
	if ((tfd = openat(pfd, tbase, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
	    O_CLOEXEC)) == -1 || fstat(tfd, &st) == -1 ||
	    st.st_uid != geteuid() || (st.st_mode & 077) != 0) {
		log_warnx("listen %s: private directory %s not ours", path,
		    tmp);
		goto fail;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd == -1) {
		log_warn("listen %s: socket", path);
		goto fail;
	}
	if (master_sock_bind(m, path, fd, tfd, base) == -1)
		goto fail;
	if (renameat(tfd, base, pfd, base) == -1) {
		log_warn("listen %s: rename into place", path);
		goto fail;
	}
	(void)unlinkat(pfd, tbase, AT_REMOVEDIR);
	close(tfd);
	close(pfd);
	if (listen(fd, MASTER_BACKLOG) == -1) {
		log_warn("listen %s: listen", path);
		close(fd);
		return -1;
	}
	return fd;
fail:
	if (tfd != -1) {
		(void)unlinkat(tfd, base, 0);
		close(tfd);
	}
	if (made)
		(void)unlinkat(pfd, tbase, AT_REMOVEDIR);
	if (fd != -1)
		close(fd);
	close(pfd);
	return -1;
}

static int
master_listen_inet(const char *addr)
{
	struct addrinfo		 hints, *res = NULL, *ai;
	char			 host[CONFIG_ADDR_MAX], *port, *p;
	const char		*node;
	int			 fd = -1, one = 1, rc, saved = 0;

	snprintf(host, sizeof(host), "%s", addr);
	if (host[0] == '[') {
		if ((p = strchr(host, ']')) == NULL || p[1] != ':') {
			log_warnx("listen %s: bad address", addr);
			return -1;
		}
		*p = '\0';
		port = p + 2;
		node = host + 1;
	} else {
		if ((p = strrchr(host, ':')) == NULL) {
			log_warnx("listen %s: bad address", addr);
			return -1;
		}
		*p = '\0';
		port = p + 1;
		node = host;
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	if (strcmp(node, "*") == 0 || node[0] == '\0') {
		/* Any address: IPv4 here; add [::]:port for IPv6. */
		node = NULL;
		hints.ai_family = AF_INET;
	}
	if ((rc = getaddrinfo(node, port, &hints, &res)) != 0) {
		log_warnx("listen %s: getaddrinfo: %s", addr,
		    gai_strerror(rc));
		return -1;
	}
	/* The first address that binds; a name with several addresses
	 * should be written as several listen lines. */
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		fd = socket(ai->ai_family,
		    ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
		    ai->ai_protocol);
		if (fd == -1) {
			saved = errno;
			continue;
		}
		(void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one,
		    sizeof(one));
		if (ai->ai_family == AF_INET6)
			(void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one,
			    sizeof(one));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 &&
		    listen(fd, MASTER_BACKLOG) == 0)
			break;
		saved = errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd == -1) {
		errno = saved;
		log_warn("listen %s: bind", addr);
	}
	return fd;
}

int
master_listen(struct master *m)
{
	const struct config_listener	*cl;
	int				 i, fd;

	for (i = 0; i < m->cf->nlisteners; i++) {
		cl = &m->cf->listeners[i];
		fd = cl->addr[0] == '/' ? master_listen_unix(m, cl->addr) :
		    master_listen_inet(cl->addr);
		if (fd == -1)
			return -1;
		m->ls[m->nls].fd = fd;
		m->ls[m->nls].tls = cl->proto == CONFIG_PROTO_PUNT ?
		    m->punt_tls : NULL;
		m->ls[m->nls++].cl = *cl;
		/* Punt links are served by the POP3 pool (issue 11): a link
		 * is a session with a lifetime, like a POP3 one. */
		if (cl->proto == CONFIG_PROTO_LMTP)
			m->nlmtp++;
		else
			m->npop3++;
		if (cl->proto == CONFIG_PROTO_PUNT)
			log_info("listening for punt links to %s on %s",
			    cl->punt, cl->addr);
		else
			log_info("listening for %s on %s", cl->proto ==
			    CONFIG_PROTO_LMTP ? "LMTP" : "POP3", cl->addr);
	}
	if (m->nls == 0) {
		log_warnx("no listen address configured");
		return -1;
	}
	return 0;
}

void
master_unlisten(struct master *m)
{
	int	 i;

	for (i = 0; i < m->nls; i++) {
		close(m->ls[i].fd);
		if (m->ls[i].cl.addr[0] == '/')
			(void)unlink(m->ls[i].cl.addr);
	}
	m->nls = m->npop3 = m->nlmtp = 0;
}

/* ------------------------------------------- ids and run_dir (h-sb) */

/* "" = dflt, else the named group's id.  0, or -1 (logged). */
static int
master_group(const char *key, const char *name, gid_t dflt, gid_t *gid)
{
	struct group	*gr;

	if (name[0] == '\0') {
		*gid = dflt;
		return 0;
	}
	if ((gr = getgrnam(name)) == NULL) {
		log_warnx("%s %s: no such group", key, name);
		return -1;
	}
	*gid = gr->gr_gid;
	return 0;
}

/*
 * Who the daemon will run as, and the groups of what it creates, before
 * anything is created: the service user when root and user is set, our
 * own ids otherwise.  0, or -1 (logged).
 */
int
master_ids(struct master *m)
{
	const struct config	*cf = m->cf;
	struct passwd		*pw;

	m->drop = cf->user[0] != '\0' && geteuid() == 0;
	m->uid = geteuid();
	m->gid = getegid();
	if (m->drop) {
		if ((pw = getpwnam(cf->user)) == NULL) {
			log_warnx("user %s: no such user", cf->user);
			return -1;
		}
		m->uid = pw->pw_uid;
		m->gid = pw->pw_gid;
	}
	if (master_group("admin_group", cf->admin_group, m->gid,
	    &m->admin_gid) == -1 ||
	    master_group("lmtp_socket_group", cf->lmtp_socket_group, m->gid,
	    &m->sock_gid) == -1)
		return -1;
	return 0;
}

/*
 * Open run_dir and refuse one that others could plant names in: it must
 * be a real directory (not a symlink), owned by root or the service
 * user, and not group- or world-writable unless sticky.  Everything in
 * it is then reached through m->run_fd.  0, or an exit status.
 */
int
master_run_dir(struct master *m)
{
	const char	*dir = m->cf->run_dir;
	struct stat	 st;

	m->run_fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
	    O_CLOEXEC);
	if (m->run_fd == -1) {
		if (errno == ELOOP || errno == ENOTDIR) {
			log_warnx("run_dir %s: a symlink or not a directory; "
			    "refusing to use it", dir);
			return MASTER_EX_CONFIG;
		}
		log_warn("run_dir %s", dir);
		return MASTER_EX_OSERR;
	}
	if (fstat(m->run_fd, &st) == -1) {
		log_warn("run_dir %s", dir);
		return MASTER_EX_OSERR;
	}
	if (st.st_uid != 0 && st.st_uid != m->uid) {
		log_warnx("run_dir %s: owned by uid %ld, not by root or the "
		    "service user (uid %ld); refusing to use it", dir,
		    (long)st.st_uid, (long)m->uid);
		return MASTER_EX_CONFIG;
	}
	if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0 &&
	    (st.st_mode & S_ISVTX) == 0) {
		log_warnx("run_dir %s: mode %04o is group- or world-writable "
		    "without the sticky bit; refusing to use it", dir,
		    (unsigned)(st.st_mode & 07777));
		return MASTER_EX_CONFIG;
	}
	return 0;
}

int
master_drop_privs(struct master *m)
{
	uid_t		 uid = m->uid;
	gid_t		 gid = m->gid;

	if (m->cf->user[0] == '\0')
		return 0;
	if (!m->drop) {
		log_info("not root: running as uid %ld, not as %s",
		    (long)geteuid(), m->cf->user);
		return 0;
	}
	/* Workers create lock files under run_dir.  By descriptor: the
	 * name may have been swapped since it was checked.  (The
	 * scoreboard stays root's: workers write it through the map.) */
	if (fchown(m->run_fd, uid, gid) == -1) {
		log_warn("chown %s", m->cf->run_dir);
		return -1;
	}
	if (setgroups(1, &gid) == -1 ||
	    setresgid(gid, gid, gid) == -1 ||
	    setresuid(uid, uid, uid) == -1) {
		log_warn("dropping privileges to %s", m->cf->user);
		return -1;
	}
	if (geteuid() != uid || getegid() != gid || setuid(0) == 0) {
		log_warnx("dropping privileges to %s did not stick",
		    m->cf->user);
		return -1;
	}
	log_info("running as %s (uid %ld)", m->cf->user, (long)uid);
	return 0;
}
