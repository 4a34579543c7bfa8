"""gateway.marshmallow_import: marshmallow's Email regexes wait for first use, and still validate."""
import re
import subprocess
import sys

import pytest
from marshmallow import ValidationError, validate

import gateway.marshmallow_import as lazy


def test_importing_the_gateway_compiles_no_email_regex():
    code = ("import gateway.wsgi, marshmallow.validate as v; "
            "print(v.Email.USER_REGEX._compiled is None, v.Email.DOMAIN_REGEX._compiled is None)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "True"]


def test_the_email_validator_still_accepts_and_refuses():
    email = validate.Email()
    assert email("shopper@example.com") == "shopper@example.com"
    assert email("shopper@bücher.de") == "shopper@bücher.de"
    with pytest.raises(ValidationError, match="Not a valid email address"):
        email("not an address")
    with pytest.raises(ValidationError):
        email("shopper@-example.com")


def test_re_compile_is_restored_for_everyone_else():
    assert re.compile is lazy._compile
    assert isinstance(re.compile("a+"), re.Pattern)


def test_a_lazy_pattern_compiles_once_and_hides_dunders():
    pattern = lazy.LazyPattern(r"\d+", re.ASCII)
    assert not hasattr(pattern, "__isabstractmethod__")
    assert pattern._compiled is None
    assert pattern.match("42").group() == "42"
    compiled = pattern._compiled
    assert pattern.fullmatch("7") and pattern._compiled is compiled
