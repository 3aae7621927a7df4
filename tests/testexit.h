/* testexit.h - how a cmocka test program ends: main returns
 * testexit (cmocka_run_group_tests (...)).
 *
 * A failed assertion leaves its test by longjmp, past the test's own frees. LeakSanitizer's report
 * of those, printed at exit, then follows the failure's message in the output, often longer than
 * all of it, and CI shows a log's end: the failure was buried (issue 10's twenty-seventh pass).
 * A program with a failed test ends with _exit, which skips the leak check (it runs from atexit);
 * a passing program ends normally, and a leak there still fails it. */
#ifndef FERRULE_TESTEXIT_H
#define FERRULE_TESTEXIT_H
#include <stdio.h>
#include <unistd.h>

static inline int
testexit (int failed)
{
    if (failed == 0)
        return 0;
    fflush (NULL);
    _exit (failed > 0 && failed < 64 ? failed : 1);
}

#endif
