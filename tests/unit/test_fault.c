/* Unit tests for fault: the N-th hit of the named point kills, nothing else. */
#include <sys/wait.h>

#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include <cmocka.h>

#include "sdps/fault.h"

/* Run fault_point(name) hits times in a child with SDPS_FAULT=spec; return
 * how many hits it survived (hits when it was not killed). */
static int
survived(const char *spec, const char *name, int hits)
{
	int	 p[2], status, n = 0;
	char	 c;
	pid_t	 pid;

	assert_int_equal(pipe(p), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(p[0]);
		if (spec != NULL)
			setenv("SDPS_FAULT", spec, 1);
		else
			unsetenv("SDPS_FAULT");
		for (int i = 0; i < hits; i++) {
			fault_point(name);
			if (write(p[1], "x", 1) != 1)
				_exit(2);
		}
		_exit(0);
	}
	close(p[1]);
	while (read(p[0], &c, 1) == 1)
		n++;
	close(p[0]);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	if (n < hits) {
		assert_true(WIFSIGNALED(status));
		assert_int_equal(WTERMSIG(status), SIGKILL);
	} else {
		assert_true(WIFEXITED(status));
	}
	return n;
}

static void
test_fault_points(void **state)
{
	(void)state;
	assert_int_equal(survived(NULL, "a", 5), 5);
	assert_int_equal(survived("", "a", 5), 5);
	assert_int_equal(survived("a", "a", 5), 0);
	assert_int_equal(survived("a:1", "a", 5), 0);
	assert_int_equal(survived("a:3", "a", 5), 2);
	assert_int_equal(survived("a:9", "a", 5), 5);
	assert_int_equal(survived("b:1", "a", 5), 5);
	assert_int_equal(survived("ab", "a", 5), 5);
	/* malformed specs arm nothing */
	assert_int_equal(survived("a:0", "a", 5), 5);
	assert_int_equal(survived("a:x", "a", 5), 5);
	assert_int_equal(survived(":2", "a", 5), 5);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fault_points),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
