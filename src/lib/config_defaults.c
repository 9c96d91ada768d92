/* config_defaults: every documented default (config/sdps.conf shows them). */
#include <string.h>

#include "sdps/config.h"

#define MIB	(1024ULL * 1024)

void
config_defaults(struct config *cf)
{
	memset(cf, 0, sizeof(*cf));
	strcpy(cf->listeners[0].addr, "127.0.0.1:1110");
	cf->listeners[0].proto = CONFIG_PROTO_POP3;
	cf->listeners[0].tls = CONFIG_TLS_NONE;
	cf->nlisteners = 1;
	strcpy(cf->user, "sdps");
	strcpy(cf->run_dir, "/run/sdps");
	cf->min_spare = 4;
	cf->max_spare = 16;
	cf->max_workers = 256;
	cf->max_sessions_per_worker = 1000;
	cf->idle_timeout_s = 600;
	cf->send_timeout_s = 60;
	cf->auth_fail_delay_ms = 1000;
	cf->auth_max_failures = 3;
	cf->auth_max_parallel = 2;
	cf->auth_cache_ttl_s = 300;
	cf->auth_cache_entries = 4096;
	cf->auth_source_budget = 10;
	cf->auth_host_budget = 30;
	cf->auth_budget_window_s = 600;
	cf->auth_fail_delay_max_ms = 15000;
	cf->auth_throttle_entries = 16384;
	cf->login_delay_s = 0;
	cf->max_bad_commands = 20;
	cf->shutdown_grace_s = 30;
	cf->lmtp_socket_mode = 0660;	/* groups stay "" */
	cf->max_conn_per_ip = 10;
	cf->auth_timeout_s = 60;
	cf->lmtp_workers = 8;
	cf->allow_cleartext = CONFIG_CLEARTEXT_LOOPBACK;
	strcpy(cf->tls.min_protocol, "TLSv1.2");
	/* The Mozilla "intermediate" profile (ssl-config.mozilla.org). */
	strcpy(cf->tls.ciphers, "ECDHE-ECDSA-AES128-GCM-SHA256:"
	    "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
	    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:"
	    "ECDHE-RSA-CHACHA20-POLY1305");
	strcpy(cf->tls.ciphersuites, "TLS_AES_128_GCM_SHA256:"
	    "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256");
	strcpy(cf->tls.groups, "X25519:prime256v1:secp384r1");
	cf->tls.handshake_timeout_s = 10;
	cf->tls.ticket_lifetime_s = 3600;
	cf->tls.ktls = true;
	strcpy(cf->auth_path, "/var/lib/sdps/auth");
	cf->auth_map_size = 64 * MIB;
	cf->hash_cost = CONFIG_HASH_INTERACTIVE;
	cf->store_map_size = 1024 * MIB;
	cf->claim_lease_s = 3600;
	cf->max_message_octets = 52428800;
	cf->expire_days = 30;
	cf->ps_idle_timeout_s = 900;
	cf->link_timeout_s = 10;
	cf->link_connect_timeout_ms = 3000;
	cf->link_down_s = 30;
	strcpy(cf->sendmail, "/usr/sbin/sendmail -oi -f <>");
	strcpy(cf->outbox, "/var/spool/sdps/outbox");
}
