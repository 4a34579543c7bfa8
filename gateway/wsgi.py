"""The module servers (gunicorn) and Zappa import: ``gateway.wsgi:app``."""
from gateway.app import create_app

app = create_app()
