/*
 * stub_module: a test-only PAM module whose behaviour comes from its arguments,
 * for the stack engine's differential tests (tests/stack/).
 *
 *   stub_module.so log=/abs/file id=TAG [rc=N] [auth=N] [setcred=N] [acct=N]
 *                  [open=N] [close=N] [prelim=N] [update=N]
 *
 * Each call appends "TAG FUNCTION\n" to the log file and returns the number
 * given for that function (chauthtok: `prelim` for the PAM_PRELIM_CHECK pass,
 * `update` for the PAM_UPDATE_AUTHTOK pass), else `rc`, else PAM_SUCCESS.
 * Numbers may lie outside PAM's range on purpose (libpam must treat those as
 * failures). No environment, no conversation: the log is the only side effect.
 *
 * Build: gcc -shared -fPIC -O2 -Wall -o build/stack_stub.so tests/stack/stub_module.c
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <security/pam_modules.h>

static const char *arg_value(int argc, const char **argv, const char *key)
{
	size_t n = strlen(key);

	for (int i = 0; i < argc; i++) {
		if (strncmp(argv[i], key, n) == 0 && argv[i][n] == '=')
			return argv[i] + n + 1;
	}
	return NULL;
}

static int stub(const char *function, int argc, const char **argv)
{
	const char *log = arg_value(argc, argv, "log");
	const char *tag = arg_value(argc, argv, "id");
	const char *value = arg_value(argc, argv, function);

	if (value == NULL)
		value = arg_value(argc, argv, "rc");
	if (log != NULL) {
		char line[512];
		int fd = open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
		int len = snprintf(line, sizeof(line), "%s %s\n", tag ? tag : "?", function);

		if (fd >= 0) {
			if (len > 0 && (size_t)len < sizeof(line) && write(fd, line, (size_t)len) < 0)
				len = -1;
			close(fd);
		}
	}
	return value != NULL ? atoi(value) : PAM_SUCCESS;
}

int pam_sm_authenticate(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
	(void)pamh; (void)flags;
	return stub("auth", argc, argv);
}

int pam_sm_setcred(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
	(void)pamh; (void)flags;
	return stub("setcred", argc, argv);
}

int pam_sm_acct_mgmt(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
	(void)pamh; (void)flags;
	return stub("acct", argc, argv);
}

int pam_sm_open_session(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
	(void)pamh; (void)flags;
	return stub("open", argc, argv);
}

int pam_sm_close_session(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
	(void)pamh; (void)flags;
	return stub("close", argc, argv);
}

int pam_sm_chauthtok(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
	(void)pamh;
	return stub((flags & PAM_PRELIM_CHECK) ? "prelim" : "update", argc, argv);
}
