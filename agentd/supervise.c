/*
 * The dev server: the template's dev_command run with /bin/sh -c in the
 * workspace, in its own session so it and everything it starts can be
 * signalled as one process group. Its stdio is agentd's, so its output ends
 * up in the container's log. When it dies it is started again after a
 * backoff of 1 s doubling to 30 s; a run that lasted over 30 s resets it.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <sys/wait.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/common.h"
#include "agentd/agentd.h"

#define SUPERVISOR_BACKOFF_MIN	1000
#define SUPERVISOR_BACKOFF_MAX	30000
#define SUPERVISOR_STABLE_MS	30000

static void	supervisor_start(struct supervisor *, int64_t);

/* Prepare to run command (NULL or "": no dev server), first start now. */
void
supervisor_init(struct supervisor *sv, const char *command,
    const char *workdir, int64_t now_ms)
{
	memset(sv, 0, sizeof *sv);
	if (command != NULL && *command == '\0')
		command = NULL;
	sv->command = command;
	sv->workdir = workdir;
	sv->backoff_ms = SUPERVISOR_BACKOFF_MIN;
	if (command != NULL)
		sv->next_start_ms = now_ms;
}

/* Fork and exec the dev server. */
static void
supervisor_start(struct supervisor *sv, int64_t now_ms)
{
	pid_t	pid;

	sv->next_start_ms = 0;
	if ((pid = agentd_fork()) == -1) {
		/* Out of processes (pids limit): try again later. */
		log_warn("dev server: fork");
		sv->next_start_ms = now_ms + sv->backoff_ms;
		return;
	}
	if (pid == 0) {
		setsid();
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
	if (sv->starts++ > 0)
		sv->restarts++;
	sv->pid = pid;
	sv->started_ms = now_ms;
	log_info("dev server started\tpid=%ld restarts=%d", (long)pid,
	    sv->restarts);
}

/* Start the command if it is due; returns ms until the next due time, or -1. */
int
supervisor_tick(struct supervisor *sv, int64_t now_ms)
{
	if (sv->command == NULL || sv->stopping || sv->pid != 0 ||
	    sv->next_start_ms == 0)
		return -1;
	if (now_ms >= sv->next_start_ms) {
		supervisor_start(sv, now_ms);
		if (sv->next_start_ms == 0)
			return -1;
	}
	return (int)(sv->next_start_ms - now_ms);
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
	ran = now_ms - sv->started_ms;

	if (WIFSIGNALED(status))
		log_info("dev server exited\tpid=%ld signal=%d ran_ms=%lld",
		    (long)pid, WTERMSIG(status), (long long)ran);
	else
		log_info("dev server exited\tpid=%ld status=%d ran_ms=%lld",
		    (long)pid, WEXITSTATUS(status), (long long)ran);
	if (sv->stopping)
		return 1;

	/* A long run means it was healthy; a crash loop backs off. */
	if (ran > SUPERVISOR_STABLE_MS)
		sv->backoff_ms = SUPERVISOR_BACKOFF_MIN;
	sv->next_start_ms = now_ms + sv->backoff_ms;
	log_info("dev server restart scheduled\tin_ms=%d", sv->backoff_ms);
	sv->backoff_ms *= 2;
	if (sv->backoff_ms > SUPERVISOR_BACKOFF_MAX)
		sv->backoff_ms = SUPERVISOR_BACKOFF_MAX;
	return 1;
}

/* Stop restarting and send sig to the dev server's process group. */
void
supervisor_stop(struct supervisor *sv, int sig)
{
	sv->stopping = 1;
	sv->next_start_ms = 0;
	/* The group may still hold children after the leader is gone. */
	if (sv->pid != 0 && kill(-sv->pid, sig) == -1 && errno == ESRCH)
		kill(sv->pid, sig);
}
