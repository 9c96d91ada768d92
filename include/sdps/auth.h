/*
 * auth: host records with two argon2id password hashes each, in LMDB.
 * Only auth.c includes <sodium.h>.  Call auth_global_init once per process
 * before anything else here (the master calls it before fork).
 *
 * Error convention: enum auth_res where callers must tell a wrong password
 * from trouble (auth_host_get, auth_verify); the admin functions return 0
 * or -1 (auth_open NULL) with a one-line reason in err; auth_global_init
 * and auth_host_list 0 or -1.
 */
#ifndef SDPS_AUTH_H
#define SDPS_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sdps/config.h"
#include "sdps/util.h"

struct auth;

enum auth_res {
	AUTH_OK,
	AUTH_FAIL,	/* unknown host or wrong password (never told apart) */
	AUTH_TEMPFAIL	/* index trouble */
};

#define AUTH_SMTP_MAX	CONFIG_ADDR_MAX

struct auth_host {
	char	 host[UTIL_HOST_MAX + 1];
	uint64_t generation;	/* changes on every password change */
	bool	 has_pw2;
	char	 smtp[AUTH_SMTP_MAX];	/* "addr:port" SMTP target, or "" */
};

/* sodium_init().  Returns 0 or -1. */
int	auth_global_init(void);

/*
 * Open the auth store at path (a directory; created with create).
 * Password hashes made through this handle use cost.  Returns NULL with
 * err on failure.
 */
struct auth *auth_open(const char *path, uint64_t map_size, bool create,
	    enum config_hash_cost cost, char *err, size_t errlen);
void	auth_close(struct auth *a);

/*
 * Host administration.  host is normalized by the caller.  pw2 may be NULL.
 * add fails if the host exists; passwd (slot 1 or 2) and del fail if it
 * does not.  A password change gives the host a new generation.
 * Returns 0, or -1 with a one-line reason in err.
 */
int	auth_host_add(struct auth *a, const char *host, const char *pw1,
	    const char *pw2, char *err, size_t errlen);
int	auth_host_passwd(struct auth *a, const char *host, int slot,
	    const char *pw, char *err, size_t errlen);
int	auth_host_del(struct auth *a, const char *host, char *err,
	    size_t errlen);
int	auth_host_set_smtp(struct auth *a, const char *host,
	    const char *target, char *err, size_t errlen);

/* AUTH_OK and *out filled, AUTH_FAIL if unknown, AUTH_TEMPFAIL. */
enum auth_res auth_host_get(struct auth *a, const char *host,
	    struct auth_host *out);

/* Every host in name order; return non-zero from fn to stop. 0 / -1. */
int	auth_host_list(struct auth *a,
	    int (*fn)(const struct auth_host *h, void *arg), void *arg);

/*
 * Verify password for host against both hashes.  An unknown host is
 * checked against a dummy hash, and a failure always costs the same
 * number of hashes, so timing does not tell whether the host exists.
 * No read transaction is held during hashing.  Secrets copied here are
 * wiped; the caller wipes its own buffer.  *generation (may be NULL) is
 * set on AUTH_OK.  Blocks for one or two argon2id hashes.
 */
enum auth_res auth_verify(struct auth *a, const char *host,
	    const char *password, uint64_t *generation);

/* Overwrite len octets at p so the compiler cannot skip it. */
void	auth_wipe(void *p, size_t len);

#endif
