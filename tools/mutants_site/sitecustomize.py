"""On the PYTHONPATH of the Python processes that tests start in `make mutants` (see ../mutants_pytest.py).

mutmut tells the mutated code which mutant is active through MUTANT_UNDER_TEST, and a child process
inherits it, so it runs the same mutant as the test that started it (its imports find the mutated copy,
which is on the same PYTHONPATH). In mutmut's "stats" run, which records the functions each test calls,
mutmut's own recorder would look for its configuration in the child's working folder and fail; here the
child records the functions it calls in the file MUTANTS_CHILD_HITS names instead, and the test's process
adds them to the test's functions (a test that resumes training in a new process judges the restore).
"""

import os

if os.environ.get("MUTANT_UNDER_TEST") == "stats":
    if hits_file := os.environ.get("MUTANTS_CHILD_HITS"):
        import atexit

        from mutmut.mutation import trampoline

        hits: set[str] = set()
        trampoline.record_trampoline_hit = lambda name, caller=None: hits.add(name)
        atexit.register(lambda: hits and open(hits_file, "a").write("".join(f"{name}\n" for name in hits)))
    else:
        os.environ["MUTANT_UNDER_TEST"] = ""
