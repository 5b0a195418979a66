/*
 * sandboxd: the command line, and main wiring the modules together
 * explicitly — store, control over the store, edge over control — on one
 * libevent event base.
 */
#include "config.h"

#include <sys/stat.h>

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "common/common.h"
#include "store/store.h"
#include "control/control.h"
#include "edge/edge.h"
#include "admin/admin.h"
#include "sandboxd.h"

struct daemon {
	struct event_base	*base;
	struct config		*cf;
	struct store		*store;
	struct control		*ctl;
	struct edge		*edge;
	struct admin		*admin;
	int			 stopping;
};

static int	cmd_serve(int, char **);
static int	cmd_check_config(int, char **);
static int	cmd_version(int, char **);
static int	cmd_backup(int, char **);
static int	usage(FILE *, int);
static void	find_agentd(struct config *);
static void	signal_cb(evutil_socket_t, short, void *);
static void	shutdown_done_cb(void *);

static const struct {
	const char	*name;
	int		(*fn)(int, char **);
	const char	*args;
	const char	*help;
} commands[] = {
	{ "serve", cmd_serve, "[-c FILE]",
	  "run the daemon in the foreground (systemd runs this)" },
	{ "check-config", cmd_check_config, "[-c FILE]",
	  "validate a config file; print every error with its line" },
	{ "version", cmd_version, "", "print the version" },
	{ "backup", cmd_backup, "-c FILE DEST",
	  "consistent online copy of the SQLite store to DEST" },
	{ "status", cmd_status, "[-c FILE]",
	  "version, uptime, listeners, Docker, sandboxes by state" },
	{ "key", cmd_key, "VERB TENANT",
	  "create|list|revoke API keys kept hashed in the store" },
};

static int
usage(FILE *f, int code)
{
	size_t	i;

	fprintf(f, "usage: sandboxd COMMAND [ARGS]\n\n"
	    "Isolated sandboxes with live preview URLs, one per user.\n\n"
	    "Commands:\n");
	for (i = 0; i < nitems(commands); i++)
		fprintf(f, "  %-13s %-13s %s\n", commands[i].name,
		    commands[i].args, commands[i].help);
	fprintf(f, "\nThe default config is %s; without it, serve runs on the "
	    "embedded default\n(http://<id>.preview.localhost:8080). "
	    "'sandboxd COMMAND --help' tells more.\n"
	    "Exit codes: 0 ok, 1 runtime failure, 2 usage or config error.\n",
	    CONFIG_DEFAULT_PATH);
	return (code);
}

int
main(int argc, char **argv)
{
	size_t	i;

	evalloc_init();
	if (argc < 2)
		return (usage(stderr, EXIT_USAGE));
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
	    strcmp(argv[1], "help") == 0)
		return (usage(stdout, 0));
	if (strcmp(argv[1], "--version") == 0)
		return (cmd_version(argc - 1, argv + 1));
	for (i = 0; i < nitems(commands); i++) {
		if (strcmp(argv[1], commands[i].name) == 0)
			return (commands[i].fn(argc - 1, argv + 1));
	}
	fprintf(stderr, "sandboxd: unknown command \"%s\"\n\n", argv[1]);
	return (usage(stderr, EXIT_USAGE));
}

/* Parse "-c FILE" and "--help" for a subcommand; *path NULL if absent. */
int
parse_c(int argc, char **argv, const char *help, const char **path)
{
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	int	ch;

	*path = NULL;
	optind = 1;
	while ((ch = getopt_long(argc, argv, "c:h", longopts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			*path = optarg;
			break;
		case 'h':
			fputs(help, stdout);
			return (0);
		default:
			fputs(help, stderr);
			return (EXIT_USAGE);
		}
	}
	return (-1);
}

/*
 * Load the config: -c FILE, else the default path if it exists, else the
 * embedded default. Prints every error and returns NULL on failure.
 */
struct config *
load_config(const char *path, int quiet)
{
	struct config	*cf;
	char		*errors = NULL;

	if (path == NULL && access(CONFIG_DEFAULT_PATH, F_OK) == 0)
		path = CONFIG_DEFAULT_PATH;
	cf = config_load(path, &errors);
	if (cf == NULL) {
		fputs(errors != NULL ? errors : "invalid config\n", stderr);
		free(errors);
		return (NULL);
	}
	free(errors);
	if (!quiet && path == NULL)
		log_info("no config file at %s: using the embedded default",
		    CONFIG_DEFAULT_PATH);
	return (cf);
}

/*
 * agentd_path defaults to the installed libexec copy; a daemon run from
 * its build tree finds the agentd built beside it instead.
 */
static void
find_agentd(struct config *cf)
{
	char	 exe[PATH_MAX], *slash, *alt;
	ssize_t	 n;

	if (access(cf->agentd_path, X_OK) == 0)
		return;
	n = readlink("/proc/self/exe", exe, sizeof exe - 1);
	if (n <= 0)
		return;
	exe[n] = '\0';
	if ((slash = strrchr(exe, '/')) == NULL)
		return;
	*slash = '\0';
	xasprintf(&alt, "%s/agentd/agentd", exe);
	if (access(alt, X_OK) == 0) {
		free(cf->agentd_path);
		cf->agentd_path = alt;
		return;
	}
	free(alt);
}

static int
cmd_serve(int argc, char **argv)
{
	static const char help[] = "usage: sandboxd serve [-c FILE]\n\n"
	    "Run the daemon in the foreground: the proxy on every listen "
	    "address, the API,\nthe store under data_dir and the reconciler. "
	    "Logs go to stderr.\nSIGTERM/SIGINT: stop accepting, finish "
	    "in-flight requests within shutdown_grace,\nleave sandboxes "
	    "running, remove the egress rules (nft table\ninet "
	    "sandboxd_<instance>), exit 0. SIGHUP: reload TLS certificates,\n"
	    "reopen the access_log file, read every [provider] key_file "
	    "and console_dir again.\n";
	struct daemon	 d;
	struct event	*sigs[4];
	const char	*path;
	char		*dbpath, *cause = NULL;
	int64_t		 wd_ms;
	int		 rv, i, signums[] = { SIGTERM, SIGINT, SIGHUP };

	if ((rv = parse_c(argc, argv, help, &path)) != -1)
		return (rv);
	if (optind != argc) {
		fputs(help, stderr);
		return (EXIT_USAGE);
	}
	memset(&d, 0, sizeof d);
	log_init(LOG_LEVEL_INFO);
	notify_init();
	if ((d.cf = load_config(path, 0)) == NULL)
		return (EXIT_USAGE);
	log_init(d.cf->log_level);
	find_agentd(d.cf);
	if (access(d.cf->agentd_path, X_OK) != 0) {
		log_warnx("agentd is not at %s (set agentd_path): sandboxes "
		    "cannot start", d.cf->agentd_path);
		rv = EXIT_RUNTIME;
		goto out;
	}
	signal(SIGPIPE, SIG_IGN);

	if (mkdir_p(d.cf->data_dir, 0711) == -1) {
		log_warn("cannot make data_dir %s", d.cf->data_dir);
		rv = EXIT_RUNTIME;
		goto out;
	}
	xasprintf(&dbpath, "%s/sandboxd.db", d.cf->data_dir);
	d.store = store_open(dbpath, &cause);
	free(dbpath);
	if (d.store == NULL) {
		log_warnx("cannot open the store: %s", cause);
		rv = EXIT_RUNTIME;
		goto out;
	}
	if ((d.base = event_base_new()) == NULL)
		fatalx("cannot make an event base");
	if ((d.ctl = control_new(d.base, d.cf, d.store, &cause)) == NULL) {
		log_warnx("%s", cause);
		rv = EXIT_RUNTIME;
		goto out;
	}
	if ((d.edge = edge_new(d.base, d.cf, d.ctl, &cause)) == NULL) {
		log_warnx("%s", cause);
		rv = EXIT_RUNTIME;
		goto out;
	}
	if (control_start(d.ctl, &cause) == -1) {
		log_warnx("%s", cause);
		rv = EXIT_RUNTIME;
		goto out;
	}
	/* Only "sandboxd status" needs it: the daemon serves without. */
	if ((d.admin = admin_new(d.base, d.cf, d.ctl, d.edge, &cause)) ==
	    NULL) {
		log_warnx("%s; sandboxd status reads the store only", cause);
		free(cause);
		cause = NULL;
	}
	for (i = 0; i < (int)nitems(signums); i++) {
		sigs[i] = evsignal_new(d.base, signums[i], signal_cb, &d);
		event_add(sigs[i], NULL);
	}
	log_info("sandboxd %s serving\tconfig=\"%s\" data_dir=%s "
	    "preview_domain=%s instance=%s", PACKAGE_VERSION, d.cf->path,
	    d.cf->data_dir, d.cf->preview_domain, d.cf->instance);
	/*
	 * Ready once the store is open and the listeners accept: the API
	 * answers without Docker (healthz says 503), and the reconciler
	 * catches up when Docker comes; STATUS= tells which it is.
	 */
	if ((wd_ms = notify_watchdog_start(d.base)) > 0)
		log_info("watchdog: pinging the service manager\tevery_ms=%lld",
		    (long long)wd_ms);
	notify_status("serving; waiting for Docker (first reconcile)");
	notify_ready();
	event_base_dispatch(d.base);
	for (i = 0; i < (int)nitems(signums); i++)
		event_free(sigs[i]);
	log_info("sandboxd stopped; sandboxes keep running");
	rv = 0;
out:
	if (rv != 0)
		notify_status("failed to start: %s", cause != NULL ? cause :
		    "see the log");
	free(cause);
	admin_free(d.admin);
	if (d.edge != NULL)
		edge_free(d.edge);
	if (d.ctl != NULL)
		control_free(d.ctl);
	if (d.store != NULL)
		store_close(d.store);
	notify_free();
	if (d.base != NULL)
		event_base_free(d.base);
	evalloc_release();
	config_free(d.cf);
	return (rv);
}

/* SIGTERM/SIGINT: graceful stop; SIGHUP: reload what can be reloaded. */
static void
signal_cb(evutil_socket_t sig, short events, void *arg)
{
	struct daemon	*d = arg;

	if (sig == SIGHUP) {
		notify_reloading();
		log_info("SIGHUP: reloading");
		edge_tls_reload(d->edge);
		edge_stats_reopen(d->edge);
		provider_reload(d->ctl);
		edge_console_reload(d->edge);
		notify_ready();
		return;
	}
	if (d->stopping) {
		log_info("second signal: stopping now");
		event_base_loopexit(d->base, NULL);
		return;
	}
	d->stopping = 1;
	notify_stopping();
	notify_status("stopping: finishing requests (grace %lld ms)",
	    (long long)d->cf->shutdown_grace_ms);
	log_info("stopping: no new connections, finishing requests\t"
	    "grace_ms=%lld", (long long)d->cf->shutdown_grace_ms);
	edge_shutdown(d->edge, d->cf->shutdown_grace_ms, shutdown_done_cb, d);
}

static void
shutdown_done_cb(void *arg)
{
	struct daemon	*d = arg;

	event_base_loopexit(d->base, NULL);
}

static int
cmd_check_config(int argc, char **argv)
{
	static const char help[] = "usage: sandboxd check-config [-c FILE]\n\n"
	    "Validate a config file (default " CONFIG_DEFAULT_PATH "), and load "
	    "every\ntls_cert/tls_key pair in it as the daemon would.\n"
	    "Exit 0 if it is valid; otherwise print every error as "
	    "FILE:LINE: KEY: message\nand exit 2.\n";
	struct config	*cf;
	const char	*path;
	char		*cause = NULL;
	int		 rv;

	if ((rv = parse_c(argc, argv, help, &path)) != -1)
		return (rv);
	if (optind != argc) {
		fputs(help, stderr);
		return (EXIT_USAGE);
	}
	log_init(LOG_LEVEL_WARN);
	if ((cf = load_config(path, 1)) == NULL)
		return (EXIT_USAGE);
	/* The certificates too: a key that does not match is an error. */
	if (edge_tls_check(cf, &cause) != 0) {
		fprintf(stderr, "%s\n", cause);
		free(cause);
		config_free(cf);
		return (EXIT_USAGE);
	}
	printf("%s: ok\n", cf->path);
	config_free(cf);
	return (0);
}

static int
cmd_version(int argc, char **argv)
{
	if (argc > 1 && strcmp(argv[1], "--help") == 0) {
		printf("usage: sandboxd version\n\nPrint the version.\n");
		return (0);
	}
	printf("sandboxd %s\n", PACKAGE_VERSION);
	return (0);
}

static int
cmd_backup(int argc, char **argv)
{
	static const char help[] = "usage: sandboxd backup -c FILE DEST\n\n"
	    "Copy the store (data_dir/sandboxd.db) to DEST with SQLite's "
	    "online backup,\nconsistent even while the daemon runs. DEST "
	    "must not exist.\n";
	struct config	*cf;
	struct store	*store;
	const char	*path;
	char		*dbpath, *cause = NULL;
	int		 rv;

	if ((rv = parse_c(argc, argv, help, &path)) != -1)
		return (rv);
	if (optind != argc - 1) {
		fputs(help, stderr);
		return (EXIT_USAGE);
	}
	log_init(LOG_LEVEL_WARN);
	if ((cf = load_config(path, 1)) == NULL)
		return (EXIT_USAGE);
	xasprintf(&dbpath, "%s/sandboxd.db", cf->data_dir);
	if (access(dbpath, F_OK) != 0) {
		fprintf(stderr, "sandboxd: no store at %s\n", dbpath);
		rv = EXIT_RUNTIME;
	} else if ((store = store_open(dbpath, &cause)) == NULL) {
		fprintf(stderr, "sandboxd: %s\n", cause);
		rv = EXIT_RUNTIME;
	} else {
		rv = 0;
		if (store_backup(store, argv[optind], &cause) != 0) {
			fprintf(stderr, "sandboxd: backup failed: %s\n",
			    cause != NULL ? cause : "?");
			rv = EXIT_RUNTIME;
		} else
			printf("%s: backed up to %s\n", dbpath, argv[optind]);
		store_close(store);
	}
	free(cause);
	free(dbpath);
	config_free(cf);
	return (rv);
}
