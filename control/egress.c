/*
 * control/egress: what a sandbox may reach, enforced by the daemon with an
 * nftables table of its own, "inet sandboxd_<instance>", scoped to its
 * bridge (docs/network.md says why nftables and how the rules read).
 *
 * The table has two base chains at priority filter - 10, so they run before
 * Docker's iptables-nft chains (table ip filter, priority filter). A drop in
 * ours is final; an accept in ours only means "we do not object": Docker's
 * chains still decide after us, and we never rely on them. Docker never
 * touches a table it did not make, so a dockerd restart leaves ours alone.
 *
 * The whole table is loaded in one `nft -f -` transaction ("make it exist,
 * delete it, make it anew"), so a reload after a crash replaces the rules
 * atomically and never duplicates them, and a failed load leaves the old
 * ones in force. nft runs as a child with the ruleset on stdin (a memfd);
 * the loop waits for it through the SIGCHLD event, never blocks on it.
 * Only at exit, when the loop is done, is the table deleted synchronously.
 */
#include "config.h"

#include <sys/mman.h>
#include <sys/wait.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <json.h>

#include "control/control_int.h"

/* How often the table is looked for (an operator's `nft flush ruleset`). */
#define EGRESS_CHECK_MS		30000
/* How long exit waits for `nft delete table`. */
#define EGRESS_REMOVE_MS	5000

enum egress_state {
	EGRESS_IDLE,		/* control_start not called (unit tests) */
	EGRESS_PENDING,		/* the first load is under way */
	EGRESS_ON,		/* the rules are in force */
	EGRESS_FAILED,		/* they are not: no sandbox is started */
};

/* What a child runs: argv, with input (may be NULL) on its stdin. */
struct egress_job {
	const char	*path;
	char *const	*argv;
	const char	*input;
	int		 quiet;		/* stdout and stderr to /dev/null */
};

struct egress {
	struct control		*ctl;
	enum egress_state	 state;
	char			 table[80];	/* sandboxd_<instance> */
	char			*nft;		/* NULL: none found */
	char			*bridge;	/* the rules are for this one */
	char			*error;		/* why they are not in force */
	int			 loading;	/* an nft child is under way */
	int			 again;		/* load once more after it */
	int			 checking;	/* a check child is under way */
	void			(*done)(struct control *);
	struct event		*check;
};

static char	*egress_find_nft(void);
static int	 egress_exec(void *);
static int	 egress_spawn(struct control *, const char *,
		    control_child_cb, void *, int);
static void	 egress_load(struct egress *);
static void	 egress_loaded_cb(int, void *);
static void	 egress_check_cb(evutil_socket_t, short, void *);
static void	 egress_checked_cb(int, void *);
static void	 egress_arm(struct egress *);
static void	 egress_fail(struct egress *, const char *, ...)
		    SBX_PRINTF(2, 3);
static void	 egress_resolvers(struct cfg_cidr **, size_t *);
static void	 egress_set(FILE *, const char *, int,
		    const struct cfg_cidr *, size_t);
static int	 egress_has(const struct cfg_cidr *, size_t, int);

/* Reserved, private and special ranges that public-only refuses. */
static const char *egress_private4 =
	"0.0.0.0/8, 10.0.0.0/8, 100.64.0.0/10, 127.0.0.0/8, "
	"172.16.0.0/12, 192.0.0.0/24, 192.168.0.0/16, 198.18.0.0/15, "
	"224.0.0.0/4, 240.0.0.0/4";
static const char *egress_private6 =
	"::/127, ::ffff:0:0/96, 64:ff9b:1::/48, 100::/64, fc00::/7, "
	"ff00::/8";

/* Set up the egress state; nothing is loaded until egress_apply. */
void
egress_init(struct control *ctl)
{
	struct egress	*eg;

	eg = xcalloc(1, sizeof *eg);
	eg->ctl = ctl;
	eg->state = EGRESS_IDLE;
	snprintf(eg->table, sizeof eg->table, "sandboxd_%s",
	    ctl->cf->instance);
	eg->nft = egress_find_nft();
	eg->check = evtimer_new(ctl->base, egress_check_cb, eg);
	ctl->egress = eg;
}

/* nft from PATH, else where Debian puts it; NULL if nowhere. */
static char *
egress_find_nft(void)
{
	const char	*env = getenv("PATH");
	char		*dirs, *rest, *dir, *path;

	xasprintf(&dirs, "%s:/usr/sbin:/sbin", env != NULL ? env : "");
	for (rest = dirs; (dir = strsep(&rest, ":")) != NULL;) {
		if (*dir != '/')
			continue;
		xasprintf(&path, "%s/nft", dir);
		if (access(path, X_OK) == 0) {
			free(dirs);
			return (path);
		}
		free(path);
	}
	free(dirs);
	return (NULL);
}

/*
 * The bridge interface of a network, from Docker's inspect answer: its
 * com.docker.network.bridge.name option, or "br-" and the first 12
 * characters of its id, which is how Docker names it otherwise.
 */
int
egress_bridge_name(struct json_object *net, char *buf, size_t len)
{
	struct json_object	*o, *v;
	const char		*name = NULL, *id;

	if (json_object_object_get_ex(net, "Options", &o) &&
	    json_object_object_get_ex(o, "com.docker.network.bridge.name",
	    &v) && json_object_is_type(v, json_type_string))
		name = json_object_get_string(v);
	if (name != NULL && *name != '\0') {
		if ((size_t)snprintf(buf, len, "%s", name) >= len)
			return (-1);
	} else {
		if (!json_object_object_get_ex(net, "Id", &v) ||
		    (id = json_object_get_string(v)) == NULL ||
		    strlen(id) < 12)
			return (-1);
		snprintf(buf, len, "br-%.12s", id);
	}
	/* An interface name, quoted into the ruleset: nothing odd in it. */
	if (strlen(buf) == 0 || strlen(buf) > 15 ||
	    strspn(buf, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	    "0123456789_.-") != strlen(buf))
		return (-1);
	return (0);
}

/*
 * The IPv4 gateway of a network (the host's address on its bridge), from
 * Docker's inspect answer: IPAM.Config[].Gateway. 0, or -1 if none.
 */
int
egress_gateway(struct json_object *net, struct in_addr *out)
{
	struct json_object	*ipam, *cfgs, *c, *gw;
	size_t			 i;

	if (!json_object_object_get_ex(net, "IPAM", &ipam) ||
	    !json_object_object_get_ex(ipam, "Config", &cfgs) ||
	    !json_object_is_type(cfgs, json_type_array))
		return (-1);
	for (i = 0; i < json_object_array_length(cfgs); i++) {
		c = json_object_array_get_idx(cfgs, i);
		if (json_object_object_get_ex(c, "Gateway", &gw) &&
		    json_object_is_type(gw, json_type_string) &&
		    inet_pton(AF_INET, json_object_get_string(gw), out) == 1)
			return (0);
	}
	return (-1);
}

/* An nftables set of networks (interval), one element per entry. */
static void
egress_set(FILE *f, const char *name, int family, const struct cfg_cidr *c,
    size_t n)
{
	size_t	i;
	int	first = 1;

	fprintf(f, "\tset %s {\n\t\ttype %s\n\t\tflags interval\n", name,
	    family == AF_INET ? "ipv4_addr" : "ipv6_addr");
	for (i = 0; i < n; i++) {
		if (c[i].family != family)
			continue;
		fprintf(f, "%s%s", first ? "\t\telements = { " : ", ",
		    c[i].text);
		first = 0;
	}
	if (!first)
		fprintf(f, " }\n");
	fprintf(f, "\t}\n");
}

/* 1 if the list holds an entry of this family. */
static int
egress_has(const struct cfg_cidr *c, size_t n, int family)
{
	size_t	i;

	for (i = 0; i < n; i++) {
		if (c[i].family == family)
			return (1);
	}
	return (0);
}

/*
 * The whole ruleset for one bridge (malloc'd). Order matters in each
 * chain: what is always refused comes before what egress_allow opens,
 * and egress_allow before what the mode refuses.
 */
char *
egress_ruleset(const struct config *cf, const char *table, const char *bridge,
    const struct cfg_cidr *dns, size_t ndns, const char *proxy)
{
	const struct cfg_cidr	*allow = cf->egress_allow;
	size_t			 nallow = cf->negress_allow, size;
	char			*text;
	FILE			*f;
	int			 want_dns = cf->egress != CFG_EGRESS_NONE;

	if ((f = open_memstream(&text, &size)) == NULL)
		fatal("open_memstream");
	fprintf(f, "table inet %s\ndelete table inet %s\n", table, table);
	fprintf(f, "table inet %s {\n", table);
	egress_set(f, "allow4", AF_INET, allow, nallow);
	egress_set(f, "allow6", AF_INET6, allow, nallow);
	egress_set(f, "dns4", AF_INET, dns, ndns);
	egress_set(f, "dns6", AF_INET6, dns, ndns);
	fprintf(f, "\tset private4 {\n\t\ttype ipv4_addr\n\t\tflags interval\n"
	    "\t\telements = { %s }\n\t}\n", egress_private4);
	fprintf(f, "\tset private6 {\n\t\ttype ipv6_addr\n\t\tflags interval\n"
	    "\t\telements = { %s }\n\t}\n", egress_private6);

	/* From the sandboxes to anywhere but the host. */
	fprintf(f, "\tchain forward {\n"
	    "\t\ttype filter hook forward priority filter - 10; "
	    "policy accept;\n"
	    "\t\tiifname != \"%s\" accept\n"
	    "\t\tct state established,related accept\n"
	    "\t\toifname \"%s\" counter drop comment \"sandbox to sandbox\"\n",
	    bridge, bridge);
	if (egress_has(allow, nallow, AF_INET))
		fprintf(f, "\t\tip daddr @allow4 counter accept comment "
		    "\"egress_allow\"\n");
	if (egress_has(allow, nallow, AF_INET6))
		fprintf(f, "\t\tip6 daddr @allow6 counter accept comment "
		    "\"egress_allow\"\n");
	if (want_dns && egress_has(dns, ndns, AF_INET))
		fprintf(f, "\t\tip daddr @dns4 meta l4proto { tcp, udp } "
		    "th dport 53 counter accept comment \"dns\"\n");
	if (want_dns && egress_has(dns, ndns, AF_INET6))
		fprintf(f, "\t\tip6 daddr @dns6 meta l4proto { tcp, udp } "
		    "th dport 53 counter accept comment \"dns\"\n");
	fprintf(f, "\t\tip daddr 169.254.0.0/16 counter drop comment "
	    "\"link-local\"\n"
	    "\t\tip6 daddr fe80::/10 counter drop comment \"link-local\"\n");
	switch (cf->egress) {
	case CFG_EGRESS_PUBLIC_ONLY:
		fprintf(f, "\t\tip daddr @private4 counter drop comment "
		    "\"private\"\n"
		    "\t\tip6 daddr @private6 counter drop comment "
		    "\"private\"\n");
		break;
	case CFG_EGRESS_NONE:
		fprintf(f, "\t\tcounter drop comment \"egress none\"\n");
		break;
	case CFG_EGRESS_OPEN:
		break;
	}
	fprintf(f, "\t}\n");

	/*
	 * From the sandboxes to the host itself, whatever its address: only
	 * answers to connections the host made (the proxy's), IPv6 neighbour
	 * discovery, and DNS if the resolver is on the host.
	 */
	fprintf(f, "\tchain input {\n"
	    "\t\ttype filter hook input priority filter - 10; "
	    "policy accept;\n"
	    "\t\tiifname != \"%s\" accept\n"
	    "\t\tct state established,related accept\n"
	    "\t\ticmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, "
	    "nd-router-solicit } accept\n", bridge);
	if (want_dns && egress_has(dns, ndns, AF_INET))
		fprintf(f, "\t\tip daddr @dns4 meta l4proto { tcp, udp } "
		    "th dport 53 counter accept comment \"dns\"\n");
	if (want_dns && egress_has(dns, ndns, AF_INET6))
		fprintf(f, "\t\tip6 daddr @dns6 meta l4proto { tcp, udp } "
		    "th dport 53 counter accept comment \"dns\"\n");
	/* The credential proxy, and only its address and port. */
	if (proxy != NULL)
		fprintf(f, "\t\tip daddr %s tcp dport %d counter accept "
		    "comment \"credential proxy\"\n", proxy,
		    cf->provider_port);
	fprintf(f, "\t\tcounter drop comment \"the host\"\n\t}\n}\n");
	if (fclose(f) != 0)
		fatal("open_memstream");
	return (text);
}

/*
 * The resolvers Docker's embedded DNS forwards to: the host's own, from
 * /etc/resolv.conf and, where systemd-resolved stands in front of them,
 * /run/systemd/resolve/resolv.conf. Docker drops loopback ones (it falls
 * back to public resolvers then), so do we. The queries leave from the
 * container's own address, so they meet these rules.
 */
static void
egress_resolvers(struct cfg_cidr **out, size_t *n)
{
	static const char	*files[] = { "/etc/resolv.conf",
				    "/run/systemd/resolve/resolv.conf" };
	struct cfg_cidr		 c;
	const char		*errstr;
	char			 line[512], word[64], *pct;
	size_t			 i, j;
	FILE			*f;

	*out = NULL;
	*n = 0;
	for (i = 0; i < nitems(files); i++) {
		if ((f = fopen(files[i], "re")) == NULL)
			continue;
		while (fgets(line, sizeof line, f) != NULL) {
			if (sscanf(line, " nameserver %63s", word) != 1)
				continue;
			if ((pct = strchr(word, '%')) != NULL)
				*pct = '\0';	/* fe80::1%eth0: no zones */
			if (config_parse_cidr(word, &c, &errstr) != 0)
				continue;
			if ((c.family == AF_INET && c.addr[0] == 127) ||
			    (c.family == AF_INET6 &&
			    strcmp(c.text, "::1/128") == 0))
				continue;
			for (j = 0; j < *n; j++) {
				if (strcmp((*out)[j].text, c.text) == 0)
					break;
			}
			if (j < *n)
				continue;
			*out = xreallocarray(*out, *n + 1, sizeof **out);
			(*out)[(*n)++] = c;
		}
		fclose(f);
	}
}

/* In the child: the input on stdin (a memfd), nothing else open, exec. */
static int
egress_exec(void *arg)
{
	struct egress_job	*job = arg;
	size_t			 len, off = 0;
	ssize_t			 w;
	int			 fd;

	if (job->input != NULL) {
		if ((fd = memfd_create("sandboxd-egress", 0)) == -1)
			return (126);
		len = strlen(job->input);
		while (off < len) {
			if ((w = write(fd, job->input + off, len - off)) <= 0)
				return (126);
			off += (size_t)w;
		}
		if (lseek(fd, 0, SEEK_SET) != 0)
			return (126);
	} else if ((fd = open("/dev/null", O_RDONLY)) == -1)
		return (126);
	if (dup2(fd, STDIN_FILENO) == -1)
		return (126);
	if (job->quiet && (fd = open("/dev/null", O_WRONLY)) != -1) {
		dup2(fd, STDOUT_FILENO);
		dup2(fd, STDERR_FILENO);
	} else
		dup2(STDERR_FILENO, STDOUT_FILENO);	/* nft talks to the log */
	/* nft gets no listener, client or Docker socket of ours. */
	close_range(STDERR_FILENO + 1, ~0U, 0);
	execv(job->path, job->argv);
	return (127);
}

/*
 * Run `nft -f -` with input on its stdin, or with input NULL a quiet
 * `nft list table inet T` (is the table there?). -1: no fork.
 */
static int
egress_spawn(struct control *ctl, const char *input, control_child_cb cb,
    void *arg, int quiet)
{
	struct egress		*eg = ctl->egress;
	struct egress_job	 job;
	char			*argv[6];

	memset(&job, 0, sizeof job);
	job.path = eg->nft;
	job.quiet = quiet;
	if (input != NULL) {
		argv[0] = "nft";
		argv[1] = "-f";
		argv[2] = "-";
		argv[3] = NULL;
		job.input = input;
	} else {
		/* Is the table there? */
		argv[0] = "nft";
		argv[1] = "list";
		argv[2] = "table";
		argv[3] = "inet";
		argv[4] = eg->table;
		argv[5] = NULL;
	}
	job.argv = argv;
	/* The child has its own copy of job and argv from the fork. */
	return (control_fork(ctl, egress_exec, &job, cb, arg));
}

/* Record why the rules are not in force, loudly. */
static void
egress_fail(struct egress *eg, const char *fmt, ...)
{
	va_list	ap;

	free(eg->error);
	va_start(ap, fmt);
	if (vasprintf(&eg->error, fmt, ap) == -1)
		fatalx("%s: out of memory", __func__);
	va_end(ap);
	eg->state = EGRESS_FAILED;
	log_warnx("EGRESS RULES ARE NOT ENFORCED: %s; sandboxes will not be "
	    "started until they are\ttable=inet %s egress=%s", eg->error,
	    eg->table, config_egress_name(eg->ctl->cf->egress));
}

/*
 * Load the rules for this bridge (Docker's network inspect told us its
 * name), then call done (may be NULL) whether it worked or not: the state
 * says. Called at every sync: after a dockerd restart the network may be
 * new, with a new bridge.
 */
void
egress_apply(struct control *ctl, const char *bridge,
    void (*done)(struct control *))
{
	struct egress	*eg = ctl->egress;

	if (eg->state == EGRESS_IDLE)
		eg->state = EGRESS_PENDING;
	free(eg->bridge);
	eg->bridge = bridge != NULL ? xstrdup(bridge) : NULL;
	if (done != NULL)
		eg->done = done;
	if (eg->loading) {
		eg->again = 1;
		return;
	}
	egress_load(eg);
}

static void
egress_load(struct egress *eg)
{
	struct control	*ctl = eg->ctl;
	struct cfg_cidr	*dns;
	struct in_addr	 gw;
	size_t		 ndns;
	char		*text, gwtext[INET_ADDRSTRLEN];
	const char	*proxy;
	int		 port;
	void		(*done)(struct control *);

	eg->again = 0;
	if (eg->bridge == NULL) {
		egress_fail(eg, "Docker did not tell the bridge interface of "
		    "network %s", ctl->cf->network);
		goto out;
	}
	/* Installed since the last try? */
	if (eg->nft == NULL)
		eg->nft = egress_find_nft();
	if (eg->nft == NULL) {
		egress_fail(eg, "nft (the nftables tool) is not installed: "
		    "apt-get install nftables");
		goto out;
	}
	egress_resolvers(&dns, &ndns);
	proxy = NULL;
	if (provider_address(ctl, &gw, &port) == 0 &&
	    inet_ntop(AF_INET, &gw, gwtext, sizeof gwtext) != NULL)
		proxy = gwtext;
	text = egress_ruleset(ctl->cf, eg->table, eg->bridge, dns, ndns,
	    proxy);
	free(dns);
	log_debug("egress: loading the rules\ttable=inet %s bridge=%s",
	    eg->table, eg->bridge);
	if (egress_spawn(ctl, text, egress_loaded_cb, eg, 0) == -1) {
		free(text);
		egress_fail(eg, "cannot fork for nft");
		goto out;
	}
	free(text);
	eg->loading = 1;
	return;
out:
	egress_arm(eg);		/* try again later */
	done = eg->done;
	eg->done = NULL;
	if (done != NULL)
		done(ctl);
}

/* nft is done: the rules are in force, or they are not. */
static void
egress_loaded_cb(int status, void *arg)
{
	struct egress	*eg = arg;
	void		(*done)(struct control *);

	eg->loading = 0;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
		if (eg->state != EGRESS_ON)
			log_info("egress rules in force\ttable=inet %s "
			    "bridge=%s egress=%s allow=%zu", eg->table,
			    eg->bridge, config_egress_name(eg->ctl->cf->egress),
			    eg->ctl->cf->negress_allow);
		eg->state = EGRESS_ON;
		free(eg->error);
		eg->error = NULL;
	} else if (WIFEXITED(status))
		egress_fail(eg, "%s -f - exited %d (its message is in the "
		    "log above)", eg->nft, WEXITSTATUS(status));
	else
		egress_fail(eg, "%s was killed by signal %d", eg->nft,
		    WIFSIGNALED(status) ? WTERMSIG(status) : 0);
	if (eg->again) {
		egress_load(eg);
		return;
	}
	egress_arm(eg);
	done = eg->done;
	eg->done = NULL;
	if (done != NULL)
		done(eg->ctl);
}

static void
egress_arm(struct egress *eg)
{
	struct timeval	tv;

	tv.tv_sec = EGRESS_CHECK_MS / 1000;
	tv.tv_usec = (EGRESS_CHECK_MS % 1000) * 1000;
	evtimer_add(eg->check, &tv);
}

/* Every 30 s: is the table still there? (Or: try a failed load again.) */
static void
egress_check_cb(evutil_socket_t fd, short events, void *arg)
{
	struct egress	*eg = arg;

	if (eg->loading || eg->checking || eg->bridge == NULL)
		return;
	if (eg->state == EGRESS_FAILED) {
		egress_load(eg);
		return;
	}
	if (egress_spawn(eg->ctl, NULL, egress_checked_cb, eg, 1) == -1) {
		egress_arm(eg);
		return;
	}
	eg->checking = 1;
}

static void
egress_checked_cb(int status, void *arg)
{
	struct egress	*eg = arg;

	eg->checking = 0;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
		egress_arm(eg);
		return;
	}
	log_warnx("egress: table inet %s is gone (someone flushed the "
	    "ruleset?); loading it again", eg->table);
	if (!eg->loading)
		egress_load(eg);
}

/* 0 if sandboxes may start; -1 and *why (static text) while not enforced. */
int
egress_admit(struct control *ctl, const char **why)
{
	struct egress	*eg = ctl->egress;

	switch (eg->state) {
	case EGRESS_IDLE:	/* control_start not called: unit tests */
	case EGRESS_ON:
		return (0);
	case EGRESS_PENDING:
		*why = "This server is still installing its network rules; "
		    "try again in a moment.";
		return (-1);
	case EGRESS_FAILED:
		break;
	}
	*why = "This server cannot enforce its network rules for sandboxes "
	    "(see its log), so it starts none.";
	return (-1);
}

/* 1 while the rules are in force (the metric). */
int
egress_enforced(struct control *ctl)
{
	return (ctl->egress->state == EGRESS_ON);
}

/* For /healthz: the mode and whether the rules are in force. */
struct json_object *
egress_json(struct control *ctl)
{
	struct egress		*eg = ctl->egress;
	struct json_object	*o;
	char			*table;

	o = json_object_new_object();
	json_object_object_add(o, "mode",
	    json_object_new_string(config_egress_name(ctl->cf->egress)));
	json_object_object_add(o, "enforced",
	    json_object_new_boolean(eg->state == EGRESS_ON));
	xasprintf(&table, "inet %s", eg->table);
	json_object_object_add(o, "table", json_object_new_string(table));
	free(table);
	json_object_object_add(o, "bridge", eg->bridge != NULL ?
	    json_object_new_string(eg->bridge) : NULL);
	json_object_object_add(o, "error", eg->error != NULL ?
	    json_object_new_string(eg->error) : NULL);
	return (o);
}

/*
 * At exit, after the loop: delete the table, waiting for nft (bounded).
 * Sandboxes left running are then unfiltered until the next start; see
 * docs/network.md. Frees the state.
 */
void
egress_free(struct control *ctl)
{
	struct egress	*eg = ctl->egress;
	struct timespec	 ts = { 0, 10 * 1000 * 1000 };
	char		*text;
	pid_t		 pid;
	int		 status, waited;

	if (eg == NULL)
		return;
	if (eg->nft != NULL && eg->state != EGRESS_IDLE) {
		xasprintf(&text, "table inet %s\ndelete table inet %s\n",
		    eg->table, eg->table);
		if ((pid = fork()) == 0) {
			struct egress_job	job;
			char			*argv[] = { "nft", "-f", "-",
						    NULL };

			job.path = eg->nft;
			job.argv = argv;
			job.input = text;
			job.quiet = 0;
			_exit(egress_exec(&job));
		}
		for (waited = 0; pid > 0 && waited < EGRESS_REMOVE_MS;
		    waited += 10) {
			if (waitpid(pid, &status, WNOHANG) == pid)
				break;
			nanosleep(&ts, NULL);
		}
		if (pid > 0 && waited >= EGRESS_REMOVE_MS) {
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			log_warnx("egress: nft did not remove table inet %s "
			    "in time", eg->table);
		} else if (pid > 0 && WIFEXITED(status) &&
		    WEXITSTATUS(status) == 0)
			log_info("egress rules removed\ttable=inet %s",
			    eg->table);
		else
			log_warnx("egress: cannot remove table inet %s",
			    eg->table);
		free(text);
	}
	if (eg->check != NULL)
		event_free(eg->check);
	free(eg->nft);
	free(eg->bridge);
	free(eg->error);
	free(eg);
	ctl->egress = NULL;
}
