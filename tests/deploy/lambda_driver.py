"""Feed API Gateway events to Zappa's real Lambda handler in this fresh process, as the Lambda runtime would.

    python lambda_driver.py SETTINGS_DIR EVENTS_FILE ANSWERS_FILE

SETTINGS_DIR holds the ``zappa_settings.py`` that ``zappa save-python-settings-file``
wrote (and, for the hello-world baseline, its app module); the environment is the
stage's Lambda environment; ``_HANDLER`` names the function's handler as Lambda's runtime
has it (Zappa's own when unset). Writes the handler's answers, and the wall-clock and CPU
seconds to the first answer (import of the handler and the app, and the first request:
what a cold start costs), to ANSWERS_FILE; the handler prints to stdout.
"""
import time

STARTED = time.perf_counter()

import importlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from types import SimpleNamespace  # noqa: E402


def main() -> None:
    settings_dir, events_file, answers_file = sys.argv[1:4]
    sys.path.insert(0, settings_dir)
    with open(events_file) as file:
        events = json.load(file)
    module, _, function = os.environ.get("_HANDLER", "zappa.handler.lambda_handler").rpartition(".")
    lambda_handler = getattr(importlib.import_module(module), function)

    context = SimpleNamespace(function_name="ai-gateway", aws_request_id="request-1",
                              get_remaining_time_in_millis=lambda: 30_000)
    answers = [lambda_handler(events[0], context)]
    first_answer = time.perf_counter() - STARTED
    cpu_first_answer = time.process_time()  # CPU since the process began, interpreter start-up included
    answers += [lambda_handler(event, context) for event in events[1:]]
    with open(answers_file, "w") as file:
        json.dump({"answers": answers, "seconds_to_first_answer": first_answer,
                   "cpu_seconds_to_first_answer": cpu_first_answer}, file)


if __name__ == "__main__":
    main()
