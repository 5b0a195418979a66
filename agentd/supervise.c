/*
 * The dev server: the template's dev_command run with /bin/sh -c in the
 * workspace, in its own session so it and everything it starts can be
 * signalled as one process group. Its stdout and stderr go into one pipe:
 * agentd keeps the bytes in a ring of recent output (GET /dev/logs) and
 * copies them to its own stderr, so they are still in the container's log.
 * When it dies it is started again after a backoff of 1 s doubling to 30 s;
 * a run that lasted over 30 s resets it. With a port, it is "ready" once a
 * connect to it succeeds, probed with a backoff after each start.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <sys/socket.h>
#include <sys/wait.h>

#include <netinet/in.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json.h>

#include "common/common.h"
#include "agentd/agentd.h"

#define SUPERVISOR_BACKOFF_MIN	1000
#define SUPERVISOR_BACKOFF_MAX	30000
#define SUPERVISOR_STABLE_MS	30000
#define SUPERVISOR_KILL_MS	5000
#define SUPERVISOR_PROBE_MIN_MS	10
#define SUPERVISOR_PROBE_MAX_MS	500

static void	supervisor_start(struct supervisor *, int64_t);
static void	supervisor_probe_close(struct supervisor *);
static void	supervisor_probe_retry(struct supervisor *, int64_t);
static int	supervisor_probe_tick(struct supervisor *, int64_t);
static int	supervisor_min(int, int);

/* Prepare to run command (NULL or "": no dev server), first start now. */
void
supervisor_init(struct supervisor *sv, const char *command,
    const char *workdir, const struct sockaddr_in *probe, int64_t now_ms)
{
	memset(sv, 0, sizeof *sv);
	if (command != NULL && *command == '\0')
		command = NULL;
	sv->command = command;
	sv->workdir = workdir;
	if (probe != NULL)
		sv->probe_addr = *probe;
	sv->backoff_ms = SUPERVISOR_BACKOFF_MIN;
	sv->out_fd = sv->probe_fd = -1;
	sv->last_status = -1;
	sv->state = SV_NONE;
	if (command != NULL) {
		sv->next_start_ms = now_ms;
		sv->state = SV_STARTING;
		sv->ring = xmalloc(SUPERVISOR_RING_SIZE);
	}
}

const char *
supervisor_state_name(enum supervisor_state s)
{
	switch (s) {
	case SV_NONE:
		return "none";
	case SV_STARTING:
		return "starting";
	case SV_READY:
		return "ready";
	case SV_CRASHED:
		return "crashed";
	case SV_RESTARTING:
		return "restarting";
	}
	return "unknown";
}

static int
supervisor_min(int a, int b)
{
	if (a < 0)
		return b;
	if (b < 0)
		return a;
	return a < b ? a : b;
}

/* Fork and exec the dev server. */
static void
supervisor_start(struct supervisor *sv, int64_t now_ms)
{
	pid_t	pid;
	int	p[2];

	sv->next_start_ms = 0;
	if (sv->out_fd != -1) {
		/* What the last run's leftovers still write is not ours. */
		close(sv->out_fd);
		sv->out_fd = -1;
	}
	if (pipe2(p, O_CLOEXEC) == -1) {
		log_warn("dev server: pipe");
		sv->next_start_ms = now_ms + sv->backoff_ms;
		return;
	}
	if ((pid = agentd_fork()) == -1) {
		/* Out of processes (pids limit): try again later. */
		log_warn("dev server: fork");
		close(p[0]);
		close(p[1]);
		sv->next_start_ms = now_ms + sv->backoff_ms;
		return;
	}
	if (pid == 0) {
		setsid();
		dup2(p[1], STDOUT_FILENO);
		dup2(p[1], STDERR_FILENO);
		if (chdir(sv->workdir) == -1) {
			fprintf(stderr, "agentd: dev server: chdir %s: %s\n",
			    sv->workdir, strerror(errno));
			_exit(127);
		}
		execl("/bin/sh", "sh", "-c", sv->command, (char *)NULL);
		fprintf(stderr, "agentd: dev server: exec /bin/sh: %s\n",
		    strerror(errno));
		_exit(127);
	}
	close(p[1]);
	fcntl(p[0], F_SETFL, O_NONBLOCK);
	sv->out_fd = p[0];
	if (sv->starts++ > 0)
		sv->restarts++;
	sv->pid = pid;
	sv->started_ms = now_ms;
	sv->state = SV_STARTING;
	if (sv->probe_addr.sin_port != 0) {
		sv->probe_backoff_ms = SUPERVISOR_PROBE_MIN_MS;
		sv->probe_next_ms = now_ms + SUPERVISOR_PROBE_MIN_MS;
	} else
		sv->state = SV_READY;
	log_info("dev server started\tpid=%ld restarts=%d", (long)pid,
	    sv->restarts);
}

static void
supervisor_probe_close(struct supervisor *sv)
{
	if (sv->probe_fd != -1) {
		close(sv->probe_fd);
		sv->probe_fd = -1;
	}
}

static void
supervisor_probe_retry(struct supervisor *sv, int64_t now_ms)
{
	supervisor_probe_close(sv);
	sv->probe_next_ms = now_ms + sv->probe_backoff_ms;
	sv->probe_backoff_ms *= 2;
	if (sv->probe_backoff_ms > SUPERVISOR_PROBE_MAX_MS)
		sv->probe_backoff_ms = SUPERVISOR_PROBE_MAX_MS;
}

/* The probe's connect finished: accepted, or refused. */
void
supervisor_probe_event(struct supervisor *sv, int64_t now_ms)
{
	socklen_t	len = sizeof(int);
	int		err = 0;

	if (sv->probe_fd == -1)
		return;
	if (getsockopt(sv->probe_fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1)
		err = errno;
	if (err != 0) {
		supervisor_probe_retry(sv, now_ms);
		return;
	}
	supervisor_probe_close(sv);
	if (sv->state == SV_STARTING) {
		sv->state = SV_READY;
		log_info("dev server ready\tpid=%ld port=%d ms=%lld",
		    (long)sv->pid, ntohs(sv->probe_addr.sin_port),
		    (long long)(now_ms - sv->started_ms));
	}
}

/* Start the next connect if one is due; ms to the next try or -1. */
static int
supervisor_probe_tick(struct supervisor *sv, int64_t now_ms)
{
	int	fd;

	if (sv->state != SV_STARTING || sv->pid == 0 ||
	    sv->probe_addr.sin_port == 0 || sv->probe_fd != -1)
		return -1;
	if (now_ms < sv->probe_next_ms)
		return (int)(sv->probe_next_ms - now_ms);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1) {
		supervisor_probe_retry(sv, now_ms);
		return sv->probe_backoff_ms;
	}
	if (connect(fd, (struct sockaddr *)&sv->probe_addr,
	    sizeof sv->probe_addr) == 0) {
		sv->probe_fd = fd;
		supervisor_probe_event(sv, now_ms);
		return -1;
	}
	if (errno == EINPROGRESS) {
		sv->probe_fd = fd;
		return -1;
	}
	close(fd);
	supervisor_probe_retry(sv, now_ms);
	return (int)(sv->probe_next_ms - now_ms);
}

/* Start the command or probe if due; ms to the next due time, or -1. */
int
supervisor_tick(struct supervisor *sv, int64_t now_ms)
{
	int	timeout = -1;

	if (sv->command == NULL || sv->stopping)
		return -1;
	if (sv->state == SV_RESTARTING && sv->pid != 0) {
		if (now_ms >= sv->kill_ms) {
			kill(-sv->pid, SIGKILL);
			sv->kill_ms = INT64_MAX;
		} else if (sv->kill_ms != INT64_MAX)
			timeout = (int)(sv->kill_ms - now_ms);
	}
	if (sv->pid == 0 && sv->next_start_ms != 0) {
		if (now_ms >= sv->next_start_ms)
			supervisor_start(sv, now_ms);
		if (sv->next_start_ms != 0)
			timeout = supervisor_min(timeout,
			    (int)(sv->next_start_ms - now_ms));
	}
	return supervisor_min(timeout, supervisor_probe_tick(sv, now_ms));
}

/* A child was reaped; returns 1 if it was the dev server. */
int
supervisor_reaped(struct supervisor *sv, pid_t pid, int status,
    int64_t now_ms)
{
	int64_t	ran;

	if (sv->pid == 0 || pid != sv->pid)
		return 0;
	sv->pid = 0;
	sv->last_status = status;
	supervisor_probe_close(sv);
	ran = now_ms - sv->started_ms;

	if (WIFSIGNALED(status))
		log_info("dev server exited\tpid=%ld signal=%d ran_ms=%lld",
		    (long)pid, WTERMSIG(status), (long long)ran);
	else
		log_info("dev server exited\tpid=%ld status=%d ran_ms=%lld",
		    (long)pid, WEXITSTATUS(status), (long long)ran);
	if (sv->stopping)
		return 1;
	if (sv->state == SV_RESTARTING) {
		/* Asked for: at once, and a fresh backoff. */
		sv->backoff_ms = SUPERVISOR_BACKOFF_MIN;
		sv->next_start_ms = now_ms;
		return 1;
	}

	/* A long run means it was healthy; a crash loop backs off. */
	sv->state = SV_CRASHED;
	if (ran > SUPERVISOR_STABLE_MS)
		sv->backoff_ms = SUPERVISOR_BACKOFF_MIN;
	sv->next_start_ms = now_ms + sv->backoff_ms;
	log_info("dev server restart scheduled\tin_ms=%d", sv->backoff_ms);
	sv->backoff_ms *= 2;
	if (sv->backoff_ms > SUPERVISOR_BACKOFF_MAX)
		sv->backoff_ms = SUPERVISOR_BACKOFF_MAX;
	return 1;
}

/* POST /dev/restart */
int
supervisor_restart(struct supervisor *sv, int64_t now_ms)
{
	if (sv->command == NULL || sv->stopping)
		return -1;
	log_info("dev server restart requested\tpid=%ld", (long)sv->pid);
	sv->state = SV_RESTARTING;
	supervisor_probe_close(sv);
	if (sv->pid == 0) {
		/* Waiting out a backoff: start now. */
		sv->backoff_ms = SUPERVISOR_BACKOFF_MIN;
		sv->next_start_ms = now_ms;
		return 0;
	}
	sv->next_start_ms = 0;
	sv->kill_ms = now_ms + SUPERVISOR_KILL_MS;
	if (kill(-sv->pid, SIGTERM) == -1 && errno == ESRCH)
		kill(sv->pid, SIGTERM);
	return 0;
}

/* Stop restarting and send sig to the dev server's process group. */
void
supervisor_stop(struct supervisor *sv, int sig)
{
	sv->stopping = 1;
	sv->next_start_ms = 0;
	supervisor_probe_close(sv);
	/* The group may still hold children after the leader is gone. */
	if (sv->pid != 0 && kill(-sv->pid, sig) == -1 && errno == ESRCH)
		kill(sv->pid, sig);
}

void
supervisor_free(struct supervisor *sv)
{
	supervisor_probe_close(sv);
	if (sv->out_fd != -1)
		close(sv->out_fd);
	sv->out_fd = -1;
	free(sv->ring);
	sv->ring = NULL;
}

/* Its output: into the ring and onto our stderr (the container log). */
void
supervisor_read(struct supervisor *sv)
{
	char		buf[16384];
	ssize_t		n, w;
	size_t		off, k, pos;
	int		rounds;

	for (rounds = 0; rounds < 16 && sv->out_fd != -1; rounds++) {
		n = read(sv->out_fd, buf, sizeof buf);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 && errno == EAGAIN)
			return;
		if (n <= 0) {
			close(sv->out_fd);
			sv->out_fd = -1;
			return;
		}
		for (off = 0; off < (size_t)n; off += k) {
			pos = (size_t)(sv->ring_total % SUPERVISOR_RING_SIZE);
			k = SUPERVISOR_RING_SIZE - pos;
			if (k > (size_t)n - off)
				k = (size_t)n - off;
			memcpy(sv->ring + pos, buf + off, k);
			sv->ring_total += k;
		}
		for (off = 0; off < (size_t)n; off += (size_t)w) {
			w = write(STDERR_FILENO, buf + off, (size_t)n - off);
			if (w <= 0)
				break;
		}
	}
}

/* Copy ring bytes from absolute *pos on; returns the length. */
size_t
supervisor_ring_copy(struct supervisor *sv, uint64_t *pos, size_t max,
    int from_line, char **out)
{
	uint64_t	 oldest, p;
	size_t		 len, i, k, at;
	char		*nl;

	*out = NULL;
	if (sv->ring == NULL)
		return 0;
	oldest = sv->ring_total > SUPERVISOR_RING_SIZE ?
	    sv->ring_total - SUPERVISOR_RING_SIZE : 0;
	p = *pos < oldest ? oldest : *pos;
	if (p >= sv->ring_total) {
		*pos = sv->ring_total;
		return 0;
	}
	len = (size_t)(sv->ring_total - p);
	if (len > max)
		len = max;
	*out = xmalloc(len + 1);
	for (i = 0; i < len; i += k) {
		at = (size_t)((p + i) % SUPERVISOR_RING_SIZE);
		k = SUPERVISOR_RING_SIZE - at;
		if (k > len - i)
			k = len - i;
		memcpy(*out + i, sv->ring + at, k);
	}
	*pos = p + len;
	if (from_line && p > 0 && p == oldest && (nl = memchr(*out, '\n',
	    len)) != NULL) {
		/* The ring wrapped mid-line: start at the next line. */
		k = (size_t)(nl + 1 - *out);
		memmove(*out, nl + 1, len - k);
		len -= k;
	}
	return len;
}

/* The GET /dev object. */
struct json_object *
supervisor_json(struct supervisor *sv)
{
	struct json_object	*obj, *last = NULL;
	int			 code, sig;

	obj = json_object_new_object();
	json_object_object_add(obj, "state", json_object_new_string(
	    supervisor_state_name(sv->state)));
	json_object_object_add(obj, "restarts",
	    json_object_new_int(sv->restarts));
	json_object_object_add(obj, "pid", json_object_new_int((int)sv->pid));
	json_object_object_add(obj, "port", sv->probe_addr.sin_port == 0 ?
	    NULL : json_object_new_int(ntohs(sv->probe_addr.sin_port)));
	json_object_object_add(obj, "command", sv->command == NULL ? NULL :
	    json_object_new_string(sv->command));
	if (sv->last_status != -1) {
		exec_status(sv->last_status, &code, &sig);
		last = json_object_new_object();
		json_object_object_add(last, "exit_code",
		    json_object_new_int(code));
		json_object_object_add(last, "signal", sig == -1 ? NULL :
		    json_object_new_int(sig));
	}
	json_object_object_add(obj, "last_exit", last);
	return obj;
}
