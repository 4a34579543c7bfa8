"""gateway.limits_import: ``limits`` loads without its asyncio half, which still works when used."""
import subprocess
import sys


def run(code: str) -> list[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()


def test_importing_the_gateway_executes_no_asyncio_code_of_limits():
    code = ("import sys, gateway.wsgi, limits; "
            "print('limits.aio.storage' in sys.modules, 'asyncio' in sys.modules, 'aio' in vars(limits))")
    assert run(code) == ["False", "False", "True"]


def test_limits_aio_still_works_on_first_use():
    code = ("import asyncio, gateway, limits; "
            "from limits.aio.strategies import FixedWindowRateLimiter; "
            "from limits.aio.storage import MemoryStorage; "
            "limiter = FixedWindowRateLimiter(MemoryStorage()); item = limits.parse('2/minute'); "
            "print([asyncio.run(limiter.hit(item, 'k')) for _ in range(3)], "
            "limits.aio.storage.MemoryStorage is MemoryStorage)")
    assert run(code) == ["[True,", "True,", "False]", "True"]
