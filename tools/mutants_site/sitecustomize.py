"""On the PYTHONPATH of the Python processes that tests start in `make mutants` (see ../mutants_pytest.py).

mutmut tells the mutated code which mutant is active through MUTANT_UNDER_TEST, and a child process
inherits it, so it runs the same mutant as the test that started it (its imports find the mutated copy,
which is on the same PYTHONPATH). One value must not reach a child: "stats", mutmut's mode for recording
which tests call which function, which makes the child look for mutmut's configuration in its own
working folder and fail. There the child runs the original code.
"""

import os

if os.environ.get("MUTANT_UNDER_TEST") == "stats":
    os.environ["MUTANT_UNDER_TEST"] = ""
