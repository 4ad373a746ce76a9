"""The lifecycle tables: illegal events are refused by name, and the docs are drawn from them."""

from pathlib import Path

import pytest

from brasil.lifecycle import step
from brasil.ninep.errors import NinepError
from brasil.node import lifecycle


def test_an_illegal_event_names_the_state_and_what_is_possible():
    with pytest.raises(NinepError, match=r"session 3 is closed: cannot exec now"):
        step(lifecycle.SESSION, "closed", "exec", "session 3")
    with pytest.raises(NinepError, match=r"cannot finish now \(possible: close, exec, exec_ranks, grow, release\)"):
        step(lifecycle.SESSION, "reserved", "finish", "session 3")
    assert step(lifecycle.SESSION, "done", "exec", "session 3") == "running"


def test_the_lifecycle_document_is_generated_from_the_tables():
    doc = Path(__file__).parent.parent / "docs" / "lifecycles.md"
    assert doc.read_text() == lifecycle.document(), \
        "docs/lifecycles.md is stale: python -m brasil.node.lifecycle > docs/lifecycles.md"


def test_a_reservation_in_flight_has_a_state_and_ends_in_reserved_or_back_in_new():
    """``res`` moves new → reserving while it waits for slots, then granted → reserved or
    refused → new (no state set by hand); exec and a second res are refused meanwhile."""
    assert step(lifecycle.SESSION, "new", "reserve", "session 3") == "reserving"
    assert step(lifecycle.SESSION, "reserving", "granted", "session 3") == "reserved"
    assert step(lifecycle.SESSION, "reserving", "refused", "session 3") == "new"
    assert step(lifecycle.SESSION, "reserving", "close", "session 3") == "closed"
    for event in ("exec", "reserve", "finish"):
        with pytest.raises(NinepError, match=f"session 3 is reserving: cannot {event} now"):
            step(lifecycle.SESSION, "reserving", event, "session 3")
