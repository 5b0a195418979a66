/*
 * Unit tests for control/egress.c: the bridge name from Docker's network
 * inspect answer, and the ruleset for each mode. Where nft is installed and
 * we are root, each ruleset is also checked by nft itself (`nft -c`: parsed
 * and validated against the kernel, nothing loaded). The rules in force are
 * proven by tests/blackbox/test_egress.py.
 */
#include <sys/wait.h>

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json.h>

#include "control/control_int.h"
#include "tests/unit/unit.h"

static struct config *conf(const char *);
static int	 nft_check(const char *);

static struct config *
conf(const char *text)
{
	struct config	*c;
	char		*errs = NULL;

	if ((c = config_parse("t.conf", text, &errs)) == NULL)
		fatalx("config: %s", errs);
	return (c);
}

/* 1 if `nft -c -f -` accepts the text, 0 if not, -1 if it cannot run. */
static int
nft_check(const char *text)
{
	FILE	*p;
	int	 status;

	if (geteuid() != 0 || (access("/usr/sbin/nft", X_OK) != 0 &&
	    access("/sbin/nft", X_OK) != 0))
		return (-1);
	if ((p = popen("PATH=/usr/sbin:/sbin:$PATH nft -c -f -", "w")) == NULL)
		return (-1);
	fputs(text, p);
	status = pclose(p);
	return (WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static void
test_bridge_name(void)
{
	struct json_object	*net;
	char			 buf[64];

	net = json_tokener_parse("{\"Id\":\"98b6569632991bb6dee6ef675ef2d0d4\","
	    "\"Options\":{\"com.docker.network.bridge.enable_icc\":\"false\"}}");
	CHECK(egress_bridge_name(net, buf, sizeof buf) == 0);
	CHECK_STR(buf, "br-98b656963299");
	json_object_put(net);
	net = json_tokener_parse("{\"Id\":\"98b6569632991bb6\",\"Options\":"
	    "{\"com.docker.network.bridge.name\":\"docker0\"}}");
	CHECK(egress_bridge_name(net, buf, sizeof buf) == 0);
	CHECK_STR(buf, "docker0");
	json_object_put(net);
	/* Nothing that could break out of the quoted name in the ruleset. */
	net = json_tokener_parse("{\"Id\":\"x\",\"Options\":"
	    "{\"com.docker.network.bridge.name\":\"a\\\" accept\"}}");
	CHECK(egress_bridge_name(net, buf, sizeof buf) == -1);
	json_object_put(net);
	net = json_tokener_parse("{\"Options\":"
	    "{\"com.docker.network.bridge.name\":\"abcdefghijklmnop\"}}");
	CHECK(egress_bridge_name(net, buf, sizeof buf) == -1);
	json_object_put(net);
	net = json_tokener_parse("{\"Id\":\"short\"}");
	CHECK(egress_bridge_name(net, buf, sizeof buf) == -1);
	json_object_put(net);
	net = json_tokener_parse("{}");
	CHECK(egress_bridge_name(net, buf, sizeof buf) == -1);
	json_object_put(net);
}

static void
test_rulesets(void)
{
	static const char	*modes[] = { "public-only", "open", "none" };
	struct config		*c;
	struct cfg_cidr		 dns[2];
	const char		*err;
	char			*text, *cfgtext;
	size_t			 i;
	int			 allow, ok;

	CHECK(config_parse_cidr("10.255.255.53", &dns[0], &err) == 0);
	CHECK(config_parse_cidr("fd00::53", &dns[1], &err) == 0);
	for (i = 0; i < nitems(modes); i++) {
		for (allow = 0; allow < 2; allow++) {
			xasprintf(&cfgtext, "egress = %s\n%s", modes[i],
			    allow ? "egress_allow = 10.250.1.2, fd00:1::/64, "
			    "169.254.169.254/32\n" : "");
			c = conf(cfgtext);
			free(cfgtext);
			text = egress_ruleset(c, "sandboxd_t-1.x", "br-0123abcd",
			    dns, allow ? 2 : 0, allow ? "172.30.0.1" : NULL);
			/* Replace atomically: exist, delete, anew. */
			CHECK(strncmp(text, "table inet sandboxd_t-1.x\n"
			    "delete table inet sandboxd_t-1.x\n"
			    "table inet sandboxd_t-1.x {\n", 80) == 0);
			CHECK(strstr(text, "iifname != \"br-0123abcd\" accept")
			    != NULL);
			CHECK(strstr(text, "oifname \"br-0123abcd\" counter drop "
			    "comment \"sandbox to sandbox\"") != NULL);
			CHECK((strstr(text, "ip daddr 172.30.0.1 tcp dport "
			    "7070 counter accept comment \"credential proxy\"")
			    != NULL) == allow);
			CHECK(strstr(text, "counter drop comment \"the host\"")
			    != NULL);
			CHECK(strstr(text, "ip daddr 169.254.0.0/16 counter "
			    "drop") != NULL);
			CHECK((strstr(text, "comment \"private\"") != NULL) ==
			    (i == 0));
			CHECK((strstr(text, "comment \"egress none\"") !=
			    NULL) == (i == 2));
			/* DNS only to the resolvers, never under none. */
			CHECK((strstr(text, "th dport 53") != NULL) ==
			    (allow && i != 2));
			CHECK((strstr(text, "@allow4 counter accept") != NULL)
			    == allow);
			CHECK((strstr(text, "@allow6 counter accept") != NULL)
			    == allow);
			/* egress_allow comes before link-local and the mode. */
			if (allow)
				CHECK(strstr(text, "@allow4") <
				    strstr(text, "169.254.0.0/16 counter"));
			CHECK(strstr(text, "sandbox to sandbox") <
			    strstr(text, "@allow4 counter accept") || !allow);
			ok = nft_check(text);
			if (ok == -1 && i == 0 && allow == 0)
				fprintf(stderr, "note: nft -c not run (needs "
				    "root and nft)\n");
			if (ok != -1)
				CHECK(ok == 1);
			free(text);
			config_free(c);
		}
	}
}

int
main(void)
{
	log_init(LOG_LEVEL_WARN);
	RUN(test_bridge_name);
	RUN(test_rulesets);
	return (unit_finish());
}
