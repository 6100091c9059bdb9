/*
 * stackhost: runs many PAM transactions, one per input line, for the stack
 * engine's differential tests (tests/stack/test_differential.py).
 *
 * Input lines (stdin):  CONFDIR ETCDIR USRDIR SERVICE CALL...
 *   CONFDIR  "-" or a directory for pam_start_confdir
 *   ETCDIR   "-" or a directory bind-mounted onto /etc/pam.d for this line
 *   USRDIR   "-" or a directory bind-mounted onto /usr/lib/pam.d for this line
 *   CALL     auth setcred acct open close chauthtok
 * Output lines (stdout): START_RC CALL_RC...  (calls stop after a failed pam_start),
 *   or "CRASH SIGNAL" / "HANG" when libpam crashed or did not return in 5 s.
 *
 * Each line runs in a forked child with its own mount namespace (so a crash or a
 * hang in libpam costs one line, and its bind mounts vanish with it). Run the host as
 * `unshare -m --propagation private stackhost OUTER_NS`, OUTER_NS being the inode of
 * the caller's /proc/self/ns/mnt: it refuses to mount while still in that namespace
 * (the machine's own /etc/pam.d must never change).
 *
 * Build: gcc -O2 -Wall -Wextra -o build/stackhost tests/stack/stackhost.c -lpam
 */
#define _GNU_SOURCE
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <security/pam_appl.h>

#define LINE_SECONDS 5

static unsigned long long g_outer_namespace;

static int no_conversation(int n, const struct pam_message **msg,
			   struct pam_response **resp, void *data)
{
	(void)n; (void)msg; (void)resp; (void)data;
	return PAM_CONV_ERR;
}

static int own_mount_namespace(void)
{
	struct stat mine;

	if (g_outer_namespace == 0 || stat("/proc/self/ns/mnt", &mine) != 0)
		return 0;
	return (unsigned long long)mine.st_ino != g_outer_namespace;
}

static int bind(const char *source, const char *target)
{
	if (strcmp(source, "-") == 0)
		return 0;
	if (!own_mount_namespace()) {
		fprintf(stderr, "stackhost: refusing to mount outside a private mount namespace\n");
		return -1;
	}
	if (mount(source, target, NULL, MS_BIND, NULL) != 0) {
		perror("stackhost: bind mount");
		return -1;
	}
	return 0;
}

static int call(pam_handle_t *pamh, const char *name)
{
	if (strcmp(name, "auth") == 0)
		return pam_authenticate(pamh, 0);
	if (strcmp(name, "setcred") == 0)
		return pam_setcred(pamh, PAM_ESTABLISH_CRED);
	if (strcmp(name, "acct") == 0)
		return pam_acct_mgmt(pamh, 0);
	if (strcmp(name, "open") == 0)
		return pam_open_session(pamh, 0);
	if (strcmp(name, "close") == 0)
		return pam_close_session(pamh, 0);
	if (strcmp(name, "chauthtok") == 0)
		return pam_chauthtok(pamh, 0);
	return -1000;
}

/* The child: one transaction, its whole result written at once at the end. */
static void run_line(char *line)
{
	const struct pam_conv conv = { no_conversation, NULL };
	char *save = NULL, out[4096], *name;
	char *confdir = strtok_r(line, " \n", &save);
	char *etcdir = strtok_r(NULL, " \n", &save);
	char *usrdir = strtok_r(NULL, " \n", &save);
	char *service = strtok_r(NULL, " \n", &save);
	pam_handle_t *pamh = NULL;
	size_t len;
	int rc;

	if (service == NULL) {
		fprintf(stderr, "stackhost: bad input line\n");
		_exit(2);
	}
	if (unshare(CLONE_NEWNS) != 0 || bind(etcdir, "/etc/pam.d") != 0 ||
	    bind(usrdir, "/usr/lib/pam.d") != 0)
		_exit(3);
	if (strcmp(confdir, "-") == 0)
		rc = pam_start(service, "root", &conv, &pamh);
	else
		rc = pam_start_confdir(service, "root", &conv, confdir, &pamh);
	len = (size_t)snprintf(out, sizeof(out), "%d", rc);
	if (rc == PAM_SUCCESS) {
		while ((name = strtok_r(NULL, " \n", &save)) != NULL && len < sizeof(out) - 16)
			len += (size_t)snprintf(out + len, sizeof(out) - len, " %d", call(pamh, name));
		pam_end(pamh, PAM_SUCCESS);
	}
	out[len++] = '\n';
	if (write(STDOUT_FILENO, out, len) != (ssize_t)len)
		_exit(4);
	_exit(0);
}

int main(int argc, char **argv)
{
	static char line[65536];

	if (argc > 1)
		g_outer_namespace = strtoull(argv[1], NULL, 10);
	setvbuf(stdout, NULL, _IONBF, 0);
	while (fgets(line, sizeof(line), stdin) != NULL) {
		struct timespec start, now;
		int status = 0;
		pid_t pid = fork(), done = 0;

		if (pid < 0)
			return 1;
		if (pid == 0)
			run_line(line);
		clock_gettime(CLOCK_MONOTONIC, &start);
		while ((done = waitpid(pid, &status, WNOHANG)) == 0) {
			clock_gettime(CLOCK_MONOTONIC, &now);
			if (now.tv_sec - start.tv_sec >= LINE_SECONDS) {
				kill(pid, SIGKILL);
				waitpid(pid, &status, 0);
				printf("HANG\n");
				break;
			}
			usleep(200);
		}
		if (done == pid && WIFSIGNALED(status))
			printf("CRASH %d\n", WTERMSIG(status));
		else if (done == pid && WEXITSTATUS(status) != 0)
			return WEXITSTATUS(status);
	}
	return 0;
}
