/*
 * libFuzzer target: what agentd (inside the sandbox) checks of the
 * daemon's requests before it runs anything: the JSON bodies of
 * POST /exec (exec_parse, what exec_start runs first) and POST /tasks
 * (task_check, what task_create runs first), parsed from the body as
 * agentd_body does (one JSON value, nothing after it). The first input
 * byte picks the route, the rest is the body. (The request head is
 * common/http.c's parser, fuzzed by http_request; the terminal's frames
 * by pty_frame.)
 *
 * Invariants: nothing is forked (agentd_fork here aborts); a refusal
 * has a cause; an accepted exec has a non-empty argv without NULs, an
 * environment of NAME=value strings, an existing cwd and its limits in
 * range; an accepted task runs a non-empty argv: the command given, or
 * claude or opencode with the prompt never taken for an option.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <sys/stat.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json.h>

#include "common/common.h"
#include "agentd/agentd.h"
#include "tests/fuzz/fuzz.h"

static char	 fuzz_agentd_dir[] = "/tmp/sbx-fuzz-agentd.XXXXXX";
static char	*fuzz_agentd_ws;
static char	*fuzz_agentd_state;	/* task_init and git_init keep these */
static int	 fuzz_agentd_ready;

static void	fuzz_agentd_init(void);
static void	fuzz_agentd_cleanup(void);

/* The checks must never start a process. */
pid_t
agentd_fork(void)
{
	fprintf(stderr, "fuzz_agentd_request: agentd_fork called\n");
	abort();
}

static void
fuzz_agentd_cleanup(void)
{
	fuzz_rm_tree(fuzz_agentd_dir);
}

static void
fuzz_agentd_init(void)
{
	log_init(LOG_LEVEL_WARN);
	FUZZ_ASSERT(mkdtemp(fuzz_agentd_dir) != NULL);
	atexit(fuzz_agentd_cleanup);
	xasprintf(&fuzz_agentd_ws, "%s/workspace", fuzz_agentd_dir);
	xasprintf(&fuzz_agentd_state, "%s/state", fuzz_agentd_dir);
	FUZZ_ASSERT(mkdir(fuzz_agentd_ws, 0755) == 0);
	FUZZ_ASSERT(mkdir(fuzz_agentd_state, 0700) == 0);
	FUZZ_ASSERT(task_init(fuzz_agentd_ws, fuzz_agentd_state,
	    1024 * 1024) == 0);
	fuzz_agentd_ready = 1;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct json_tokener	*tok;
	struct json_object	*req;
	struct exec_spec	 spec;
	struct stat		 sb;
	char			*cause = NULL, **argv;
	size_t			 i, len;

	if (!fuzz_agentd_ready)
		fuzz_agentd_init();
	if (size < 1)
		return 0;
	len = size - 1;
	tok = json_tokener_new();
	req = json_tokener_parse_ex(tok, (const char *)data + 1, (int)len);
	if (req == NULL || json_tokener_get_error(tok) != json_tokener_success ||
	    json_tokener_get_parse_end(tok) != len) {
		json_object_put(req);
		json_tokener_free(tok);
		return 0;
	}
	json_tokener_free(tok);

	if ((data[0] & 1) == 0) {
		if (exec_parse(req, fuzz_agentd_ws, &spec, &cause) == -1) {
			FUZZ_ASSERT(cause != NULL && spec.argv == NULL);
			free(cause);
			json_object_put(req);
			return 0;
		}
		FUZZ_ASSERT(cause == NULL);
		FUZZ_ASSERT(spec.argv != NULL && spec.argv[0] != NULL &&
		    spec.argv[0][0] != '\0');
		FUZZ_ASSERT(spec.envp != NULL);
		for (i = 0; spec.envp[i] != NULL; i++)
			FUZZ_ASSERT(strchr(spec.envp[i], '=') != NULL &&
			    spec.envp[i][0] != '=');
		FUZZ_ASSERT(spec.cwd != NULL && stat(spec.cwd, &sb) == 0 &&
		    S_ISDIR(sb.st_mode));
		FUZZ_ASSERT(spec.timeout_s >= 1 && spec.max_output >= 0);
		exec_spec_clear(&spec);
	} else {
		if ((argv = task_check(req, &cause)) == NULL) {
			FUZZ_ASSERT(cause != NULL);
			free(cause);
			json_object_put(req);
			return 0;
		}
		FUZZ_ASSERT(cause == NULL && argv[0] != NULL &&
		    argv[0][0] != '\0');
		if (strcmp(argv[0], "claude") == 0 ||
		    strcmp(argv[0], "opencode") == 0) {
			/* The prompt follows -p, or is last for opencode. */
			for (i = 0; argv[i] != NULL; i++)
				;
			if (strcmp(argv[0], "claude") == 0)
				FUZZ_ASSERT(i >= 3 && argv[2][0] != '-');
			else
				FUZZ_ASSERT(argv[i - 1][0] != '-');
		}
		exec_free_strv(argv);
	}
	json_object_put(req);
	return 0;
}
