"""One Lambda execution environment: the function's handler in this fresh process, fed one event at a time.

    python -S lambda_container.py ANSWERS_FD

Events arrive as JSON lines on stdin; each answer is written as a JSON line to the file
descriptor ANSWERS_FD: ``{"result": ...}``, or ``{"error": TYPE}`` when the handler raised
(Lambda reports a function error). ``_HANDLER`` names the handler as Lambda's runtime has
it; stdout and stderr are the function's log, as CloudWatch Logs would receive them.
"""
import importlib
import json
import os
import sys
import traceback
from types import SimpleNamespace


def main() -> None:
    answers = os.fdopen(int(sys.argv[1]), "w")
    module, _, function = os.environ["_HANDLER"].rpartition(".")
    handler = getattr(importlib.import_module(module), function)
    for number, line in enumerate(sys.stdin):
        context = SimpleNamespace(function_name=os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "ai-gateway"),
                                  aws_request_id=f"invocation-{number}", get_remaining_time_in_millis=lambda: 30_000)
        try:
            answer = {"result": handler(json.loads(line), context)}
        except Exception as exc:  # what the Lambda runtime does: log it, report a function error
            traceback.print_exc()
            answer = {"error": type(exc).__name__}
        answers.write(json.dumps(answer) + "\n")
        answers.flush()


if __name__ == "__main__":
    main()
