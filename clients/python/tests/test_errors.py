"""The exception table mirrors common/result.c, the one table of wire error codes."""
from __future__ import annotations

import re

import pytest

import ferrule
from ferrule.errors import ERRORS, FerruleError, error_from_reply

from conftest import REPO


def c_table() -> dict[str, int]:
    """{code: exit status} from result_table in common/result.c."""
    text = (REPO / "common/result.c").read_text()
    body = text[text.index("result_table"):]
    body = body[:body.index("};")]
    rows = re.findall(r'\[FR_[A-Z_]+\]\s*=\s*\{\s*"([a-z_]+)"\s*,\s*(\d+)\s*,', body)
    assert len(rows) >= 20, "could not read result_table from common/result.c"
    return {code: int(exit_code) for code, exit_code in rows if code != "ok"}


def test_every_c_code_has_its_exception():
    table = c_table()
    missing = sorted(set(table) - set(ERRORS))
    extra = sorted(set(ERRORS) - set(table))
    assert not missing, f"codes in common/result.c without an exception in ferrule/errors.py: {missing}"
    assert not extra, f"exceptions in ferrule/errors.py for codes common/result.c does not have: {extra}"


def test_exit_status_and_category_match_the_c_table():
    for code, exit_code in c_table().items():
        cls = ERRORS[code]
        assert cls.code == code
        assert cls.exit_code == exit_code, f"{cls.__name__}: exit {cls.exit_code}, C says {exit_code}"
        category = {2: ferrule.RequestError, 3: ferrule.NotFound, 4: ferrule.UserActionRequired,
                    5: ferrule.TransientError, 6: ferrule.ConfigurationError,
                    7: ferrule.AccessRefused, 1: ferrule.InternalError}[exit_code]
        assert issubclass(cls, category), f"{cls.__name__} is not a {category.__name__}"


def test_the_protocol_document_lists_the_same_codes():
    text = (REPO / "docs/protocol.md").read_text()
    section = text[text.index("| code | meaning | ferrulectl exit |"):]
    section = section[:section.index("\n\n")]
    documented = dict((c, int(e)) for c, e in re.findall(r"^\| `([a-z_]+)` \|.*\| (\d+) \|$", section, re.M))
    assert documented == c_table()


def test_the_readme_lists_every_class_and_every_retried_operation():
    # its error table left out BrowserMismatch, and its retry list events and webhooks
    readme = (REPO / "clients/python/README.md").read_text()
    table = readme[readme.index("| category | classes |"):]
    table = table[:table.index("\n\n")]
    for cls in ERRORS.values():
        assert f"`{cls.__name__}`" in table, f"the README's error table does not list {cls.__name__}"
    retries = readme[readme.index("**Retries**"):]
    retries = retries[:retries.index("are retried")]
    from ferrule.client import IDEMPOTENT
    for op in sorted(IDEMPOTENT):
        assert f"`{op}`" in retries, f"the README's retry list does not name {op}"


def test_every_class_is_exported_by_name():
    for cls in ERRORS.values():
        assert getattr(ferrule, cls.__name__) is cls


@pytest.mark.parametrize("code", sorted(ERRORS))
def test_reply_maps_to_its_exception(code):
    reply = {"rid": "r1", "ok": False,
             "error": {"code": code, "message": "m", "hint": "h", "retry_after": 7,
                       "detail": {"provider": "fakebox"}}}
    e = error_from_reply(reply)
    assert type(e) is ERRORS[code]
    assert (e.code, e.message, e.hint, e.retry_after, e.rid) == (code, "m", "h", 7, "r1")
    assert e.detail == {"provider": "fakebox"}
    assert e.reply == reply
    assert str(e) == f"{code}: m (hint: h)"


def test_unknown_code_from_a_newer_service_is_still_an_error():
    e = error_from_reply({"ok": False, "error": {"code": "brand_new", "message": "m"}})
    assert type(e) is FerruleError and e.code == "brand_new" and e.retry_after is None


def test_reply_without_an_error_map_is_internal():
    e = error_from_reply({"ok": False})
    assert type(e) is ferrule.Internal and e.message


@pytest.mark.parametrize("bad", [-1, "3", True, 1.5])
def test_retry_after_only_when_a_whole_number(bad):
    e = error_from_reply({"ok": False, "error": {"code": "provider_unavailable", "message": "m", "retry_after": bad}})
    assert isinstance(e, ferrule.ProviderUnavailable) and e.retry_after is None


def test_an_error_keeps_no_secret_of_its_reply_or_detail():
    # a dashboard link's token and a rejected access token are secrets too, and the error's
    # "detail" map was kept as the service sent it
    reply = {"ok": False, "link_token": "lt-SECRET", "reject": "at-SECRET",
             "error": {"code": "internal", "message": "m", "hint": "h",
                       "detail": {"access_token": "at-SECRET", "step": "x"}}}
    e = error_from_reply(reply)
    assert "SECRET" not in repr(e.reply) and "SECRET" not in repr(e.detail)
    assert e.reply["link_token"] == "(hidden)" and e.detail == {"access_token": "(hidden)", "step": "x"}
