"""Run API Gateway events through Zappa's real Lambda handler, in a fresh process, as Lambda would.

    python lambda_driver.py SETTINGS_DIR ANSWERS_FILE < events.json

SETTINGS_DIR holds the ``zappa_settings.py`` that ``zappa save-python-settings-file``
wrote; the environment is the stage's ``aws_environment_variables``. The first event
makes the handler import the app; then a key is created in the app's store and
``{KEY}`` in later events' headers is replaced by it. Writes each handler answer,
then the request-log records of the key's user, to ANSWERS_FILE (the handler prints
to stdout itself).
"""
import json
import sys
from types import SimpleNamespace


def main() -> None:
    sys.path.insert(0, sys.argv[1])
    events = json.load(sys.stdin)
    from zappa.handler import lambda_handler

    context = SimpleNamespace(function_name="ai-gateway-dev", aws_request_id="test-request",
                              get_remaining_time_in_millis=lambda: 30_000)
    answers = [lambda_handler(events[0], context)]

    from plugins.apikey import create_key

    app = sys.modules["gateway.wsgi"].app  # the app the handler imported (APP_MODULE)
    gateway = app.extensions["gateway"]
    key, _ = create_key(gateway, "lambda-user", "free", ["completions"])
    for event in events[1:]:
        text = json.dumps(event).replace("{KEY}", key)
        answers.append(lambda_handler(json.loads(text), context))
    records = [{"model": r.model, "status": r.status, "tokens": r.tokens}
               for r in gateway.store.records_for_user("lambda-user")]
    with open(sys.argv[2], "w") as out:
        json.dump({"answers": answers, "records": records}, out)


if __name__ == "__main__":
    main()
