"""The parent link's lifecycle table (tree/link_lifecycle.py): its page is generated from it,
and the link refuses what the table does not draw."""

from __future__ import annotations

from pathlib import Path

import pytest

from brasil.lifecycle import step
from brasil.ninep.errors import NinepError
from brasil.tree import link_lifecycle

DOC = Path(__file__).parent.parent / "docs" / "tree-lifecycles.md"


def test_the_tree_lifecycle_document_is_generated_from_the_table():
    assert DOC.read_text() == link_lifecycle.document(), \
        "docs/tree-lifecycles.md is stale: python -m brasil.tree.link_lifecycle > " \
        "docs/tree-lifecycles.md"


def test_a_link_dials_joins_loses_and_rehomes_along_the_table():
    s = "idle"
    for event in ("start", "dialed", "joined", "lost", "rehome", "fail", "back_off", "retry",
                  "fail", "next", "stop"):
        s = step(link_lifecycle.LINK, s, event, "the link")
    assert s == "stopped"


def test_a_link_cannot_be_lost_before_it_joined():
    with pytest.raises(NinepError, match="dialing: cannot lost"):
        step(link_lifecycle.LINK, "dialing", "lost", "the link")
