"""Where each intercepted call was made: its call site and the names of its two arguments.

A call's site is the user's line (``source.site_of``), or for a call made inside a library the
user's line that called into it, with the library function as ``via``; its arguments are named
by the expressions written there. Both are looked up once per call instruction and kept, so a
call in a loop costs one dictionary look-up.
"""

from __future__ import annotations

import types

import msgspec

from cossim_tui.agent import source
from cossim_tui.agent.call import Intercepted
from cossim_tui.protocol import CallSite


class CallSites:
    def __init__(self) -> None:
        self._sites: dict[source.SiteInfo, CallSite] = {}
        self._sites_through: dict[tuple[source.SiteInfo | None, str], CallSite] = {}
        """The user's call site of each library function called from it (``via``)."""
        self._places: dict[tuple[int, int, tuple[str, str]], tuple[types.CodeType, CallSite, tuple[str, str]]] = {}
        """The call site and argument names of each call instruction (code object id, offset),
        with the code object kept alive so that its id stays its own: one look-up per call."""

    def place(self, seen: Intercepted) -> tuple[CallSite, tuple[str, str]]:
        """The call site of an intercepted call, and the names of its two arguments there."""
        return self._at(seen.frame, seen.names) if seen.passage is None else self._through(seen)

    def _at(self, frame: types.FrameType | None, names: tuple[str, str]) -> tuple[CallSite, tuple[str, str]]:
        """The call site of ``frame``'s current instruction, and the names of its two arguments."""
        if frame is None:
            return self.call_site(None)[0], ("arg0", "arg1")
        code = frame.f_code
        key = (id(code), frame.f_lasti, names)
        known = self._places.get(key)
        if known is not None:
            return known[1], known[2]
        site, info = self.call_site(frame)
        exprs = source.argument_names(info, names) if info is not None else ("arg0", "arg1")
        if len(self._places) >= 4096:  # code made on the fly, call after call: start again
            self._places.clear()
        # The entry holds the code object, so its id cannot be reused while the entry exists.
        self._places[key] = (code, site, exprs)
        return site, exprs

    def _through(self, seen: Intercepted) -> tuple[CallSite, tuple[str, str]]:
        """The user's line that called into the library that made the call, with the library
        function as ``via``; the tensors named by the user's arguments where the library passed
        them through, else by the library's own expressions."""
        passage = seen.passage
        site, info = self.call_site(seen.frame)
        key = (info, passage.via)
        through = self._sites_through.get(key)
        if through is None:
            through = self._sites_through[key] = msgspec.structs.replace(site, via=passage.via)
        exprs = list(source.argument_names(source.site_of(passage.inner), seen.names))
        for index, argument in enumerate(passage.through):
            given = source.argument_given(info, argument) if argument is not None and info is not None else None
            exprs[index] = given or exprs[index]
        return through, (exprs[0], exprs[1])

    def call_site(self, frame: types.FrameType | None) -> tuple[CallSite, source.SiteInfo | None]:
        """The call site of ``frame``'s current line (``<unknown>`` without a frame), made once per
        site, and what ``source`` knows of it."""
        if frame is None:
            return CallSite("<unknown>", 0, "<unknown>", 0, [], 0, 0), None
        info = source.site_of(frame)
        site = self._sites.get(info)
        if site is None:
            first, lines = source.source_lines(frame.f_code.co_filename, info)
            site = self._sites[info] = CallSite(
                path=info.path,
                line=info.line,
                function=info.function,
                first_line=first,
                lines=lines,
                call_start=info.call_start,
                call_end=info.call_end,
            )
        return site, info
