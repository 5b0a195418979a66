/*
 * The command line's shared pieces: sandboxd.c has main, serve,
 * check-config, version and backup; key.c and status.c the operator's
 * commands. Not a module: nothing below the command line includes this.
 */
#ifndef SBX_SANDBOXD_H
#define SBX_SANDBOXD_H

#include <stdio.h>

#define EXIT_RUNTIME	1
#define EXIT_USAGE	2

struct config;

/* sandboxd.c */
/*
 * getopt for "-c FILE" and "--help": -1 to go on (optind at the first
 * operand), else the exit code (help printed).
 */
int		 parse_c(int, char **, const char *help, const char **path);
/* -c FILE, else the default path if it exists, else the embedded default. */
struct config	*load_config(const char *path, int quiet);

/* key.c */
int		 cmd_key(int, char **);

/* status.c */
int		 cmd_status(int, char **);

#endif /* SBX_SANDBOXD_H */
