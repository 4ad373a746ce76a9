"""Turn exceptions into one-line messages that say what went wrong and what to do."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from ..ninep.auth import SecretError
from ..ninep.errors import NinepError, ProtocolError
from ..ninep.private import UnsafePathError
from ..ninep.transport import AddressError


class UsageError(Exception):
    """The command line itself is wrong; the message says how to write it."""


def run(prog: str, main: Callable[[], Coroutine[Any, Any, int | None]]) -> int:
    """Run an async command, mapping known failures to ``prog: message`` and exit status 1."""
    try:
        return asyncio.run(main()) or 0
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except (UsageError, SecretError, UnsafePathError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    except NinepError as e:
        print(f"{prog}: {e.message}", file=sys.stderr)
        return 1
    except (ConnectionError, AddressError, ProtocolError, OSError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 1
